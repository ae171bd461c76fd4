/**
 * Prevents: a client passing an upstream's address allow-list, or steering the registry's upload
 * `Location`s, by writing forwarding headers itself. nginx before distribution with
 * `real_ip_header X-Forwarded-For` + `allow 10.1.2.3; deny all` trusts the proxy's
 * `X-Forwarded-For`; if the proxy sent the client's value on (and dropped the real peer), a client
 * sending `X-Forwarded-For: 10.1.2.3` would read blobs (307 + bytes) and `_catalog` through the
 * proxy that nginx refuses it directly.
 * Invariant: the proxy writes `X-Forwarded-For` itself, on pass-through AND on the authorizing
 * HEAD (peer appended; the incoming list kept only from `trustedProxies`), and replaces
 * `X-Forwarded-Host/-Proto/-Port` (and drops `Forwarded`) from other peers. Upload `Location`s
 * still point at the proxy. Real distribution 2.8.2 behind real nginx; clients on distinct
 * loopback addresses, over HTTP/1.1 and HTTP/2.
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBlob } from '../helpers/registry-api.js';
import { startProxy, TRANSPORTS, type RunningProxy } from '../helpers/proxy-server.js';
import { STORAGE_ENDPOINT, testSigner } from '../helpers/token-registry.js';
import { requireBinary } from '../support/binaries.js';
import { startNginx, type RunningNginx } from '../support/nginx.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';

const has = requireBinary('docker-registry') && requireBinary('nginx');
const REPO = 'private/app';
/** The address nginx allow-lists. */
const ALLOWED = '10.1.2.3';
/** A client on the loopback network: not allowed by nginx, not trusted by the proxy. */
const CLIENT = '127.0.0.5';
/** A front the proxy trusts (and nginx trusts too, as operators then configure it). */
const FRONT = '127.0.0.6';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request from `localAddress`, headers sent as given, redirects not followed. */
function send(base: string, path: string, localAddress: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers, localAddress, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${method} ${path}`)));
    req.on('error', reject);
    req.end();
  });
}

/** The same request through a proxy, over the proxy's own transport. */
function sendVia(proxy: RunningProxy, path: string, localAddress: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  return proxy.request(path, { localAddress, headers, method }).then((r) => ({ status: r.status, headers: r.headers, body: r.body.toString() }));
}

describe.skipIf(!has).each(TRANSPORTS)('a client\'s forwarding headers never reach the upstream as its own (over %s)', (transport) => {
  let registry: RunningRegistry;
  let nginx: RunningNginx;
  let digest: string;
  let untrusting: RunningProxy;
  let trusting: RunningProxy;
  let direct: RunningProxy;

  beforeAll(async () => {
    registry = await startRegistry();
    digest = await pushBlob(registry.url, REPO, randomBytes(4096), 'Basic eA==');
    nginx = await startNginx({
      server: `
    # The proxy (connecting from 127.0.0.1) and the front are trusted to report the client.
    set_real_ip_from 127.0.0.1;
    set_real_ip_from ${FRONT};
    real_ip_header X-Forwarded-For;
    real_ip_recursive on;
    add_header X-Seen-Client $remote_addr always;
    location / {
      allow ${ALLOWED};
      deny all;
      proxy_pass ${registry.url};
      proxy_set_header Host $http_host;
    }`,
    });
    untrusting = await startProxy({ upstream: nginx.url, signer: testSigner() }, { transport });
    // Clients of this proxy are told apart by address only: SECURITY.md says to turn the decision
    // cache off then (it keys on credentials, and every caller here is anonymous).
    trusting = await startProxy({ upstream: nginx.url, signer: testSigner(), trustedProxies: [`${FRONT}/32`], decisionCache: false }, { transport });
    // Straight to distribution: upload Locations, without nginx in between.
    direct = await startProxy({ upstream: registry.url, signer: testSigner() }, { transport });
  }, 30_000);

  afterAll(async () => {
    await Promise.all([untrusting, trusting, direct].map((p) => p?.close()));
    await nginx?.stop();
    await registry?.stop();
  }, 15_000);

  const blobPath = () => `/v2/${REPO}/blobs/${digest}`;
  const spoof = { 'x-forwarded-for': ALLOWED };

  it('nginx refuses the spoofing client directly, and admits the allowed address from a trusted front', async () => {
    expect((await send(nginx.url, blobPath(), CLIENT, spoof)).status).toBe(403);
    expect((await send(nginx.url, '/v2/_catalog', CLIENT, spoof)).status).toBe(403);
    expect((await send(nginx.url, blobPath(), FRONT, spoof)).status).toBe(200);
  });

  it('blob GET through the proxy: the authorizing HEAD carries the real peer, so the spoofing client gets nginx\'s 403 and no signed URL', async () => {
    const res = await sendVia(untrusting, blobPath(), CLIENT, spoof);
    expect(res.status).toBe(403);
    expect(res.headers.location).toBeUndefined();
    expect(res.headers['x-seen-client']).toBe(CLIENT);
  });

  it('pass-through (_catalog, manifests): the spoofing client gets 403; nginx saw its real address', async () => {
    const catalog = await sendVia(untrusting, '/v2/_catalog', CLIENT, spoof);
    expect(catalog.status).toBe(403);
    expect(catalog.headers['x-seen-client']).toBe(CLIENT);
    // Several header lines, and the headers of other proxies, do not help either.
    const many = await sendVia(untrusting, '/v2/_catalog', CLIENT, { 'x-forwarded-for': `${ALLOWED}, ${ALLOWED}`, 'x-real-ip': ALLOWED, forwarded: `for=${ALLOWED}` });
    expect(many.status).toBe(403);
  });

  it('a client of a proxy that trusts only the front is not believed either, though its peer is loopback', async () => {
    expect((await sendVia(trusting, blobPath(), CLIENT, spoof)).status).toBe(403);
    expect((await sendVia(trusting, '/v2/_catalog', CLIENT, spoof)).status).toBe(403);
  });

  it('from a trusted front the chain is kept: the allowed client is redirected and reads the catalog', async () => {
    const res = await sendVia(trusting, blobPath(), FRONT, spoof);
    expect(res.status).toBe(307);
    expect(res.headers.location!.startsWith(`${STORAGE_ENDPOINT}/registry/`)).toBe(true);
    const catalog = await sendVia(trusting, '/v2/_catalog', FRONT, spoof);
    expect(catalog.status).toBe(200);
    expect(catalog.headers['x-seen-client']).toBe(ALLOWED);
    expect(JSON.parse(catalog.body).repositories).toContain(REPO);
  });

  it('upload Locations point at the proxy, also when a client sends X-Forwarded-Host/-Proto/-Port or Forwarded', async () => {
    const proxyHost = new URL(direct.url).host;
    const plain = await sendVia(direct, `/v2/${REPO}/blobs/uploads/`, CLIENT, { 'content-length': '0' }, 'POST');
    expect(plain.status).toBe(202);
    expect(new URL(plain.headers.location!, direct.url).host).toBe(proxyHost);
    const scheme = new URL(direct.url).protocol;
    expect(plain.headers.location!.startsWith(`${scheme}//${proxyHost}/`)).toBe(true);

    for (const headers of <Array<Record<string, string>>>[
      { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https', 'x-forwarded-port': '8443' },
      { forwarded: 'host=evil.example;proto=https' },
    ]) {
      const res = await sendVia(direct, `/v2/${REPO}/blobs/uploads/`, CLIENT, { ...headers, 'content-length': '0' }, 'POST');
      expect(res.status).toBe(202);
      expect(res.headers.location!.startsWith(`${scheme}//${proxyHost}/`)).toBe(true);
    }
  });
});
