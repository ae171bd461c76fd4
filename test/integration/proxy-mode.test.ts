import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { registryRedirect } from '../../src/index.js';
import { azureSigner } from '../../src/signers/azure.js';
import type { Logger, RegistryRedirectOptions, Signer } from '../../src/types.js';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { AZURITE_KEY } from '../helpers/constants.js';

const azure = azureSigner({ account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' });

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = (obj: object, msg?: string) => lines.push(JSON.stringify({ ...obj, msg }));
  return { lines, debug: log, info: log, warn: log, error: log };
}

let upstream: FakeUpstream;
const servers: http.Server[] = [];
const BLOB = randomBytes(4096);
const DIGEST = digestOf(BLOB);

beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
  upstream.blobs.set('other/repo', new Map());
});
afterEach(() => {
  upstream.override(undefined);
  upstream.seen.length = 0;
});
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await upstream.close();
});

function app(overrides: Partial<RegistryRedirectOptions> = {}) {
  const mw = registryRedirect({ upstream: upstream.url, signer: azure, ...overrides });
  const server = http.createServer((req, res) => mw(req, res));
  servers.push(server);
  return server;
}

describe('blob GET, authorized and present', () => {
  it('answers 307 with an absolute Location and the registry headers, no body', async () => {
    const res = await request(app()).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0);
    expect(res.status).toBe(307);
    const location = new URL(res.headers.location!);
    expect(location.href.startsWith('http://127.0.0.2:10000/devstoreaccount1/registry/docker/registry/v2/blobs/sha256/')).toBe(true);
    expect(location.pathname.endsWith(`/${DIGEST.slice(7)}/data`)).toBe(true);
    expect(location.searchParams.get('sig')).toBeTruthy();
    expect(res.headers['docker-content-digest']).toBe(DIGEST);
    expect(res.headers['docker-distribution-api-version']).toBe('registry/2.0');
    expect(res.headers['content-length']).toBe('0');
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.text ?? '').toBe('');
  });

  it('probes with HEAD and the caller credentials, never forwarding Range or conditionals', async () => {
    const res = await request(app())
      .get(`/v2/team/app/blobs/${DIGEST}`)
      .set('Authorization', BASIC)
      .set('Range', 'bytes=100-')
      .set('If-None-Match', '"x"')
      .set('If-Modified-Since', 'Wed, 21 Oct 2015 07:28:00 GMT')
      .redirects(0);
    expect(res.status).toBe(307);
    expect(upstream.seen).toHaveLength(1);
    const probe = upstream.seen[0]!;
    expect(probe.method).toBe('HEAD');
    expect(probe.url).toBe(`/v2/team/app/blobs/${DIGEST}`);
    expect(probe.headers.authorization).toBe(BASIC);
    expect(probe.headers.range).toBeUndefined();
    expect(probe.headers['if-none-match']).toBeUndefined();
    expect(probe.headers['if-modified-since']).toBeUndefined();
  });

  it('builds the key from the digest the upstream stored (Docker-Content-Digest), not the request', async () => {
    const stored = `sha256:${'e'.repeat(64)}`;
    const requested = `sha512:${'f'.repeat(128)}`;
    upstream.override((req, res) => {
      if (req.method !== 'HEAD') return false;
      res.writeHead(200, { 'Docker-Content-Digest': stored, 'Content-Length': 10 });
      res.end();
      return true;
    });
    const res = await request(app()).get(`/v2/team/app/blobs/${requested}`).set('Authorization', BASIC).redirects(0);
    expect(res.status).toBe(307);
    expect(new URL(res.headers.location!).pathname).toContain(`/blobs/sha256/ee/${'e'.repeat(64)}/data`);
    expect(res.headers['docker-content-digest']).toBe(stored);
  });

  it('treats an upstream that redirects by itself as authorized only with acceptUpstreamRedirect', async () => {
    upstream.override((req, res) => {
      res.writeHead(307, { Location: 'https://elsewhere.example/blob', 'Content-Length': '0' });
      res.end();
      return true;
    });
    const res = await request(app({ acceptUpstreamRedirect: true })).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0);
    expect(res.status).toBe(307);
    expect(res.headers.location).toContain('127.0.0.2:10000');
    // By default the 3xx is no grant: the upstream's own answer to the GET is relayed.
    const relayed = await request(app()).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0);
    expect(relayed.status).toBe(307);
    expect(relayed.headers.location).toBe('https://elsewhere.example/blob');
  });

  it('passes the size the upstream reported to the signer', async () => {
    const sizes: Array<number | undefined> = [];
    const signer: Signer = { name: 'spy', sign: (r) => (sizes.push(r.size), { url: 'https://cdn.example/x', expiresAt: Date.now() + 1000 }) };
    await request(app({ signer })).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0).expect(307);
    expect(sizes).toEqual([BLOB.length]);
  });
});

