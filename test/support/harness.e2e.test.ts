/**
 * Proves the real-component harness works: distribution + skopeo with htpasswd
 * auth, a deterministic OCI image, Azurite with real SAS verification behind a
 * recording front, and copying the registry's blobs into Azure storage.
 */
import { createHash } from 'node:crypto';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
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
import { makeTokenSigner, startTokenServer } from './token-auth.js';
import type { RunningTokenServer } from './token-auth.js';

const hasRegistry = requireBinary('docker-registry');
const hasSkopeo = requireBinary('skopeo');
const has = hasRegistry && hasSkopeo;
const hasOpenssl = requireBinary('openssl');

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

describe('harness helpers', () => {
  it('requireBinary: false locally, throws on CI for a missing binary', () => {
    const saved = process.env.CI;
    try {
      delete process.env.CI;
      expect(requireBinary('rr-definitely-not-installed')).toBe(false);
      process.env.CI = 'true';
      expect(() => requireBinary('rr-definitely-not-installed')).toThrow(/CI is set/);
    } finally {
      if (saved === undefined) delete process.env.CI;
      else process.env.CI = saved;
    }
  });

  it('makeOciImage is deterministic', async () => {
    const spec = { layers: [{ size: 300_000, seed: 'x' }, { size: 10 }] };
    const a = await makeOciImage(join(work, 'det-a'), spec);
    const b = await makeOciImage(join(work, 'det-b'), spec);
    expect(b.manifestDigest).toBe(a.manifestDigest);
    expect(a.layers[0]?.size).toBeGreaterThan(300_000); // incompressible
  });
});

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

    // negative control: verifyPulledDir notices a corrupted layer
    const big = image.layers[0];
    if (!big) throw new Error('image has no layers');
    await appendFile(join(out, big.digest.slice('sha256:'.length)), 'x');
    const bad = await verifyPulledDir(out, image);
    expect(bad.ok).toBe(false);
    expect(bad.problems.join('\n')).toContain(big.digest);
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

describe.skipIf(!has || !hasOpenssl)('distribution (token auth) + skopeo', () => {
  let tokens: RunningTokenServer;
  let registry: RunningRegistry;
  let image: OciImage;

  beforeAll(async () => {
    tokens = await startTokenServer({ users: { [creds.username]: creds.password } });
    [registry, image] = await Promise.all([
      startRegistry({ auth: tokens.registryAuth }),
      makeOciImage(join(work, 'image-token'), { layers: [{ size: 50_000, seed: 'tok' }] }),
    ]);
  }, 20_000);

  afterAll(async () => {
    await registry?.stop();
    await tokens?.stop();
  }, 10_000);

  it('challenges with Bearer realm/service and verifies JWT signatures', async () => {
    const res = await request(`${registry.url}/v2/`);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toBe(`Bearer realm="${tokens.realm}",service="${tokens.service}"`);

    const good = tokens.signer.mint({ service: tokens.service, access: [] });
    expect((await request(`${registry.url}/v2/`, { headers: { authorization: `Bearer ${good}` } })).status).toBe(200);

    const other = await makeTokenSigner(tokens.issuer); // same issuer, untrusted key
    try {
      const forged = other.mint({ service: tokens.service, access: [] });
      expect((await request(`${registry.url}/v2/`, { headers: { authorization: `Bearer ${forged}` } })).status).toBe(
        401,
      );
    } finally {
      await other.cleanup();
    }
  });

  it('push and pull with credentials go through the token server; anonymous pull is denied', async () => {
    const ref = `docker://${registry.hostPort}/team/tok:v1`;
    const push = await skopeoPush(image, ref, creds, { timeoutMs: 15_000 });
    expect(push.code, push.stderr).toBe(0);
    const out = join(work, 'pulled-token');
    const pull = await skopeoPull(ref, out, creds, { timeoutMs: 15_000 });
    expect(pull.code, pull.stderr).toBe(0);
    expect((await verifyPulledDir(out, image)).problems).toEqual([]);
    expect(tokens.requests.some((r) => r.user === creds.username)).toBe(true);

    const anon = await skopeoPull(ref, join(work, 'anon-token'), undefined, { timeoutMs: 15_000 });
    expect(anon.code).not.toBe(0);
    expect(anon.stderr).toMatch(/unauthorized|authentication required|denied/i);
  }, 35_000);
});
