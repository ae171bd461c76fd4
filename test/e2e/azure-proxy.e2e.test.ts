import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { silentLogger } from '../../src/log.js';
import { startAzurite, type RunningAzurite } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { copyRegistryBlobsToAzure, registryBlobKey } from '../support/seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo');
const alice = { username: 'alice', password: 'alice-pw' };
const basic = `Basic ${Buffer.from(`${alice.username}:${alice.password}`).toString('base64')}`;

/**
 * The whole product with real parts: distribution 2.8.2 (filesystem storage, htpasswd) behind the
 * proxy, Azurite (verifies SAS) on another loopback address as the shared storage, skopeo pushing
 * and pulling THROUGH the proxy.
 */
describe.skipIf(!has)('e2e: distribution + Azurite + skopeo through the proxy', () => {
  let registry: RunningRegistry;
  let azurite: RunningAzurite;
  let proxy: RunningServer;
  let work: string;
  let image: OciImage;
  let other: OciImage;
  let proxyHost: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-e2e-'));
    [registry, azurite] = await Promise.all([startRegistry({ auth: { htpasswd: { users: { [alice.username]: alice.password } } } }), startAzurite({ host: '127.0.0.2' })]);
    await azurite.containerClient('registry').createIfNotExists();
    const config = buildConfig({
      listen: '127.0.0.1:0',
      upstream: registry.url,
      signer: { azure: { account: azurite.account, accountKey: azurite.accountKey, container: 'registry', endpoint: azurite.endpoint } },
      expiry: '5m',
    });
    proxy = await startServer(config, silentLogger);
    proxyHost = new URL(proxy.url).host;
    [image, other] = await Promise.all([
      makeOciImage(join(work, 'img'), { layers: [{ size: 3 << 20, seed: 'e2e-a' }, { size: 20_000, seed: 'e2e-b' }] }),
      makeOciImage(join(work, 'other'), { layers: [{ size: 10_000, seed: 'e2e-other' }] }),
    ]);
  });

  afterAll(async () => {
    await proxy?.close();
    await Promise.all([registry?.stop(), azurite?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('skopeo pushes THROUGH the proxy (uploads pass through; Locations point at the proxy)', async () => {
    const push = await skopeoPush(image, `docker://${proxyHost}/team/app:v1`, alice);
    expect(push.code, push.stderr).toBe(0);
    const push2 = await skopeoPush(other, `docker://${proxyHost}/team/other:v1`, alice);
    expect(push2.code, push2.stderr).toBe(0);
    // Shared storage: the registry's blob tree as a deployment's bucket/container would hold it.
    const copied = await copyRegistryBlobsToAzure(registry.storageRoot, azurite.containerClient('registry'));
    expect(copied.length).toBeGreaterThanOrEqual(image.layers.length + 1);
  });

  it('an upload session Location points at the proxy, not the upstream', async () => {
    const res = await request(`${proxy.url}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: { Authorization: basic } });
    expect(res.status).toBe(202);
    expect(res.headers.location).toMatch(new RegExp(`^(http://${proxyHost.replace(/\./g, '\\.')})?/v2/team/app/blobs/uploads/`));
    expect(res.headers.location).not.toContain(registry.hostPort);
  });

  it('skopeo pulls THROUGH the proxy: layers come from Azurite via SAS, digests verified, storage never sees Authorization', async () => {
    azurite.requests.length = 0;
    const out = join(work, 'pulled');
    const pull = await skopeoPull(`docker://${proxyHost}/team/app:v1`, out, alice);
    expect(pull.code, pull.stderr).toBe(0);
    const verified = await verifyPulledDir(out, image);
    expect(verified.problems).toEqual([]);
    expect(verified.ok).toBe(true);

    const served = azurite.requests.filter((r) => r.method === 'GET' && r.status === 200);
    for (const digest of [...image.layers.map((l) => l.digest), image.configDigest]) {
      const key = registryBlobKey(digest);
      const hit = served.find((r) => r.url.startsWith(`/devstoreaccount1/registry/${key}?`));
      expect(hit, `Azurite served ${digest}`).toBeDefined();
      expect(new URLSearchParams(hit!.url.split('?')[1]).get('sig')).toBeTruthy();
    }
    expect(azurite.requests.every((r) => r.headers.authorization === undefined)).toBe(true);
  });

  it('the redirect: 307, absolute Location on another host, digest and no-store; Range resumes get a fresh redirect', async () => {
    const layer = image.layers[0]!;
    const res = await request(`${proxy.url}/v2/team/app/blobs/${layer.digest}`, { headers: { Authorization: basic, Range: 'bytes=1000-' } });
    expect(res.status).toBe(307);
    expect(res.headers['docker-content-digest']).toBe(layer.digest);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.headers['content-length']).toBe('0');
    expect(res.body.length).toBe(0);
    const location = new URL(res.headers.location!);
    expect(location.hostname).toBe('127.0.0.2');

    const ranged = await request(location, { headers: { Range: 'bytes=1000-' } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers['content-range']).toBe(`bytes 1000-${layer.size - 1}/${layer.size}`);
    const full = await request(location);
    expect(full.status).toBe(200);
    expect(`sha256:${createHash('sha256').update(full.body).digest('hex')}`).toBe(layer.digest);
    expect(full.headers['content-encoding']).toBeUndefined();
  });

  it('Azurite rejects a tampered SAS from our Location with 403 (the signature is real), without a registry-style challenge', async () => {
    const res = await request(`${proxy.url}/v2/team/app/blobs/${image.layers[1]!.digest}`, { headers: { Authorization: basic } });
    expect(res.status).toBe(307);
    const location = new URL(res.headers.location!);
    const sig = location.searchParams.get('sig')!;
    location.searchParams.set('sig', (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1));
    const tampered = await request(location);
    expect(tampered.status).toBe(403);
    expect(tampered.headers['www-authenticate']).toBeUndefined();
    // And pointing the signature at another blob fails too: one URL, one object.
    const moved = new URL(res.headers.location!);
    moved.pathname = `/devstoreaccount1/registry/${registryBlobKey(image.layers[0]!.digest)}`;
    expect((await request(moved)).status).toBe(403);
  });

  it('anonymous pull gets the upstream 401 challenge and no redirect', async () => {
    const res = await request(`${proxy.url}/v2/team/app/blobs/${image.layers[0]!.digest}`);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Basic realm=/);
    expect(res.headers.location).toBeUndefined();
    expect(JSON.parse(res.body.toString()).errors[0].code).toBe('UNAUTHORIZED');
    const pull = await skopeoPull(`docker://${proxyHost}/team/app:v1`, join(work, 'anon'));
    expect(pull.code).not.toBe(0);
  });

  it('cross-repository: a blob of team/app requested via team/other gets the upstream 404, never a 307', async () => {
    const res = await request(`${proxy.url}/v2/team/other/blobs/${image.layers[0]!.digest}`, { headers: { Authorization: basic } });
    expect(res.status).toBe(404);
    expect(res.headers.location).toBeUndefined();
    expect(JSON.parse(res.body.toString()).errors[0].code).toBe('BLOB_UNKNOWN');
  });

  it('HEAD blob passes through with the real length and digest (never redirected)', async () => {
    const layer = image.layers[0]!;
    const res = await request(`${proxy.url}/v2/team/app/blobs/${layer.digest}`, { method: 'HEAD', headers: { Authorization: basic } });
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe(String(layer.size));
    expect(res.headers['docker-content-digest']).toBe(layer.digest);
  });

  it('manifests, tags and /v2/ pass through unchanged', async () => {
    const direct = await request(`${registry.url}/v2/team/app/manifests/v1`, { headers: { Authorization: basic, Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const viaProxy = await request(`${proxy.url}/v2/team/app/manifests/v1`, { headers: { Authorization: basic, Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    expect(viaProxy.status).toBe(200);
    expect(Buffer.compare(viaProxy.body, direct.body)).toBe(0);
    expect(viaProxy.headers['docker-content-digest']).toBe(image.manifestDigest);
    const tags = await request(`${proxy.url}/v2/team/app/tags/list`, { headers: { Authorization: basic } });
    expect(JSON.parse(tags.body.toString())).toEqual({ name: 'team/app', tags: ['v1'] });
    expect((await request(`${proxy.url}/v2/`, { headers: { Authorization: basic } })).status).toBe(200);
  });

  it('a blob missing from storage still fails safely: the client gets a storage 404, never someone else’s bytes', async () => {
    // Simulates storage lagging behind the registry (not yet replicated).
    const layer = image.layers[1]!;
    await azurite.containerClient('registry').deleteBlob(registryBlobKey(layer.digest));
    const res = await request(`${proxy.url}/v2/team/app/blobs/${layer.digest}`, { headers: { Authorization: basic } });
    expect(res.status).toBe(307);
    const fetched = await request(res.headers.location!);
    expect(fetched.status).toBe(404);
    expect(fetched.headers['www-authenticate']).toBeUndefined();
  });
});