describe("upstream's no reaches the client unchanged", () => {
  it('401 with WWW-Authenticate and body, and no Location', async () => {
    const res = await request(app()).get(`/v2/team/app/blobs/${DIGEST}`).redirects(0);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Basic realm="fake-registry"');
    expect(res.headers.location).toBeUndefined();
    expect(JSON.parse(res.text)).toEqual({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }] });
    // The relayed answer is the real GET's, not the probe's headers.
    expect(upstream.seen.map((s) => s.method)).toEqual(['HEAD', 'GET']);
  });

  it('a blob present in repo A requested through repo B gets the upstream 404, never a 307', async () => {
    const res = await request(app()).get(`/v2/other/repo/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0);
    expect(res.status).toBe(404);
    expect(res.headers.location).toBeUndefined();
    expect(JSON.parse(res.text).errors[0].code).toBe('BLOB_UNKNOWN');
  });

  it.each([403, 500, 503])('%i from the upstream is relayed as is', async (status) => {
    upstream.override((req, res) => {
      res.writeHead(status, { 'Content-Type': 'application/json', 'X-Why': 'policy' });
      res.end(req.method === 'HEAD' ? undefined : `{"errors":[{"code":"DENIED","message":"status ${status}"}]}`);
      return true;
    });
    const res = await request(app()).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0);
    expect(res.status).toBe(status);
    expect(res.headers['x-why']).toBe('policy');
    expect(res.headers.location).toBeUndefined();
    expect(res.text).toContain(`status ${status}`);
  });
});

describe('pass-through', () => {
  it('HEAD blob is never redirected: upstream answers with its length and digest', async () => {
    const res = await request(app()).head(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0);
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe(String(BLOB.length));
    expect(res.headers['docker-content-digest']).toBe(DIGEST);
    expect(upstream.seen.map((s) => s.method)).toEqual(['HEAD']);
  });

  it.each([
    ['GET', '/v2/'],
    ['GET', '/v2/_catalog?n=10'],
    ['GET', '/v2/team/app/tags/list'],
    ['GET', '/v2/team/app/manifests/latest'],
    ['DELETE', '/v2/team/app/manifests/sha256:' + 'a'.repeat(64)],
  ])('%s %s goes to the upstream untouched', async (method, path) => {
    const res = await request(app())[method.toLowerCase() as 'get'](path).set('Authorization', BASIC).redirects(0);
    expect(res.status).toBe(200);
    expect(res.headers['x-upstream']).toBe('fake');
    expect(upstream.seen).toHaveLength(1);
    expect(upstream.seen[0]!.url).toBe(path);
    expect(upstream.seen[0]!.method).toBe(method);
  });

  it.each([
    '/v2/%2e%2e/blobs/' + DIGEST,
    '/v2/team%2fapp/blobs/' + DIGEST,
    '/v2/Team/App/blobs/' + DIGEST,
    '/v2/team/app/blobs/sha256:SHORT',
    '/v2/team//app/blobs/' + DIGEST,
  ])('malformed blob path %s is passed through without a probe: the upstream answers', async (path) => {
    const res = await request(app()).get(path).set('Authorization', BASIC).redirects(0);
    expect(res.headers.location).toBeUndefined();
    expect(upstream.seen.map((s) => [s.method, s.url])).toEqual([['GET', path]]);
    expect([200, 404]).toContain(res.status);
  });

  it('uploads (POST, PATCH chunked, PUT) stream byte-identical and are never redirected; Location points at the proxy', async () => {
    const server = app();
    const post = await request(server).post('/v2/team/app/blobs/uploads/').set('Authorization', BASIC).set('Host', 'proxy.example:8443').redirects(0);
    expect(post.status).toBe(202);
    expect(post.headers.location).toBe('http://proxy.example:8443/v2/up/blobs/uploads/session-1?_state=x');

    const body = randomBytes(3 * 1024 * 1024 + 17);
    const patch = await new Promise<http.IncomingMessage>((resolve, reject) => {
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        const r = http.request({ port, host: '127.0.0.1', method: 'PATCH', path: '/v2/team/app/blobs/uploads/session-1?_state=x', headers: { Authorization: BASIC, 'Transfer-Encoding': 'chunked' } }, resolve);
        r.on('error', reject);
        Readable.from((function* () {
          for (let i = 0; i < body.length; i += 65536) yield body.subarray(i, i + 65536);
        })()).pipe(r);
      });
    });
    patch.resume();
    expect(patch.statusCode).toBe(202);
    expect(patch.headers['x-body-sha256']).toBe(createHash('sha256').update(body).digest('hex'));
    const seenPatch = upstream.seen.find((s) => s.method === 'PATCH')!;
    expect(seenPatch.bodyBytes).toBe(body.length);

    const put = await request(server).put(`/v2/team/app/blobs/uploads/session-1?_state=x&digest=${DIGEST}`).set('Authorization', BASIC).send(BLOB).redirects(0);
    expect(put.status).toBe(201);
    expect(put.headers['x-body-bytes']).toBe(String(BLOB.length));
    await new Promise((r) => server.close(r));
  });
});

describe('signer failures fall back', () => {
  const throwing: Signer = { name: 'broken', sign: () => { throw new Error('boom https://x/y?sig=TOPSECRET AccountKey=KEYKEYKEY'); } };
  const hanging: Signer = { name: 'slow', sign: () => new Promise(() => {}) };

  it('signer throws -> the blob is proxied from upstream and the event logged without secrets', async () => {
    const logger = recordingLogger();
    const res = await request(app({ signer: throwing, logger })).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', `${BASIC}`).buffer(true).parse((r, cb) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => cb(null, Buffer.concat(chunks)));
    });
    expect(res.status).toBe(200);
    expect(Buffer.compare(res.body as Buffer, BLOB)).toBe(0);
    const text = logger.lines.join('\n');
    expect(text).toContain('signer failed');
    expect(text).not.toContain('TOPSECRET');
    expect(text).not.toContain('KEYKEYKEY');
    expect(text).not.toContain(BASIC.slice(6));
  });

  it('signer times out -> proxied after timeouts.signer', async () => {
    const started = Date.now();
    const res = await request(app({ signer: hanging, timeouts: { signer: 200 } })).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC);
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("onSignerError: 'error' -> 503 OCI error body", async () => {
    const res = await request(app({ signer: throwing, onSignerError: 'error' })).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC);
    expect(res.status).toBe(503);
    expect(res.body).toEqual({ errors: [{ code: 'UNAVAILABLE', message: 'blob storage signer unavailable', detail: null }] });
  });

  it('a signer returning a non-http URL is treated as a failure (no header injection)', async () => {
    const evil: Signer = { name: 'evil', sign: () => ({ url: 'https://x/\r\nSet-Cookie: a=b', expiresAt: 0 }) };
    const res = await request(app({ signer: evil })).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC);
    expect(res.status).toBe(200);
    expect(res.headers['set-cookie']).toBeUndefined();
  });
});

describe('upstream failures give OCI errors, never a hang', () => {
  it('unreachable upstream -> 502 UNAVAILABLE for blob GETs and pass-through', async () => {
    const dead = 'http://127.0.0.1:1';
    const server = app({ upstream: dead });
    for (const path of [`/v2/team/app/blobs/${DIGEST}`, '/v2/team/app/manifests/latest']) {
      const res = await request(server).get(path).set('Authorization', BASIC);
      expect(res.status).toBe(502);
      expect(res.body.errors[0].code).toBe('UNAVAILABLE');
      expect(res.headers.location).toBeUndefined();
    }
  });

  it('upstream that never answers -> 504 after the configured timeout', async () => {
    upstream.override(() => true); // swallow: never respond
    const server = app({ timeouts: { authorize: 300, upstream: 300 } });
    for (const path of [`/v2/team/app/blobs/${DIGEST}`, '/v2/team/app/manifests/latest']) {
      const started = Date.now();
      const res = await request(server).get(path).set('Authorization', BASIC);
      expect(res.status).toBe(504);
      expect(res.body.errors[0].code).toBe('UNAVAILABLE');
      expect(Date.now() - started).toBeLessThan(3_000);
    }
  });

  it('an upstream body that ends early resets the client connection instead of leaving it waiting', async () => {
    upstream.override((req, res) => {
      if (req.method !== 'GET') return false;
      res.writeHead(200, { 'Content-Length': 1000 });
      res.write(Buffer.alloc(10));
      setTimeout(() => res.destroy(), 50);
      return true;
    });
    const server = app({ signer: { name: 'x', sign: () => { throw new Error('fallback'); } } });
    await expect(request(server).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).timeout(5_000)).rejects.toThrow(/aborted|socket hang up|ECONNRESET|closed/i);
  });
});

describe('construction-time validation', () => {
  it.each([
    [{ signer: azure }, /set `upstream`.*or `authorize`/],
    [{ upstream: 'http://x' } as never, /`signer` is required/],
    [{ upstream: 'ftp://x', signer: azure }, /upstream: protocol ftp: is not supported/],
    [{ upstream: 'http://x', signer: azure, onSignerError: 'retry' } as never, /onSignerError must be "proxy" or "error"/],
    [{ upstream: 'http://x', signer: azure, timeouts: { signer: -1 } }, /timeouts\.signer must be a positive number/],
    [{ upstream: 'http://x', signer: azure, timeout: 1 } as never, /unknown option "timeout"/],
    [{ upstream: 'http://x', signer: azure, authorize: () => undefined }, /exclude each other/],
  ])('rejects %j', (opts, message) => {
    expect(() => registryRedirect(opts as RegistryRedirectOptions)).toThrow(message);
  });
});
