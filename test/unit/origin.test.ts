import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prometheusMetrics } from '../../src/metrics.js';
import { createOriginHandler, parseOriginKey, sharedHostWarning } from '../../src/origin/server.js';
import { hmacTokenVerifier } from '../../src/signers/hmac.js';
import { originSigner, type OriginSigner, type OriginSignerOptions } from '../../src/signers/origin.js';
import { resolveLayout } from '../../src/layouts.js';

const KEY = 'origin-test-key-0123456789abcdef';
const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

interface Raw {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A request with the path sent byte for byte (URL parsers would resolve `..` and `%2e%2e` first). */
function raw(base: string, path: string, headers: http.OutgoingHttpHeaders = {}, method = 'GET'): Promise<Raw> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('origin mode: serving blobs from a registry filesystem', () => {
  let dir: string;
  let outside: string;
  let server: http.Server;
  let base: string;
  let signer: OriginSigner;
  let now = T0;
  const metrics = prometheusMetrics();
  const blob = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 251));
  const hex = sha256(blob);
  const digest = `sha256:${hex}`;
  const key = `docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
  const secretHex = sha256(Buffer.from('secret outside the root'));

  const signed = (d = digest, repository = 'team/app') => new URL((signer.sign({ repository, digest: d, method: 'GET' }) as { url: string }).url);
  const pathOf = (u: URL) => `${u.pathname}${u.search}`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'origin-unit-'));
    outside = await mkdtemp(join(tmpdir(), 'origin-outside-'));
    await mkdir(join(dir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex), { recursive: true });
    await writeFile(join(dir, key), blob);
    await writeFile(join(outside, 'data'), 'secret outside the root');
    // A digest-shaped path inside the root whose last directory is a symlink pointing outside.
    await mkdir(join(dir, 'docker/registry/v2/blobs/sha256', secretHex.slice(0, 2)), { recursive: true });
    await symlink(outside, join(dir, 'docker/registry/v2/blobs/sha256', secretHex.slice(0, 2), secretHex));
    // Registry internals that must never be served.
    await mkdir(join(dir, 'docker/registry/v2/repositories/team/app/_layers/sha256', hex), { recursive: true });
    await writeFile(join(dir, 'docker/registry/v2/repositories/team/app/_layers/sha256', hex, 'link'), digest);

    server = http.createServer((req, res) => {
      if (!handler(req, res)) {
        res.writeHead(418);
        res.end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    signer = originSigner({ root: dir, key: KEY, baseUrl: `${base}/_origin`, now: () => now });
    handler = createOriginHandler(signer.origin, { metrics });
  });
  let handler: ReturnType<typeof createOriginHandler>;

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  });

  it('signs <baseUrl>/<layout key>?expires=<s>&sig=<base64url HMAC-SHA256 of path+expires>', () => {
    const u = signed();
    expect(u.pathname).toBe(`/_origin/${key}`);
    expect(u.search).toMatch(/^\?expires=\d+&sig=[A-Za-z0-9_-]{43}$/);
    expect(Number(u.searchParams.get('expires'))).toBe(Math.floor(T0 / 1_000) + 1200);
  });

  it('GET: 200 with every origin header, and the bytes', async () => {
    const res = await raw(base, pathOf(signed()));
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe(String(blob.length));
    expect(res.headers['content-type']).toBe('application/octet-stream');
    expect(res.headers['docker-content-digest']).toBe(digest);
    expect(res.headers.etag).toBe(`"${digest}"`);
    expect(res.headers['accept-ranges']).toBe('bytes');
    expect(new Date(res.headers['last-modified']!).getTime()).toBeGreaterThan(0);
    expect(res.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(sha256(res.body)).toBe(hex);
  });

  it('HEAD: the same headers, no body', async () => {
    const res = await raw(base, pathOf(signed()), {}, 'HEAD');
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe(String(blob.length));
    expect(res.headers['docker-content-digest']).toBe(digest);
    expect(res.body.length).toBe(0);
  });

  it('Range: bytes=N-, 0-1, N-M, -N answer 206 with exact Content-Range; past the end 416', async () => {
    const size = blob.length;
    const cases: [string, number, number][] = [
      ['bytes=1000-', 1000, size - 1],
      ['bytes=0-1', 0, 1],
      ['bytes=5-9', 5, 9],
      ['bytes=-10', size - 10, size - 1],
      [`bytes=0-${size + 50}`, 0, size - 1],
    ];
    for (const [range, start, end] of cases) {
      const res = await raw(base, pathOf(signed()), { Range: range });
      expect(res.status, range).toBe(206);
      expect(res.headers['content-range']).toBe(`bytes ${start}-${end}/${size}`);
      expect(res.headers['content-length']).toBe(String(end - start + 1));
      expect(res.body.equals(blob.subarray(start, end + 1))).toBe(true);
    }
    const past = await raw(base, pathOf(signed()), { Range: `bytes=${size}-` });
    expect(past.status).toBe(416);
    expect(past.headers['content-range']).toBe(`bytes */${size}`);
    // If-Range naming another entity: the whole blob.
    const stale = await raw(base, pathOf(signed()), { Range: 'bytes=0-1', 'If-Range': '"sha256:other"' });
    expect(stale.status).toBe(200);
  });

  it('If-None-Match with the digest ETag: 304, no body', async () => {
    const res = await raw(base, pathOf(signed()), { 'If-None-Match': `"${digest}"` });
    expect(res.status).toBe(304);
    expect(res.headers.etag).toBe(`"${digest}"`);
    expect(res.body.length).toBe(0);
    expect((await raw(base, pathOf(signed()), { 'If-None-Match': '"sha256:other"' })).status).toBe(200);
  });

  it('refuses missing, tampered, expired tokens and tokens of another blob: 403, OCI error body, no-store', async () => {
    const u = signed();
    const missing = await raw(base, u.pathname);
    expect(missing.status).toBe(403);
    expect(JSON.parse(missing.body.toString()).errors[0].code).toBe('DENIED');
    expect(missing.headers['cache-control']).toBe('no-store');
    expect(missing.headers['www-authenticate']).toBeUndefined();
    const sig = u.searchParams.get('sig')!;
    const tampered = `${u.pathname}?expires=${u.searchParams.get('expires')}&sig=${sig.slice(0, -1)}${sig.endsWith('A') ? 'B' : 'A'}`;
    expect((await raw(base, tampered)).status).toBe(403);
    const longer = `${u.pathname}?expires=${Number(u.searchParams.get('expires')) + 1}&sig=${sig}`;
    expect((await raw(base, longer)).status).toBe(403);
    expect((await raw(base, `${pathOf(u)}&extra=1`)).status).toBe(403);
    now = T0 + 1201_000;
    try {
      const expired = await raw(base, pathOf(u));
      expect(expired.status).toBe(403);
      expect(expired.body.toString()).toMatch(/expired/);
    } finally {
      now = T0;
    }
    // A valid token for one blob does not open another.
    const other = signed(`sha256:${'a'.repeat(64)}`);
    expect((await raw(base, `${u.pathname}${other.search}`)).status).toBe(403);
  });

  it('refuses every path the layout does not produce: traversal, encodings, internals, other algorithms (404)', async () => {
    const q = signed().search;
    const paths = [
      `/_origin/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/../../../repositories/team/app/_layers/sha256/${hex}/link`,
      `/_origin/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/%2e%2e/${hex}/data`,
      `/_origin/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}%2F${hex}/data`,
      `/_origin/docker%2Fregistry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`,
      `/_origin/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}//${hex}/data`,
      `/_origin/docker/registry/v2/blobs/sha256/${hex.slice(0, 2).toUpperCase()}/${hex.toUpperCase()}/data`,
      `/_origin/docker/registry/v2/blobs/sha256/ff/${hex}/data`,
      `/_origin/docker/registry/v2/blobs/md5/${hex.slice(0, 2)}/${hex.slice(0, 32)}/data`,
      `/_origin/docker/registry/v2/blobs/sha384/${hex.slice(0, 2)}/${hex}${hex.slice(0, 32)}/data`,
      `/_origin/docker/registry/v2/repositories/team/app/_layers/sha256/${hex}/link`,
      `/_origin/docker/registry/v2/repositories/team/app/_uploads/x/data`,
      `/_origin/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}`,
      `/_origin/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data/`,
      `/_origin/`,
      `/_origin/../../../../etc/passwd`,
    ];
    for (const path of paths) {
      const res = await raw(base, `${path}${q}`);
      expect(res.status, path).toBe(404);
      expect(res.body.toString()).not.toMatch(/secret outside/);
    }
  });

  it('never follows a symlink inside the root to a file outside it, even with a valid token', async () => {
    const u = signed(`sha256:${secretHex}`);
    const res = await raw(base, pathOf(u));
    expect(res.status).toBe(404);
    expect(res.body.toString()).not.toMatch(/secret outside/);
  });

  it('a blob the layout produces but that is not on disk: 404; other methods: 405; other paths: not handled', async () => {
    expect((await raw(base, pathOf(signed(`sha256:${'b'.repeat(64)}`)))).status).toBe(404);
    expect((await raw(base, pathOf(signed()), {}, 'DELETE')).status).toBe(405);
    expect((await raw(base, `/v2/team/app/blobs/${digest}`)).status).toBe(418);
  });

  it('counts responses by status and the bytes it sent', async () => {
    const text = await metrics.render();
    expect(text).toMatch(/registry_redirect_origin_responses_total\{status="200"\} [1-9]/);
    expect(text).toMatch(/registry_redirect_origin_responses_total\{status="206"\} [1-9]/);
    expect(text).toMatch(/registry_redirect_origin_responses_total\{status="304"\} [1-9]/);
    expect(text).toMatch(/registry_redirect_origin_responses_total\{status="403"\} [1-9]/);
    expect(text).toMatch(/registry_redirect_origin_responses_total\{status="404"\} [1-9]/);
    const bytes = Number(/registry_redirect_origin_bytes_total (\d+)/.exec(text)?.[1]);
    expect(bytes).toBeGreaterThanOrEqual(blob.length);
  });

  it('origin shield: without the CDN\'s secret header, 403', async () => {
    const shielded = originSigner({ root: dir, key: KEY, baseUrl: `${base}/_origin`, originSecretHeader: { name: 'X-Origin-Secret', value: 'shield-secret-0123456789' } });
    const h = createOriginHandler(shielded.origin);
    const s = http.createServer((req, res) => void h(req, res));
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const b = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    try {
      const u = new URL((shielded.sign({ repository: 'x', digest, method: 'GET' }) as { url: string }).url);
      expect((await raw(b, pathOf(u))).status).toBe(403);
      expect((await raw(b, pathOf(u), { 'X-Origin-Secret': 'wrong' })).status).toBe(403);
      expect((await raw(b, pathOf(u), { 'X-Origin-Secret': 'shield-secret-0123456789' })).status).toBe(200);
    } finally {
      s.closeAllConnections();
      await new Promise((resolve) => s.close(resolve));
    }
  });
});

