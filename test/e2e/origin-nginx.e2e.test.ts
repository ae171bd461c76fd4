import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { nginxBinary, startNginx, type RunningNginx } from '../support/nginx.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { freePort } from '../support/ports.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo') && requireBinary(nginxBinary() ?? 'nginx');
const alice = { username: 'alice', password: 'alice-pw' };
const basic = `Basic ${Buffer.from(`${alice.username}:${alice.password}`).toString('base64')}`;
const KEY = 'cdn-origin-key-0123456789abcdef';
const SHIELD = 'shield-secret-0123456789abcdef';

/**
 * nginx (Debian nginx-light) as the CDN in front of the origin: it verifies the `nginx-secure-link`
 * token itself (secure_link), caches by path with the query left out of the key (every pull signs a
 * new query), and adds the shield header the origin requires. The origin verifies the token too.
 */
describe.skipIf(!has)('e2e: nginx as a caching CDN in front of the origin', () => {
  let registry: RunningRegistry;
  let nginx: RunningNginx;
  let proxy: RunningServer;
  let work: string;
  let image: OciImage;
  let originHits: { url: string; authorization?: string | undefined; shield?: string | undefined }[];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-origin-cdn-'));
    registry = await startRegistry({ auth: { htpasswd: { users: { [alice.username]: alice.password } } } });
    const [port, originPort] = await Promise.all([freePort('127.0.0.1'), freePort('127.0.0.2')]);
    nginx = await startNginx({
      host: '127.0.0.3',
      http: `proxy_cache_path ${join(work, 'nginx-cache')} levels=1:2 keys_zone=blobs:1m max_size=256m inactive=1h use_temp_path=off;`,
      server: `
    location / {
      secure_link $arg_md5,$arg_expires;
      secure_link_md5 "$secure_link_expires$uri ${KEY}";
      if ($secure_link = "") { return 403; }
      if ($secure_link = "0") { return 403; }
      proxy_pass http://127.0.0.2:${originPort};
      proxy_set_header X-Origin-Secret "${SHIELD}";
      proxy_cache blobs;
      proxy_cache_key $uri;
      proxy_cache_lock on;
      add_header X-Cache-Status $upstream_cache_status always;
    }`,
    });
    const config = buildConfig({
      listen: `127.0.0.1:${port}`,
      upstream: registry.url,
      signer: {
        origin: {
          root: registry.storageRoot,
          key: KEY,
          token: 'nginx-secure-link',
          listen: `127.0.0.2:${originPort}`,
          baseUrl: nginx.url,
          originSecretHeader: { name: 'X-Origin-Secret', value: SHIELD },
        },
      },
    });
    proxy = await startServer(config, silentLogger);
    originHits = [];
    proxy.originServers[0]!.prependListener('request', (req: http.IncomingMessage) =>
      originHits.push({ url: req.url ?? '', authorization: req.headers.authorization, shield: req.headers['x-origin-secret'] as string | undefined }),
    );
    image = await makeOciImage(join(work, 'img'), { layers: [{ size: 2 << 20, seed: 'cdn-a' }, { size: 30_000, seed: 'cdn-b' }] });
    const push = await skopeoPush(image, `docker://${new URL(proxy.url).host}/team/app:v1`, alice);
    expect(push.code, push.stderr).toBe(0);
  });

  afterAll(async () => {
    await proxy?.close();
    await Promise.all([registry?.stop(), nginx?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('the first pull fills the cache from the origin; the second is served by nginx without reaching the origin', async () => {
    const host = new URL(proxy.url).host;
    const first = await skopeoPull(`docker://${host}/team/app:v1`, join(work, 'pull-1'), alice);
    expect(first.code, first.stderr).toBe(0);
    expect((await verifyPulledDir(join(work, 'pull-1'), image)).problems).toEqual([]);
    const blobs = [image.configDigest, ...image.layers.map((l) => l.digest)];
    expect(originHits.length).toBe(blobs.length);
    expect(originHits.every((h) => h.shield === SHIELD && h.authorization === undefined)).toBe(true);

    // A second pull: new signed URLs (new query), the same paths, all from nginx's cache.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const second = await skopeoPull(`docker://${host}/team/app:v1`, join(work, 'pull-2'), alice);
    expect(second.code, second.stderr).toBe(0);
    expect((await verifyPulledDir(join(work, 'pull-2'), image)).problems).toEqual([]);
    expect(originHits.length, await nginx.errorLog()).toBe(blobs.length);
  });

  it('nginx verifies the token at the edge: tampered or expired -> 403 there, the origin never asked', async () => {
    const layer = image.layers[1]!;
    const res = await request(`${proxy.url}/v2/team/app/blobs/${layer.digest}`, { headers: { Authorization: basic } });
    expect(res.status).toBe(307);
    const location = new URL(res.headers.location!);
    expect(location.host).toBe(`${nginx.host}:${nginx.port}`);
    const ok = await request(location);
    expect(ok.status).toBe(200);
    expect(ok.headers['docker-content-digest']).toBe(layer.digest);
    expect(ok.headers['x-cache-status']).toBe('HIT');
    const before = originHits.length;
    const tampered = new URL(location);
    const md5 = tampered.searchParams.get('md5')!;
    tampered.searchParams.set('md5', (md5[0] === 'A' ? 'B' : 'A') + md5.slice(1));
    expect((await request(tampered)).status).toBe(403);
    const expired = new URL(location);
    expired.searchParams.set('expires', String(Math.floor(Date.now() / 1_000) - 10));
    expect((await request(expired)).status).toBe(403);
    expect(originHits.length).toBe(before);
  });

  it('the origin verifies too, and answers only requests carrying the CDN\'s shield header', async () => {
    const layer = image.layers[0]!;
    const res = await request(`${proxy.url}/v2/team/app/blobs/${layer.digest}`, { headers: { Authorization: basic } });
    const location = new URL(res.headers.location!);
    const direct = new URL(`${location.pathname}${location.search}`, proxy.originUrls[0]);
    expect((await request(direct)).status).toBe(403);
    expect((await request(direct, { headers: { 'X-Origin-Secret': SHIELD } })).status).toBe(200);
    const tampered = new URL(direct);
    tampered.searchParams.set('expires', String(Number(tampered.searchParams.get('expires')) + 60));
    expect((await request(tampered, { headers: { 'X-Origin-Secret': SHIELD } })).status).toBe(403);
  });
});
