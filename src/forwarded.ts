import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { parseIp, type CidrSet } from './client-ip.js';

/**
 * The forwarding headers this proxy sends upstream for one request. `undefined` means the header
 * is not sent at all (removed from what the client sent).
 */
export interface ForwardedFields {
  'x-forwarded-for': string | undefined;
  'x-forwarded-host': string | undefined;
  'x-forwarded-proto': string;
  'x-forwarded-port': string;
  /** RFC 7239 `Forwarded`: distribution prefers it to `X-Forwarded-Host/-Proto` for upload `Location`s. */
  forwarded: string | undefined;
  /** nginx's `real_ip_header X-Real-IP` allow-lists by it just as by `X-Forwarded-For`. */
  'x-real-ip': string | undefined;
}

/** The names of {@link ForwardedFields}, in one fixed order (no `Object.keys` per request). */
export const FORWARDED_HEADER_NAMES = ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'forwarded', 'x-real-ip'] as const;

/** Builds {@link ForwardedFields} for a request (see {@link createForwardedHeaders}). */
export type ForwardedHeaders = (req: IncomingMessage) => ForwardedFields;

/**
 * The authority the client asked for: `Host` in HTTP/1.1, the `:authority` pseudo-header in
 * HTTP/2 (where clients such as curl and Go send no `Host`). HTTP/2 requires the two to agree
 * when both are sent, and `:authority` is what the connection was opened for, so it wins.
 */
export function requestHost(req: IncomingMessage): string | undefined {
  const authority = req.headers[':authority'];
  return typeof authority === 'string' && authority !== '' ? authority : req.headers.host;
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

function hostPort(host: string | undefined): string | undefined {
  if (host === undefined) return undefined;
  const bracket = host.lastIndexOf(']');
  const colon = host.lastIndexOf(':');
  return colon > bracket && colon < host.length - 1 ? host.slice(colon + 1) : undefined;
}

/**
 * Upstreams allow-list and build absolute `Location`s from these headers (nginx `real_ip_header`
 * + `allow`, distribution's upload URLs), so a client must not be able to write them: whatever a
 * client sends is replaced, and only a peer in `trusted` (a proxy in front of this one) may pass
 * its values on.
 *
 * - `X-Forwarded-For`: the socket peer is always appended; the incoming list is kept only from a
 *   trusted peer.
 * - `X-Forwarded-Host/-Proto/-Port`: from a trusted peer as sent (each one missing is filled in);
 *   otherwise this request's own `Host`, scheme and port, so upload `Location`s point at this proxy.
 * - `Forwarded` is kept only from a trusted peer; `X-Real-IP` from others becomes the peer address.
 */
export function createForwardedHeaders(trusted: CidrSet): ForwardedHeaders {
  return (req) => {
    const h: IncomingHttpHeaders = req.headers;
    const peerText = req.socket?.remoteAddress;
    const peerIp = peerText ? parseIp(peerText) : undefined;
    // IPv4-mapped IPv6 (`::ffff:127.0.0.1`) is written as the IPv4 address, as nginx would see it.
    const peer = peerIp ? peerIp.toString() : peerText;
    const fromTrusted = trusted.size > 0 && trusted.has(peerIp);
    const encrypted = (req.socket as TLSSocket | undefined)?.encrypted === true;
    const host = requestHost(req);
    const incomingFor = fromTrusted ? single(h['x-forwarded-for']) : undefined;
    return {
      'x-forwarded-for': incomingFor ? (peer ? `${incomingFor}, ${peer}` : incomingFor) : peer,
      'x-forwarded-host': (fromTrusted ? single(h['x-forwarded-host']) : undefined) ?? host,
      'x-forwarded-proto': (fromTrusted ? single(h['x-forwarded-proto']) : undefined) ?? (encrypted ? 'https' : 'http'),
      'x-forwarded-port': (fromTrusted ? single(h['x-forwarded-port']) : undefined) ?? hostPort(host) ?? (encrypted ? '443' : '80'),
      forwarded: fromTrusted ? single(h.forwarded) : undefined,
      'x-real-ip': fromTrusted ? single(h['x-real-ip']) : peer,
    };
  };
}

/** Writes {@link ForwardedFields} into a header object, removing the ones that are `undefined`. */
export function applyForwardedFields(headers: Record<string, unknown>, fields: ForwardedFields): void {
  for (const name of FORWARDED_HEADER_NAMES) {
    const value = fields[name];
    if (value === undefined) delete headers[name];
    else headers[name] = value;
  }
}