describe('origin keys', () => {
  const hex = 'ab'.repeat(32);
  it('oci-per-repo (zot): <repository>/blobs/<alg>/<hex>, repository validated', () => {
    const origin = { layout: 'oci-per-repo' as const, keyOf: resolveLayout('oci-per-repo') };
    expect(parseOriginKey(origin, `team/app/blobs/sha256/${hex}`)).toEqual({ digest: `sha256:${hex}`, key: `team/app/blobs/sha256/${hex}` });
    for (const bad of [`../blobs/sha256/${hex}`, `team/.uploads/blobs/sha256/${hex}`, `Team/blobs/sha256/${hex}`, `team//app/blobs/sha256/${hex}`, `team/app/blobs/sha256/${hex}/`, `team/app/index.json`]) {
      expect(parseOriginKey(origin, bad), bad).toBeUndefined();
    }
  });

  it('warns when the origin shares the registry host name', () => {
    expect(sharedHostWarning({ baseUrl: 'http://127.0.0.1:15080/_origin' }, { host: '127.0.0.1', port: 15080 })).toMatch(/credentials/);
    expect(sharedHostWarning({ baseUrl: 'http://127.0.0.2:15081' }, { host: '127.0.0.1', port: 15080 })).toBeUndefined();
  });
});

describe('hmacTokenVerifier: every origin token format verifies what the signer signs', () => {
  const HEX = '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03';
  const formats: Partial<OriginSignerOptions>[] = [
    { token: 'hmac-sha256' },
    { token: 'cloudflare' },
    { token: 'nginx-secure-link' },
    { token: 'google-cdn', keyName: 'registry-key', key: Buffer.from(KEY).toString('base64url') },
  ];
  for (const f of formats) {
    it(f.token!, () => {
      let now = T0;
      const s = originSigner({ root: '/nonexistent', key: KEY, baseUrl: 'https://cdn.example.com/blobs', now: () => now, ...f });
      const u = new URL((s.sign({ repository: 'r', digest: `sha256:${HEX}`, method: 'GET' }) as { url: string }).url);
      const query = u.search.slice(1);
      expect(s.origin.verifier.verify(u.pathname, query)).toBe('ok');
      expect(s.origin.verifier.verify(u.pathname.replace('5891', '5892'), query)).toBe('mismatch');
      expect(s.origin.verifier.verify(u.pathname, '')).toBe('missing');
      now = T0 + 1_201_000;
      expect(s.origin.verifier.verify(u.pathname, query)).toBe('expired');
    });
  }

  it('refuses at construction a scheme whose query does not carry what the message signs', () => {
    expect(() => hmacTokenVerifier({ baseUrl: 'https://c.example', key: KEY, message: '{path}{issued}', query: 't={token}' })).toThrow(/must carry it/);
  });

  it('refuses short keys and origins clients cannot be sent to', () => {
    expect(() => originSigner({ root: '/r', key: 'short', listen: { host: '127.0.0.2', port: 1 } })).toThrow(/16 characters/);
    expect(() => originSigner({ root: '/r', key: KEY, listen: { host: '0.0.0.0', port: 1 } })).toThrow(/baseUrl/);
    expect(() => originSigner({ root: '/r', key: KEY })).toThrow(/listen .* or baseUrl/);
  });
});
