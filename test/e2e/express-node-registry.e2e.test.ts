import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAzurite, type RunningAzurite } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { supervise, type Supervised } from '../support/child.js';
import { request, waitFor } from '../support/http.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { freePort } from '../support/ports.js';
import { registryBlobKey } from '../support/seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';
import { ROOT } from '../helpers/package.js';

const has = requireBinary('skopeo');
const alice = { username: 'alice', password: 'alice-pw' };
const bob = { username: 'bob', password: 'bob-pw' };
const basic = (c: { username: string; password: string }) => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;

/**
 * examples/express-node-registry run the way its README says (`node server.js` with env), blobs in
 * Azurite (which verifies every SAS), skopeo pushing to it and pulling from it.
 */
describe.skipIf(!has)('example: express-node-registry (embedded mode) with Azurite and skopeo', () => {
  let azurite: RunningAzurite;
  let registry: Supervised;
  let base: string;
  let hostPort: string;
  let work: string;
  let image: OciImage;
  let other: OciImage;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-node-registry-'));
    azurite = await startAzurite({ host: '127.0.0.2' });
    const port = await freePort();
    hostPort = `127.0.0.1:${port}`;
    base = `http://${hostPort}`;
    registry = supervise(process.execPath, [join(ROOT, 'examples/express-node-registry/server.js')], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH,
        LISTEN: hostPort,
        AZURE_STORAGE_ACCOUNT: azurite.account,
        AZURE_STORAGE_KEY: azurite.accountKey,
        // The registry stores through Azurite directly; clients are sent to the recording front.
        AZURE_STORAGE_ENDPOINT: azurite.directEndpoint,
        AZURE_REDIRECT_ENDPOINT: azurite.endpoint,
        REGISTRY_USERS: JSON.stringify({ alice: { password: alice.password, repositories: ['team/*'] }, bob: { password: bob.password, repositories: ['bob/*'] } }),
      },
    });
    await waitFor(async () => (await request(`${base}/v2/`, { timeoutMs: 1_000 })).status === 401, {
      timeoutMs: 20_000,
      label: 'node registry /v2/',
      describe: () => registry.output(),
      giveUp: () => (registry.child.exitCode !== null ? `exited: ${registry.output()}` : undefined),
    });
    [image, other] = await Promise.all([
      makeOciImage(join(work, 'img'), { layers: [{ size: 1 << 20, seed: 'node-reg-a' }, { size: 5_000, seed: 'node-reg-b' }] }),
      makeOciImage(join(work, 'other'), { layers: [{ size: 3_000, seed: 'node-reg-other' }] }),
    ]);
  });

  afterAll(async () => {
    await registry?.stop();
    await azurite?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('skopeo pushes to it (chunked uploads, manifests, tags)', async () => {
    const push = await skopeoPush(image, `docker://${hostPort}/team/app:v1`, alice);
    expect(push.code, `${push.stderr}\n${registry.output()}`).toBe(0);
    const push2 = await skopeoPush(other, `docker://${hostPort}/team/other:v1`, alice);
    expect(push2.code, push2.stderr).toBe(0);
    // Bytes are in Azure under distribution's layout, linked into the repository.
    const props = await azurite.containerClient('registry').getBlobClient(registryBlobKey(image.layers[0]!.digest)).getProperties();
    expect(props.contentLength).toBe(image.layers[0]!.size);
  });

  it('skopeo pulls from it: every blob GET is a 307 to an Azurite SAS URL, digests verified, storage never sees Authorization', async () => {
    azurite.requests.length = 0;
    const out = join(work, 'pulled');
    const pull = await skopeoPull(`docker://${hostPort}/team/app:v1`, out, alice);
    expect(pull.code, `${pull.stderr}\n${registry.output()}`).toBe(0);
    const verified = await verifyPulledDir(out, image);
    expect(verified.problems).toEqual([]);
    expect(verified.manifestMatches).toBe(true);
    for (const digest of [...image.layers.map((l) => l.digest), image.configDigest]) {
      const hit = azurite.requests.find((r) => r.method === 'GET' && r.status === 200 && r.url.startsWith(`/devstoreaccount1/registry/${registryBlobKey(digest)}?`));
      expect(hit, `storage served ${digest}`).toBeDefined();
      expect(new URLSearchParams(hit!.url.split('?')[1]).get('sp')).toBe('r');
    }
    expect(azurite.requests.every((r) => r.headers.authorization === undefined)).toBe(true);
  });

  it('the redirect itself: 307, storage Location, digest, no-store, no body; HEAD is answered locally', async () => {
    const layer = image.layers[0]!;
    const res = await request(`${base}/v2/team/app/blobs/${layer.digest}`, { headers: { Authorization: basic(alice) } });
    expect(res.status).toBe(307);
    expect(new URL(res.headers.location!).host).toBe(new URL(azurite.endpoint).host);
    expect(res.headers['docker-content-digest']).toBe(layer.digest);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body.length).toBe(0);
    const head = await request(`${base}/v2/team/app/blobs/${layer.digest}`, { method: 'HEAD', headers: { Authorization: basic(alice) } });
    expect(head.status).toBe(200);
    expect(head.headers.location).toBeUndefined();
    expect(head.headers['content-length']).toBe(String(layer.size));
    expect(head.headers['docker-content-digest']).toBe(layer.digest);
  });

  it('no redirect without access: anonymous gets 401 + challenge, another user gets 403', async () => {
    const digest = image.layers[0]!.digest;
    const anon = await request(`${base}/v2/team/app/blobs/${digest}`);
    expect(anon.status).toBe(401);
    expect(anon.headers['www-authenticate']).toBe('Basic realm="registry"');
    expect(anon.headers.location).toBeUndefined();
    const other = await request(`${base}/v2/team/app/blobs/${digest}`, { headers: { Authorization: basic(bob) } });
    expect(other.status).toBe(403);
    expect(other.headers.location).toBeUndefined();
    const wrong = await request(`${base}/v2/team/app/blobs/${digest}`, { headers: { Authorization: basic({ ...alice, password: 'nope' }) } });
    expect(wrong.status).toBe(401);
    expect((await skopeoPull(`docker://${hostPort}/team/app:v1`, join(work, 'bob'), bob)).code).not.toBe(0);
  });

  it('cross-repository: a blob of team/app asked for via team/other is 404 BLOB_UNKNOWN, never a 307', async () => {
    const res = await request(`${base}/v2/team/other/blobs/${image.layers[0]!.digest}`, { headers: { Authorization: basic(alice) } });
    expect(res.status).toBe(404);
    expect(res.headers.location).toBeUndefined();
    expect(JSON.parse(res.body.toString()).errors[0].code).toBe('BLOB_UNKNOWN');
  });

  it('signer down: the blob GET falls through to the registry, which streams it from storage (same bytes, same digest)', async () => {
    // A second instance of the example in this process, on the same container, with a failing signer.
    const modulePath = join(ROOT, 'examples/express-node-registry/registry.js');
    const { createRegistry } = (await import(modulePath)) as { createRegistry: (o: object) => Promise<{ app: Express; close(): Promise<void> }> };
    const failing = { name: 'down', sign: () => Promise.reject(new Error('storage credentials expired')) };
    const fallback = await createRegistry({ container: azurite.containerClient('registry'), signer: failing });
    const server = fallback.app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const layer = image.layers[1]!;
      const res = await request(`http://127.0.0.1:${port}/v2/team/app/blobs/${layer.digest}`);
      expect(res.status).toBe(200);
      expect(res.headers.location).toBeUndefined();
      expect(res.headers['docker-content-digest']).toBe(layer.digest);
      expect(res.body.length).toBe(layer.size);
      expect(`sha256:${createHash('sha256').update(res.body).digest('hex')}`).toBe(layer.digest);
    } finally {
      server.close();
      await fallback.close();
    }
  });

  it('tags, manifests by digest, a bad digest on upload', async () => {
    const tags = await request(`${base}/v2/team/app/tags/list`, { headers: { Authorization: basic(alice) } });
    expect(JSON.parse(tags.body.toString())).toEqual({ name: 'team/app', tags: ['v1'] });
    const manifest = await request(`${base}/v2/team/app/manifests/${image.manifestDigest}`, { headers: { Authorization: basic(alice) } });
    expect(manifest.status).toBe(200);
    expect(manifest.headers['docker-content-digest']).toBe(image.manifestDigest);
    expect(manifest.headers['content-type']).toBe('application/vnd.oci.image.manifest.v1+json');

    const start = await request(`${base}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: { Authorization: basic(alice) } });
    expect(start.status).toBe(202);
    const put = await request(new URL(`${start.headers.location!}?digest=sha256:${'0'.repeat(64)}`, base), { method: 'PUT', headers: { Authorization: basic(alice) }, body: 'not that' });
    expect(put.status).toBe(400);
    expect(JSON.parse(put.body.toString()).errors[0].code).toBe('DIGEST_INVALID');
  });
});
