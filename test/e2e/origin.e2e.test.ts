import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { runCheck } from '../../src/server/check.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { originSigner } from '../../src/signers/origin.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { freePort } from '../support/ports.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { registryBlobKey } from '../support/seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo');
const alice = { username: 'alice', password: 'alice-pw' };
const basic = `Basic ${Buffer.from(`${alice.username}:${alice.password}`).toString('base64')}`;
const KEY = 'e2e-origin-key-0123456789abcdef';

interface Seen {
  method: string;
  url: string;
  status: number;
  location?: string;
  authorization?: string;
}

/** Records every request a server answers (status and Location once the response finished). */
function record(server: http.Server): Seen[] {
  const seen: Seen[] = [];
  server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    // The middleware writes Location in writeHead's object, which getHeader does not see.
    let location: unknown;
    const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => http.ServerResponse;
    res.writeHead = ((...args: unknown[]) => {
      const headers = args.find((a): a is Record<string, unknown> => a !== null && typeof a === 'object' && !Array.isArray(a));
      location = headers?.Location ?? headers?.location;
      return writeHead(...args);
    }) as typeof res.writeHead;
    res.once('finish', () => {
      location ??= res.getHeader('location');
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        status: res.statusCode,
        ...(location !== undefined ? { location: String(location) } : {}),
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      });
    });
  });
  return seen;
}

