/**
 * Proves the real-component harness works: distribution + skopeo with htpasswd
 * auth, a deterministic OCI image, Azurite with real SAS verification behind a
 * recording front, and copying the registry's blobs into Azure storage.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAzurite } from './azurite.js';
import type { RunningAzurite } from './azurite.js';
import { requireBinary } from './binaries.js';
import { request } from './http.js';
import { makeOciImage } from './oci-image.js';
import type { OciImage } from './oci-image.js';
import { startRegistry } from './registry.js';
import type { RunningRegistry } from './registry.js';
import { copyRegistryBlobsToAzure, registryBlobKey } from './seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from './skopeo.js';

const hasRegistry = requireBinary('docker-registry');
const hasSkopeo = requireBinary('skopeo');
const has = hasRegistry && hasSkopeo;

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const CONTAINER = 'registry';
const creds = { username: 'alice', password: 'correct horse battery staple' };

let work: string;
let azurite: RunningAzurite;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'rr-harness-'));
  azurite = await startAzurite();
}, 30_000);

afterAll(async () => {
  await azurite?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, 15_000);

describe('Azurite behind the recording front', () => {
  const blobName = 'sas-check/hello.bin';
  const content = Buffer.from('hello from azurite\n');

  beforeAll(async () => {
    const c = azurite.containerClient('sascheck');
    await c.createIfNotExists();
    await c.getBlockBlobClient(blobName).uploadData(content);
  }, 15_000);

  it('serves a blob for a valid SAS and rejects tampered, wrong-key and expired SAS with 403', async () => {
    azurite.requests.length = 0;
    const url = azurite.sasUrl('sascheck', blobName);
    expect(new URL(url).host).toBe(`${azurite.host}:${azurite.port}`);

    const ok = await request(url);
    expect(ok.status).toBe(200);
    expect(ok.body.equals(content)).toBe(true);

    const u = new URL(url);
    const sig = u.searchParams.get('sig') ?? '';
    u.searchParams.set('sig', (sig.startsWith('A') ? 'B' : 'A') + sig.slice(1));
    expect((await request(u)).status).toBe(403);

    const wrongKey = azurite.sasUrl('sascheck', blobName, {
      accountKey: Buffer.alloc(64, 7).toString('base64'),
    });
    expect((await request(wrongKey)).status).toBe(403);

    const expired = azurite.sasUrl('sascheck', blobName, {
      startsOn: new Date(Date.now() - 3_600_000),
      expiresOn: new Date(Date.now() - 60_000),
    });
    expect((await request(expired)).status).toBe(403);

    // unsigned access to a private container is refused as well
    expect((await request(azurite.blobUrl('sascheck', blobName))).status).not.toBe(200);

    expect(azurite.requests.map((r) => [r.method, r.status])).toEqual([
      ['GET', 200],
      ['GET', 403],
      ['GET', 403],
      ['GET', 403],
      ['GET', azurite.requests[4]?.status],
    ]);
    expect(azurite.requests[0]?.url).toContain('sig=');
    expect(azurite.requests.every((r) => r.headers.authorization === undefined)).toBe(true);
  });
});

describe.skipIf(!has)('distribution (htpasswd) + skopeo + Azure copy', () => {
  let registry: RunningRegistry;
  let image: OciImage;
  const repoRef = (): string => `docker://${registry.hostPort}/team/app:v1`;

  beforeAll(async () => {
    [registry, image] = await Promise.all([
      startRegistry({ auth: { htpasswd: { users: { [creds.username]: creds.password } } } }),
      makeOciImage(join(work, 'image'), {
        layers: [
          { size: 2 * 1024 * 1024, seed: 'big' },
          { size: 1000, seed: 'small' },
        ],
      }),
    ]);
  }, 20_000);

  afterAll(async () => {
    await registry?.stop();
  }, 10_000);

  it('answers /v2/ with a Basic challenge for anonymous clients', async () => {
    const res = await request(`${registry.url}/v2/`);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Basic /);
  });

  it('pushes the image with skopeo using credentials', async () => {
    const res = await skopeoPush(image, repoRef(), creds, { timeoutMs: 20_000 });
    expect(res.stderr).not.toMatch(/level=(error|fatal)/);
    expect(res.code, res.stderr).toBe(0);
  }, 25_000);

  it('pulls it back with credentials; every digest matches', async () => {
    const out = join(work, 'pulled');
    const res = await skopeoPull(repoRef(), out, creds, { timeoutMs: 20_000 });
    expect(res.code, res.stderr).toBe(0);
    const v = await verifyPulledDir(out, image);
    expect(v.problems).toEqual([]);
    expect(v.manifestMatches).toBe(true);
  }, 25_000);

  it('refuses an anonymous pull (401)', async () => {
    const res = await skopeoPull(repoRef(), join(work, 'anon'), undefined, { timeoutMs: 15_000 });
    expect(res.code).not.toBe(0);
    expect(res.timedOut).toBe(false);
    expect(res.stderr).toMatch(/401|unauthorized|authentication required/i);
  }, 20_000);

  it('copies the registry blobs into Azurite and serves a layer via SAS', async () => {
    const copied = await copyRegistryBlobsToAzure(registry.storageRoot, azurite.containerClient(CONTAINER));
    const names = copied.map((c) => c.name);
    const big = image.layers[0];
    if (!big) throw new Error('image has no layers');
    for (const d of [...image.layers.map((l) => l.digest), image.configDigest, image.manifestDigest]) {
      expect(names).toContain(registryBlobKey(d));
    }
    expect(names.every((n) => n.startsWith('docker/registry/v2/blobs/sha256/'))).toBe(true);

    azurite.requests.length = 0;
    const key = registryBlobKey(big.digest);
    const url = azurite.sasUrl(CONTAINER, key);
    const res = await request(url);
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(big.size);
    expect(sha256(res.body)).toBe(big.digest);
    expect(res.headers['content-encoding']).toBeUndefined();

    const bad = new URL(url);
    bad.searchParams.set('sig', Buffer.alloc(32).toString('base64'));
    const denied = await request(bad);
    expect(denied.status).toBe(403);
    expect(denied.headers['www-authenticate']).toBeUndefined();

    expect(azurite.requests).toHaveLength(2);
    expect(azurite.requests.map((r) => r.url.split('?')[0])).toEqual([
      `/devstoreaccount1/${CONTAINER}/${key}`,
      `/devstoreaccount1/${CONTAINER}/${key}`,
    ]);
    expect(azurite.requests.map((r) => r.status)).toEqual([200, 403]);
    expect(azurite.requests.some((r) => r.headers.authorization !== undefined)).toBe(false);
  }, 20_000);
});
