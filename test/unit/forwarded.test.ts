import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { parseCidrList } from '../../src/client-ip.js';
import { applyForwardedFields, createForwardedHeaders, requestHost } from '../../src/forwarded.js';

const req = (remoteAddress: string | undefined, headers: Record<string, string | string[]>, encrypted = false) =>
  ({ socket: { remoteAddress, encrypted }, headers }) as unknown as IncomingMessage;

describe('createForwardedHeaders: the proxy writes the forwarding headers itself', () => {
  const untrusting = createForwardedHeaders(parseCidrList([], 'trustedProxies'));
  const trusting = createForwardedHeaders(parseCidrList(['10.0.0.0/8'], 'trustedProxies'));
  const spoofed = {
    host: 'proxy.example:8080',
    'x-forwarded-for': '10.1.2.3',
    'x-forwarded-host': 'evil.example',
    'x-forwarded-proto': 'https',
    'x-forwarded-port': '443',
    forwarded: 'for=10.1.2.3;host=evil.example',
    'x-real-ip': '10.1.2.3',
  };

  it('from an untrusted peer: only the peer, and this request\'s own host, scheme and port', () => {
    expect(untrusting(req('::ffff:192.0.2.7', spoofed))).toEqual({
      'x-forwarded-for': '192.0.2.7',
      'x-forwarded-host': 'proxy.example:8080',
      'x-forwarded-proto': 'http',
      'x-forwarded-port': '8080',
      forwarded: undefined,
      'x-real-ip': '192.0.2.7',
    });
    // A trusting proxy treats a peer outside its list the same way.
    expect(trusting(req('192.0.2.7', spoofed))['x-forwarded-for']).toBe('192.0.2.7');
  });

  it('from a trusted peer: its values are kept and the peer is appended', () => {
    expect(trusting(req('10.9.9.9', { ...spoofed, 'x-forwarded-for': ['198.51.100.1', '10.1.2.3'] }))).toEqual({
      'x-forwarded-for': '198.51.100.1, 10.1.2.3, 10.9.9.9',
      'x-forwarded-host': 'evil.example',
      'x-forwarded-proto': 'https',
      'x-forwarded-port': '443',
      forwarded: 'for=10.1.2.3;host=evil.example',
      'x-real-ip': '10.1.2.3',
    });
    // Missing ones are filled in as for anyone else.
    expect(trusting(req('10.9.9.9', { host: 'registry.example' }, true))).toMatchObject({
      'x-forwarded-for': '10.9.9.9',
      'x-forwarded-host': 'registry.example',
      'x-forwarded-proto': 'https',
      'x-forwarded-port': '443',
    });
  });

  it('applyForwardedFields removes what is undefined and overwrites the rest', () => {
    const headers: Record<string, unknown> = { ...spoofed, accept: '*/*' };
    applyForwardedFields(headers, untrusting(req(undefined, spoofed)));
    expect(headers).toEqual({ host: 'proxy.example:8080', accept: '*/*', 'x-forwarded-host': 'proxy.example:8080', 'x-forwarded-proto': 'http', 'x-forwarded-port': '8080' });
  });
});

describe('HTTP/2: :authority stands for Host', () => {
  const untrusting = createForwardedHeaders(parseCidrList([], 'trustedProxies'));
  it('an h2 request without Host: X-Forwarded-Host/-Port come from :authority, -Proto from the TLS socket', () => {
    const h2 = req('192.0.2.7', { ':authority': 'registry.example:8443', ':method': 'GET', ':path': '/v2/', ':scheme': 'https' }, true);
    expect(requestHost(h2)).toBe('registry.example:8443');
    expect(untrusting(h2)).toMatchObject({ 'x-forwarded-host': 'registry.example:8443', 'x-forwarded-proto': 'https', 'x-forwarded-port': '8443' });
  });
  it(':authority wins over a Host sent alongside it; HTTP/1.1 requests use Host', () => {
    expect(requestHost(req('192.0.2.7', { ':authority': 'a.example', host: 'b.example' }))).toBe('a.example');
    expect(requestHost(req('192.0.2.7', { host: 'b.example' }))).toBe('b.example');
    expect(requestHost(req('192.0.2.7', {}))).toBeUndefined();
  });
});