/** A request whose path is sent byte for byte (no URL normalization of `..` or `%2e`). */
function rawGet(base: string, path: string): Promise<{ status: number; body: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * Origin mode with real parts: distribution 2.8.2 on filesystem storage (htpasswd), the proxy in
 * front with the origin on another loopback address (127.0.0.2: Go clients send the registry's
 * credentials to the same host name), skopeo pushing and pulling through it.
 */
describe.skipIf(!has)('e2e: origin mode over distribution\'s filesystem', () => {
  let registry: RunningRegistry;
  let proxy: RunningServer;
  let work: string;
  let image: OciImage;
  let proxyHost: string;
  let originUrl: string;
  let proxySeen: Seen[];
  let originSeen: Seen[];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-origin-e2e-'));
    registry = await startRegistry({ auth: { htpasswd: { users: { [alice.username]: alice.password } } } });
    const [port, originPort] = await Promise.all([freePort('127.0.0.1'), freePort('127.0.0.2')]);
    const config = buildConfig({
      listen: `127.0.0.1:${port}`,
      upstream: registry.url,
      signer: { origin: { root: registry.storageRoot, key: KEY, listen: `127.0.0.2:${originPort}` } },
      metrics: {},
      expiry: '5m',
    });
    proxy = await startServer(config, silentLogger);
    proxyHost = new URL(proxy.url).host;
    originUrl = proxy.originUrls[0]!;
    proxySeen = record(proxy.server as http.Server);
    originSeen = record(proxy.originServers[0]!);
    image = await makeOciImage(join(work, 'img'), { layers: [{ size: 3 << 20, seed: 'origin-a' }, { size: 20_000, seed: 'origin-b' }] });
  });

  afterAll(async () => {
    await proxy?.close();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('skopeo pushes through the proxy, then pulls: every blob GET is a 307 to the origin, bytes verified, the origin never sees Authorization', async () => {
    const push = await skopeoPush(image, `docker://${proxyHost}/team/app:v1`, alice);
    expect(push.code, push.stderr).toBe(0);
    proxySeen.length = 0;
    originSeen.length = 0;
    const out = join(work, 'pulled');
    const pull = await skopeoPull(`docker://${proxyHost}/team/app:v1`, out, alice);
    expect(pull.code, pull.stderr).toBe(0);
    expect((await verifyPulledDir(out, image)).problems).toEqual([]);

    const blobGets = proxySeen.filter((r) => r.method === 'GET' && r.url.includes('/blobs/sha256:'));
    expect(blobGets.length).toBeGreaterThanOrEqual(image.layers.length + 1);
    for (const r of blobGets) {
      expect(r.status, r.url).toBe(307);
      expect(r.location!.startsWith(`${originUrl}/docker/registry/v2/blobs/sha256/`)).toBe(true);
    }
    for (const digest of [...image.layers.map((l) => l.digest), image.configDigest]) {
      const hit = originSeen.find((r) => r.url.startsWith(`/${registryBlobKey(digest)}?`));
      expect(hit?.status, digest).toBe(200);
    }
    expect(originSeen.every((r) => r.authorization === undefined)).toBe(true);
  });

  async function locationOf(digest: string): Promise<URL> {
    const res = await request(`${proxy.url}/v2/team/app/blobs/${digest}`, { headers: { Authorization: basic } });
    expect(res.status).toBe(307);
    expect(res.headers['cache-control']).toBe('no-store');
    return new URL(res.headers.location!);
  }

  it('the origin answers GET and HEAD with each header the issue lists', async () => {
    const layer = image.layers[0]!;
    const location = await locationOf(layer.digest);
    expect(location.hostname).toBe('127.0.0.2');
    for (const method of ['GET', 'HEAD']) {
      const res = await request(location, { method });
      expect(res.status).toBe(200);
      expect(res.headers['content-length']).toBe(String(layer.size));
      expect(res.headers['content-type']).toBe('application/octet-stream');
      expect(res.headers['docker-content-digest']).toBe(layer.digest);
      expect(res.headers.etag).toBe(`"${layer.digest}"`);
      expect(res.headers['accept-ranges']).toBe('bytes');
      expect(Number.isNaN(Date.parse(res.headers['last-modified']!))).toBe(false);
      expect(res.headers['cache-control']).toBe('public, max-age=31536000, immutable');
      if (method === 'GET') expect(sha256(res.body)).toBe(layer.digest);
      else expect(res.body.length).toBe(0);
    }
  });

  it('Range: 206 with exact Content-Range; past the end 416; If-None-Match 304', async () => {
    const layer = image.layers[0]!;
    const location = await locationOf(layer.digest);
    const ranged = await request(location, { headers: { Range: 'bytes=1000-' } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers['content-range']).toBe(`bytes 1000-${layer.size - 1}/${layer.size}`);
    expect(ranged.headers['content-length']).toBe(String(layer.size - 1000));
    expect((await request(location, { headers: { Range: 'bytes=0-1' } })).headers['content-range']).toBe(`bytes 0-1/${layer.size}`);
    const past = await request(location, { headers: { Range: `bytes=${layer.size}-` } });
    expect(past.status).toBe(416);
    expect(past.headers['content-range']).toBe(`bytes */${layer.size}`);
    const notModified = await request(location, { headers: { 'If-None-Match': `"${layer.digest}"` } });
    expect(notModified.status).toBe(304);
    expect(notModified.body.length).toBe(0);
  });

  it('tampered and expired tokens: 403 without a registry challenge', async () => {
    const layer = image.layers[1]!;
    const location = await locationOf(layer.digest);
    const sig = location.searchParams.get('sig')!;
    const tampered = new URL(location);
    tampered.searchParams.set('sig', (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1));
    const res = await request(tampered);
    expect(res.status).toBe(403);
    expect(res.headers['www-authenticate']).toBeUndefined();
    expect(JSON.parse(res.body.toString()).errors[0].code).toBe('DENIED');
    // Signed with the right key an hour ago, 5 minutes of validity: expired.
    const past = originSigner({ root: registry.storageRoot, key: KEY, listen: { host: '127.0.0.2', port: Number(new URL(originUrl).port) }, expiry: '5m', now: () => Date.now() - 3_600_000 });
    const expired = await request((past.sign({ repository: 'team/app', digest: layer.digest, method: 'GET' }) as { url: string }).url);
    expect(expired.status).toBe(403);
    expect(expired.body.toString()).toMatch(/expired/);
  });

  it('refuses traversal: .., %2e%2e, encoded slashes, a symlink inside root to a file outside, another algorithm', async () => {
    const layer = image.layers[1]!;
    const hex = layer.digest.slice(7);
    const query = (await locationOf(layer.digest)).search;
    // A digest-shaped directory inside root that is a symlink to a directory outside it.
    const outside = join(work, 'outside');
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, 'data'), 'OUTSIDE-CONTENT');
    const fake = createHash('sha256').update('fake').digest('hex');
    const fakeDir = join(registry.storageRoot, 'docker/registry/v2/blobs/sha256', fake.slice(0, 2));
    await mkdir(fakeDir, { recursive: true });
    await symlink(outside, join(fakeDir, fake));
    const signedFake = (originSigner({ root: registry.storageRoot, key: KEY, listen: { host: '127.0.0.2', port: Number(new URL(originUrl).port) } }).sign({ repository: 'team/app', digest: `sha256:${fake}`, method: 'GET' }) as { url: string }).url;
    const attempts = [
      `/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/../../../repositories/team/app/_layers/sha256/${hex}/link${query}`,
      `/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/%2e%2e/%2e%2e/%2e%2e/repositories/team/app/_layers/sha256/${hex}/link${query}`,
      `/docker/registry/v2/blobs/sha256%2F${hex.slice(0, 2)}%2F${hex}%2Fdata${query}`,
      `/docker/registry/v2/repositories/team/app/_manifests/tags/v1/current/link${query}`,
      `/docker/registry/v2/repositories/team/app/_uploads${query}`,
      `/docker/registry/v2/blobs/sha384/${hex.slice(0, 2)}/${hex}${hex.slice(0, 32)}/data${query}`,
      `/docker/registry/v2/blobs/md5/${hex.slice(0, 2)}/${hex.slice(0, 32)}/data${query}`,
      new URL(signedFake).pathname + new URL(signedFake).search,
    ];
    for (const path of attempts) {
      const res = await rawGet(originUrl, path);
      expect(res.status, path).toBe(404);
      expect(res.body).not.toMatch(/OUTSIDE-CONTENT|^sha256:/);
    }
  });

  it('counts origin bytes and statuses in the metrics', async () => {
    const res = await request(`${proxy.url}/metrics`);
    const text = res.body.toString();
    for (const status of ['200', '206', '304', '403', '404', '416']) expect(text).toMatch(new RegExp(`registry_redirect_origin_responses_total\\{status="${status}"\\} [1-9]`));
    expect(Number(/registry_redirect_origin_bytes_total (\d+)/.exec(text)?.[1])).toBeGreaterThan(image.layers[0]!.size);
  });

  it('check proves it like any signer: a signed fetch of a real blob, size compared with the registry', async () => {
    const path = join(work, 'check.yaml');
    await writeFile(
      path,
      [`listen: 127.0.0.1:15999`, `upstream: ${registry.url}`, 'signer:', '  origin:', `    root: ${registry.storageRoot}`, `    key: ${KEY}`, '    listen: 127.0.0.2:15998', ''].join('\n'),
    );
    const lines: string[] = [];
    const layer = image.layers[0]!;
    const code = await runCheck({ config: path, repository: 'team/app', digest: layer.digest, creds: `${alice.username}:${alice.password}` }, (l) => lines.push(l));
    expect(code, lines.join('\n')).toBe(0);
    expect(lines[0]).toMatch(new RegExp(`^ok +signer \\(origin\\): the origin \\(root .*\\) accepted the signature: GET .* -> 206, ${layer.size} bytes, as the registry says`));
    const wrong = await runCheck({ config: path, repository: 'team/app', digest: layer.digest, size: layer.size + 1 }, (l) => lines.push(l));
    expect(wrong).toBe(1);
  });

  it('zot-style oci-per-repo layout: a tree laid out like zot\'s is served and pulled with skopeo', async () => {
    // zot keeps one OCI layout per repository: <root>/<repo>/{index.json,oci-layout,blobs/sha256/<hex>}.
    const zotRoot = join(work, 'zot');
    const blobs = join(zotRoot, 'team/app/blobs/sha256');
    await mkdir(blobs, { recursive: true });
    for (const digest of [image.manifestDigest, image.configDigest, ...image.layers.map((l) => l.digest)]) {
      await copyFile(join(image.dir, 'blobs/sha256', digest.slice(7)), join(blobs, digest.slice(7)));
    }
    await mkdir(join(zotRoot, 'team/app/.uploads'), { recursive: true });
    await writeFile(join(zotRoot, 'team/app/index.json'), '{}');
    await writeFile(join(zotRoot, 'team/app/oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    const [port, originPort] = await Promise.all([freePort('127.0.0.1'), freePort('127.0.0.2')]);
    const zotProxy = await startServer(
      buildConfig({ listen: `127.0.0.1:${port}`, upstream: registry.url, signer: { origin: { root: zotRoot, key: KEY, layout: 'oci-per-repo', listen: `127.0.0.2:${originPort}` } } }),
      silentLogger,
    );
    try {
      const seen = record(zotProxy.originServers[0]!);
      const out = join(work, 'pulled-zot');
      const pull = await skopeoPull(`docker://${new URL(zotProxy.url).host}/team/app:v1`, out, alice);
      expect(pull.code, pull.stderr).toBe(0);
      expect((await verifyPulledDir(out, image)).problems).toEqual([]);
      expect(seen.filter((r) => r.status === 200).map((r) => r.url.split('?')[0]).sort()).toEqual(
        [image.configDigest, ...image.layers.map((l) => l.digest)].map((d) => `/team/app/blobs/sha256/${d.slice(7)}`).sort(),
      );
      const q = seen[0]!.url.split('?')[1];
      for (const path of [`/team/app/index.json?${q}`, `/team/app/.uploads/x?${q}`, `/team/app/blobs/../index.json?${q}`]) {
        expect((await rawGet(zotProxy.originUrls[0]!, path)).status, path).toBe(404);
      }
    } finally {
      await zotProxy.close();
    }
  });
});
