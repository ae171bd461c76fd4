/**
 * The middleware behind the `serve` TLS listener, spoken to over HTTP/2: Host-based logic reads
 * `:authority` (clients send no `Host` in h2), pseudo-headers never reach the upstream, the
 * upstream's connection-specific headers never reach the h2 client, and timeouts answer as on
 * HTTP/1.1.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { startProxy, type RunningProxy } from '../helpers/proxy-server.js';
import { testSigner } from '../helpers/token-registry.js';
import { requireBinary } from '../support/binaries.js';
import type { RegistryRedirectOptions } from '../../src/types.js';

const BLOB = Buffer.from('hello h2');
const DIGEST = digestOf(BLOB);

describe.skipIf(!requireBinary('openssl'))('HTTP/2 requests through the middleware', () => {
  let upstream: FakeUpstream;
  const proxies: RunningProxy[] = [];
  const proxy = async (extra: Partial<RegistryRedirectOptions> = {}) => {
    const p = await startProxy({ upstream: upstream.url, signer: testSigner(), ...extra }, { transport: 'h2' });
    proxies.push(p);
    return p;
  };

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
  });
  afterEach(() => upstream.override(undefined));
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await upstream.close();
  });

  it('the authorizing HEAD and pass-through carry Host = :authority and X-Forwarded-Host/-Proto from it, and no pseudo-headers', async () => {
    const p = await proxy();
    const authority = new URL(p.url).host;
    upstream.seen.length = 0;
    expect((await p.request(`/v2/team/app/blobs/${DIGEST}`, { headers: { authorization: BASIC } })).status).toBe(307);
    expect((await p.request('/v2/team/app/manifests/v1', { headers: { authorization: BASIC } })).status).toBe(200);
    expect(upstream.seen.map((s) => s.method)).toEqual(['HEAD', 'GET']);
    for (const seen of upstream.seen) {
      expect(seen.headers.host).toBe(authority);
      expect(seen.headers['x-forwarded-host']).toBe(authority);
      expect(seen.headers['x-forwarded-proto']).toBe('https');
      expect(seen.headers['x-forwarded-port']).toBe(new URL(p.url).port);
      expect(Object.keys(seen.headers).filter((k) => k.startsWith(':'))).toEqual([]);
    }
  });

  it('the same-host guard reads :authority: a signed URL on the registry\'s host name is proxied, not redirected', async () => {
    const onRegistryHost = { name: 'same-host', sign: () => ({ url: 'https://127.0.0.1:9/blob?sig=x', expiresAt: Date.now() + 60_000 }) };
    const p = await proxy({ signer: onRegistryHost });
    const res = await p.request(`/v2/team/app/blobs/${DIGEST}`, { headers: { authorization: BASIC } });
    expect(res.status).toBe(200);
    expect(res.headers.location).toBeUndefined();
    expect(res.body.equals(BLOB)).toBe(true);
  });

  it('connection-specific upstream headers (Connection and what it names, Keep-Alive, Transfer-Encoding, Upgrade, Proxy-Connection) are dropped; the body streams', async () => {
    const p = await proxy();
    upstream.override((req, res) => {
      if (!req.url!.startsWith('/v2/odd')) return false;
      res.writeHead(200, { Connection: 'keep-alive, X-Hop', 'X-Hop': 'per-connection', 'Keep-Alive': 'timeout=5', 'Proxy-Connection': 'keep-alive', Upgrade: 'h2c', 'X-End-To-End': 'kept', 'Transfer-Encoding': 'chunked' });
      res.write('part one, ');
      setTimeout(() => res.end('part two'), 20);
      return true;
    });
    const res = await p.request('/v2/odd', { headers: { authorization: BASIC } });
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('part one, part two');
    expect(res.headers['x-end-to-end']).toBe('kept');
    for (const name of ['connection', 'x-hop', 'keep-alive', 'proxy-connection', 'upgrade', 'transfer-encoding']) expect(res.headers[name], name).toBeUndefined();
  });

  it('an upstream that does not answer in time: 504 OCI error over h2, on pass-through and on the authorizing HEAD', async () => {
    const p = await proxy({ timeouts: { upstream: 300, authorize: 300 } });
    upstream.override((req) => req.url!.startsWith('/v2/slow') || req.method === 'HEAD');
    const pass = await p.request('/v2/slow', { headers: { authorization: BASIC } });
    expect(pass.status).toBe(504);
    expect(JSON.parse(pass.body.toString()).errors[0].code).toBe('UNAVAILABLE');
    const blob = await p.request(`/v2/team/app/blobs/${DIGEST}`, { headers: { authorization: BASIC } });
    expect(blob.status).toBe(504);
    expect(blob.headers.location).toBeUndefined();
  });
});
