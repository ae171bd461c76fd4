import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { ROOT, runNode } from '../helpers/package.js';
import { startAzurite, type RunningAzurite } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { registryBlobKey } from '../support/seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo');
const SEED = join(ROOT, 'scripts/seed-azurite.mjs');

/**
 * The Azurite recipe (examples/azurite/README.md), command by command: push to a filesystem
 * registry, `node scripts/seed-azurite.mjs --from <rootdirectory>`, then pull through the proxy with
 * the azure signer: every blob comes from Azurite.
 */
describe.skipIf(!has)('scripts/seed-azurite.mjs: the copy step of the Azurite recipe', () => {
  let registry: RunningRegistry;
  let azurite: RunningAzurite;
  let proxy: RunningServer;
  let work: string;
  let image: OciImage;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-seed-'));
    [registry, azurite] = await Promise.all([startRegistry(), startAzurite({ host: '127.0.0.2' })]);
    image = await makeOciImage(join(work, 'img'), { layers: [{ size: 500_000, seed: 'seed-a' }] });
    const push = await skopeoPush(image, `docker://${registry.hostPort}/demo/hello:v1`);
    expect(push.code, push.stderr).toBe(0);
    proxy = await startServer(
      buildConfig({ listen: '127.0.0.1:0', upstream: registry.url, signer: { azure: { account: azurite.account, accountKey: azurite.accountKey, container: 'registry', endpoint: azurite.endpoint } } }),
      silentLogger,
    );
  });

  afterAll(async () => {
    await proxy?.close();
    await Promise.all([registry?.stop(), azurite?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('copies every blob (creating the container), skips them on a second run, and the pull through the proxy is served by Azurite', async () => {
    const first = await runNode([SEED, '--from', registry.storageRoot, '--endpoint', azurite.directEndpoint], ROOT, { ...process.env });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/: 3 blobs copied, 0 already there/);
    const again = await runNode([SEED, '--from', registry.storageRoot, '--endpoint', azurite.directEndpoint], ROOT, { ...process.env });
    expect(again.stdout).toMatch(/: 0 blobs copied, 3 already there/);
    for (const digest of [image.configDigest, image.layers[0]!.digest]) {
      expect(await azurite.containerClient('registry').getBlobClient(registryBlobKey(digest)).exists(), digest).toBe(true);
    }

    azurite.requests.length = 0;
    const out = join(work, 'pulled');
    const pull = await skopeoPull(`docker://${new URL(proxy.url).host}/demo/hello:v1`, out);
    expect(pull.code, pull.stderr).toBe(0);
    expect((await verifyPulledDir(out, image)).problems).toEqual([]);
    const served = azurite.requests.filter((r) => r.method === 'GET' && r.status === 200).map((r) => r.url.split('?')[0]);
    expect(served).toContain(`/devstoreaccount1/registry/${registryBlobKey(image.layers[0]!.digest)}`);
  });

  it('says how to call it without --from', async () => {
    const run = await runNode([SEED], ROOT, { ...process.env });
    expect(run.code).toBe(2);
    expect(run.stdout).toMatch(/Usage: node scripts\/seed-azurite\.mjs --from REGISTRY_ROOTDIRECTORY/);
  });
});
