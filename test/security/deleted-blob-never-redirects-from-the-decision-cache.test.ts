/**
 * Prevents: a blob deleted through the proxy being handed out for the rest of the decision-cache
 * TTL. After `DELETE /v2/<name>/blobs/<digest>` succeeds upstream, distribution answers 404 for it;
 * a cached grant would keep redirecting to the (global, still present) storage object.
 * Invariant: a 2xx DELETE of a blob through this proxy drops the cached decisions for that blob in
 * that repository, for every caller; a manifest DELETE drops the repository's. Real distribution
 * 2.8.2 (htpasswd, delete enabled), real skopeo push, decision cache on (30 s default).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, type RunningProxy } from '../helpers/proxy-server.js';
import { STORAGE_ENDPOINT, testSigner } from '../helpers/token-registry.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { skopeoPush } from '../support/skopeo.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo');
const basic = (user: string) => `Basic ${Buffer.from(`${user}:pw`).toString('base64')}`;
const ALICE = basic('alice');
const BOB = basic('bob');

describe.skipIf(!has)('a blob deleted through the proxy is never redirected from the decision cache', () => {
  let work: string;
  let registry: RunningRegistry;
  let proxy: RunningProxy;
  let image: OciImage;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-delete-'));
    registry = await startRegistry({ auth: { htpasswd: { users: { alice: 'pw', bob: 'pw' } } } });
    image = await makeOciImage(join(work, 'image'), { layers: [{ size: 4096, seed: 'delete-a' }, { size: 4096, seed: 'delete-b' }] });
    const pushed = await skopeoPush(image, `docker://${registry.hostPort}/team/app:v1`, { username: 'alice', password: 'pw' });
    expect(pushed.code, pushed.stderr).toBe(0);
    proxy = await startProxy({ upstream: registry.url, signer: testSigner() });
  }, 60_000);

  afterAll(async () => {
    await proxy?.close();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  }, 15_000);

  const get = (digest: string, authorization: string) => request(`${proxy.url}/v2/team/app/blobs/${digest}`, { headers: { authorization } });
  const redirected = (res: { status: number; headers: { location?: string } }) =>
    res.status === 307 && res.headers.location!.startsWith(`${STORAGE_ENDPOINT}/registry/`);

  it('blob DELETE: the next GET of every caller gets distribution\'s 404, not a cached 307', async () => {
    const layer = image.layers[0]!.digest;
    expect(redirected(await get(layer, ALICE))).toBe(true);
    expect(redirected(await get(layer, BOB))).toBe(true);
    const deleted = await request(`${proxy.url}/v2/team/app/blobs/${layer}`, { method: 'DELETE', headers: { authorization: ALICE } });
    expect(deleted.status).toBe(202);
    for (const who of [ALICE, BOB]) {
      const res = await get(layer, who);
      expect(res.status).toBe(404);
      expect(res.headers.location).toBeUndefined();
      expect(JSON.parse(res.body.toString()).errors[0].code).toBe('BLOB_UNKNOWN');
    }
  });

  it('manifest DELETE drops the repository\'s cached grants: a blob deleted afterwards behind the proxy\'s back is not redirected', async () => {
    const config = image.configDigest;
    const layer = image.layers[1]!.digest;
    expect(redirected(await get(config, ALICE))).toBe(true);
    expect(redirected(await get(layer, BOB))).toBe(true);
    const deleted = await request(`${proxy.url}/v2/team/app/manifests/${image.manifestDigest}`, { method: 'DELETE', headers: { authorization: ALICE } });
    expect(deleted.status).toBe(202);
    // Distribution keeps the blobs linked after a manifest delete (until garbage collection), so
    // they are still redirected, after a fresh HEAD.
    expect(redirected(await get(layer, BOB))).toBe(true);
    // The config blob goes away directly at the registry: the proxy's cache had to be dropped
    // by the manifest delete, or this would still be a 307.
    const direct = await request(`${registry.url}/v2/team/app/blobs/${config}`, { method: 'DELETE', headers: { authorization: ALICE } });
    expect(direct.status).toBe(202);
    const res = await get(config, ALICE);
    expect(res.status).toBe(404);
    expect(res.headers.location).toBeUndefined();
  });

  it('a DELETE the upstream refuses drops nothing: an anonymous client cannot flush the cache', async () => {
    const layer = image.layers[1]!.digest;
    expect(redirected(await get(layer, ALICE))).toBe(true);
    const refused = await request(`${proxy.url}/v2/team/app/blobs/${layer}`, { method: 'DELETE' });
    expect(refused.status).toBe(401);
    // Made visible by deleting behind the proxy's back: the cached grant is still served (the
    // documented staleness of deletes that do not pass through this proxy, bounded by the TTL).
    expect((await request(`${registry.url}/v2/team/app/blobs/${layer}`, { method: 'DELETE', headers: { authorization: ALICE } })).status).toBe(202);
    expect(redirected(await get(layer, ALICE))).toBe(true);
  });
});
