import type { IncomingMessage } from 'node:http';
import ipaddr from 'ipaddr.js';
import { RegistryRedirectError } from './errors.js';

/** A parsed IP address (IPv4-mapped IPv6 addresses are unwrapped to IPv4). */
export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;

/**
 * Parses one IP address the strict way: IPv4 only in dotted four-part decimal (no `1.2.3`, no
 * octal or hex parts, which some parsers accept and others read differently), IPv6 in any RFC 4291
 * form without a zone. `::ffff:a.b.c.d` becomes the IPv4 address `a.b.c.d`, so one CIDR list
 * matches a client whether it reached a dual-stack socket or an IPv4 one.
 */
export function parseIp(text: string): IpAddress | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text);
  if (text.includes(':') && !text.includes('%') && ipaddr.IPv6.isValid(text)) {
    const v6 = ipaddr.IPv6.parse(text);
    return v6.isIPv4MappedAddress() ? v6.toIPv4Address() : v6;
  }
  return undefined;
}

/**
 * Strips what proxies put around an address in `X-Forwarded-For`: surrounding spaces, a port
 * (`1.2.3.4:5678`, `[2001:db8::1]:443`), brackets. Returns the bare address text.
 */
function stripHop(hop: string): string {
  const t = hop.trim();
  if (t.startsWith('[')) {
    const end = t.indexOf(']');
    return end > 0 ? t.slice(1, end) : t;
  }
  const colon = t.indexOf(':');
  // One colon: IPv4 with a port. More than one: an IPv6 address without brackets.
  if (colon > 0 && t.indexOf(':', colon + 1) < 0) return t.slice(0, colon);
  return t;
}

/** A precompiled CIDR list; `has()` is a few integer comparisons per entry, no parsing. */
export interface CidrSet {
  /** Number of ranges. */
  readonly size: number;
  has(address: IpAddress | undefined): boolean;
}

/**
 * Parses a list of CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses (`127.0.0.1`, taken
 * as /32 or /128) once, at construction. `key` names the option in error messages, e.g.
 * `trustedProxies` -> `trustedProxies[2]: ...`.
 */
export function parseCidrList(list: readonly string[], key: string): CidrSet {
  if (!Array.isArray(list)) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: write a list of CIDRs, e.g. ["10.0.0.0/8", "2001:db8::/32"]`);
  }
  const v4: Array<[ipaddr.IPv4, number]> = [];
  const v6: Array<[ipaddr.IPv6, number]> = [];
  list.forEach((entry, i) => {
    const fail = (why: string): never => {
      throw new RegistryRedirectError('CONFIG_INVALID', `${key}[${i}]: ${JSON.stringify(entry)} ${why}; write a CIDR such as "10.0.0.0/8", "192.168.1.7/32" or "2001:db8::/32"`);
    };
    if (typeof entry !== 'string') fail('is not a string');
    const slash = entry.indexOf('/');
    const addressText = (slash < 0 ? entry : entry.slice(0, slash)).trim();
    const address = parseIp(addressText) ?? fail('is not an IP address or CIDR');
    const max = address.kind() === 'ipv4' ? 32 : 128;
    let bits = max;
    if (slash >= 0) {
      const bitsText = entry.slice(slash + 1).trim();
      bits = /^\d{1,3}$/.test(bitsText) ? Number(bitsText) : NaN;
      if (!(bits >= 0 && bits <= max)) fail(`has a prefix length outside 0-${max}`);
    }
    if (address.kind() === 'ipv4') v4.push([address as ipaddr.IPv4, bits]);
    else v6.push([address as ipaddr.IPv6, bits]);
  });
  // IPv4 ranges as (network, mask) integers: the hot path compares numbers only.
  const v4Ranges = v4.map(([addr, bits]) => {
    const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
    return [(toUint32(addr) & mask) >>> 0, mask] as const;
  });
  return {
    size: list.length,
    has(address) {
      if (!address) return false;
      if (address.kind() === 'ipv4') {
        const n = toUint32(address as ipaddr.IPv4);
        for (const [net, mask] of v4Ranges) if (((n & mask) >>> 0) === net) return true;
        return false;
      }
      for (const range of v6) if ((address as ipaddr.IPv6).match(range)) return true;
      return false;
    },
  };
}

function toUint32(address: ipaddr.IPv4): number {
  const [a = 0, b = 0, c = 0, d = 0] = address.octets;
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

/** The client of one request as far as this server can tell. */
export interface ClientAddress {
  /** Normalized address text (`10.1.2.3`, `2001:db8::1`), or `''` when unknown (e.g. a Unix socket). */
  readonly text: string;
  /** Parsed address; `undefined` when unknown. */
  readonly address: IpAddress | undefined;
}

const UNKNOWN: ClientAddress = { text: '', address: undefined };

/** Resolves the client address of a request. */
export type ClientIpResolver = (req: IncomingMessage) => ClientAddress;

/**
 * Builds the client-address resolver. The socket's peer is the client unless the peer is one of
 * `trustedProxies`; then `X-Forwarded-For` is read from the right: each trusted hop is skipped and
 * the first untrusted one is the client. Entries left of it are whatever the client wrote, so they
 * are never looked at: a client cannot choose its own address by sending the header. A malformed
 * entry stops the walk (the last trusted hop is then the client). With no trusted proxies the
 * header is ignored entirely.
 */
export function createClientIpResolver(trustedProxies: readonly string[] = []): ClientIpResolver {
  const trusted = parseCidrList(trustedProxies, 'trustedProxies');
  return (req) => {
    const peerText = req.socket?.remoteAddress;
    const peer = peerText ? parseIp(peerText) : undefined;
    if (!peer) return UNKNOWN;
    let client: ClientAddress = { text: peer.toString(), address: peer };
    if (trusted.size === 0 || !trusted.has(peer)) return client;
    const header = req.headers['x-forwarded-for'];
    if (header === undefined) return client;
    // Several X-Forwarded-For lines are one list in order (RFC 9110 field combination).
    const hops = (Array.isArray(header) ? header.join(',') : header).split(',');
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = parseIp(stripHop(hops[i]!));
      if (!hop) return client;
      client = { text: hop.toString(), address: hop };
      if (!trusted.has(hop)) return client;
    }
    return client;
  };
}
