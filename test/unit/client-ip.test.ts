import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { createClientIpResolver, parseCidrList, parseIp } from '../../src/client-ip.js';

function req(remoteAddress: string | undefined, xff?: string | string[]): IncomingMessage {
  return { socket: { remoteAddress }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } } as unknown as IncomingMessage;
}

describe('parseIp', () => {
  it.each([
    ['10.1.2.3', '10.1.2.3'],
    ['::ffff:10.1.2.3', '10.1.2.3'],
    ['2001:db8::1', '2001:db8::1'],
    ['::1', '::1'],
  ])('%s -> %s', (text, normalized) => {
    expect(parseIp(text)?.toString()).toBe(normalized);
  });

  it.each(['1.2.3', '010.1.1.1', '0x7f.0.0.1', '1.2.3.4.5', 'fe80::1%eth0', 'localhost', '', 'unknown', '256.1.1.1'])('rejects %j', (text) => {
    expect(parseIp(text)).toBeUndefined();
  });
});

describe('parseCidrList', () => {
  const set = parseCidrList(['10.0.0.0/8', '192.168.1.7', '2001:db8::/32', '172.16.0.0/12'], 'networks');
  it.each([
    ['10.255.0.1', true],
    ['11.0.0.1', false],
    ['192.168.1.7', true],
    ['192.168.1.8', false],
    ['172.31.255.255', true],
    ['172.32.0.0', false],
    ['::ffff:10.0.0.1', true],
    ['2001:db8:ffff::1', true],
    ['2001:db9::1', false],
  ])('%s in the set: %s', (ip, expected) => {
    expect(set.has(parseIp(ip))).toBe(expected);
  });

  it('0.0.0.0/0 and ::/0 match everything of their family', () => {
    const all = parseCidrList(['0.0.0.0/0'], 'x');
    expect(all.has(parseIp('203.0.113.9'))).toBe(true);
    expect(all.has(parseIp('2001:db8::1'))).toBe(false);
    expect(parseCidrList(['::/0'], 'x').has(parseIp('2001:db8::1'))).toBe(true);
  });

  it.each([
    [['10.0.0.0/33'], /networks\[0\]: "10\.0\.0\.0\/33" has a prefix length outside 0-32/],
    [['10.0.0.0/8', 'ten/8'], /networks\[1\]: "ten\/8" is not an IP address or CIDR; write a CIDR such as/],
    [['2001:db8::/129'], /networks\[0\]: .* outside 0-128/],
    [['10.0.0.0/'], /networks\[0\]: .*prefix length/],
  ])('rejects %j naming the entry', (list, message) => {
    expect(() => parseCidrList(list, 'networks')).toThrow(message);
  });
});

describe('createClientIpResolver (trusted proxies, right-most untrusted hop)', () => {
  const resolve = createClientIpResolver(['127.0.0.1/32', '10.0.0.0/8']);
  it.each<[string, string | undefined, string | string[] | undefined, string]>([
    ['untrusted peer: header ignored', '203.0.113.5', '10.9.9.9', '203.0.113.5'],
    ['untrusted peer on a dual-stack socket: header ignored', '::ffff:203.0.113.5', '10.9.9.9', '203.0.113.5'],
    ['trusted peer, one hop', '127.0.0.1', '198.51.100.7', '198.51.100.7'],
    ['trusted peer, spoofed left-most entries are not read', '127.0.0.1', '10.1.1.1, 8.8.8.8, 198.51.100.7', '198.51.100.7'],
    ['trusted chain is skipped from the right', '127.0.0.1', '198.51.100.7, 10.2.2.2, 10.3.3.3', '198.51.100.7'],
    ['all hops trusted: left-most', '127.0.0.1', '10.2.2.2, 10.3.3.3', '10.2.2.2'],
    ['malformed hop stops the walk at the last trusted one', '127.0.0.1', '198.51.100.7, garbage, 10.3.3.3', '10.3.3.3'],
    ['empty header: peer', '127.0.0.1', '', '127.0.0.1'],
    ['no header: peer', '127.0.0.1', undefined, '127.0.0.1'],
    ['ports and brackets are stripped', '127.0.0.1', '[2001:db8::7]:443, 198.51.100.7:5000', '198.51.100.7'],
    ['bracketed IPv6 client', '127.0.0.1', '[2001:db8::7]:443', '2001:db8::7'],
    ['bare IPv6 client', '127.0.0.1', '2001:db8::7', '2001:db8::7'],
    ['several header lines form one list', '127.0.0.1', ['8.8.8.8', '198.51.100.7, 10.3.3.3'], '198.51.100.7'],
    ['unknown peer (unix socket)', undefined, '198.51.100.7', ''],
  ])('%s', (_why, peer, xff, expected) => {
    expect(resolve(req(peer, xff)).text).toBe(expected);
  });

  it('without trusted proxies the header is never read', () => {
    const none = createClientIpResolver([]);
    expect(none(req('127.0.0.1', '10.0.0.1')).text).toBe('127.0.0.1');
  });

  it('rejects a bad trustedProxies entry at construction', () => {
    expect(() => createClientIpResolver(['127.0.0.1/32', 'proxy.local'])).toThrow(/trustedProxies\[1\]: "proxy\.local" is not an IP address/);
  });
});
