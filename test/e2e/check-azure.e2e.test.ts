/**
 * `registry-redirect check` against Azure Blob storage (Azurite, which verifies SAS for real) with
 * distribution as the upstream, plus the argument handling of the command.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCommand } from '../../src/server/check.js';
import { AZURITE_ACCOUNT_KEY, startAzurite, type RunningAzurite } from '../support/azurite.js';
import { azureProxyYaml } from '../helpers/constants.js';
import { requireBinary } from '../support/binaries.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { copyRegistryBlobsToAzure } from '../support/seed-storage.js';
import { skopeoPush } from '../support/skopeo.js';
import { startTokenServer, type RunningTokenServer } from '../support/token-auth.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo');
const hasOpenssl = requireBinary('openssl');
const creds = { username: 'bob', password: 'hunter2 but longer' };

const azureYaml = (upstream: string, endpoint: string, extra = ''): string => azureProxyYaml({ upstream, endpoint, extra });

/**
 * A TCP relay from the first free port of `ports` on `host` to `targetPort` on the same host: puts
 * a real server behind a port that fetch refuses (the Fetch standard's "bad ports").
 */
async function relay(host: string, ports: number[], targetPort: number): Promise<{ port: number; connections(): number; close(): Promise<void> }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(targetPort, host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  for (const port of ports) {
    const listening = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen({ host, port, exclusive: true }, () => resolve(true));
    });
    if (!listening) continue;
    return {
      port,
      connections: () => connections,
      close: () =>
        new Promise((resolve) => {
          for (const s of sockets) s.destroy();
          server.close(() => resolve());
        }),
    };
  }
  throw new Error(`relay: none of ${ports.join(', ')} is free on ${host}`);
}

describe.skipIf(!has)('registry-redirect check against Azurite', () => {
  let work: string;
  let registry: RunningRegistry;
  let azurite: RunningAzurite;
  let image: OciImage;
  let config: string;
  const env = { AZURE_STORAGE_KEY: AZURITE_ACCOUNT_KEY };
  const lines: string[] = [];
  const run = async (args: string[], e: NodeJS.ProcessEnv = env) => {
    lines.length = 0;
    const code = await checkCommand(args, (l) => void lines.push(l), e);
    return { code, text: lines.join('\n') };
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-check-azure-'));
    [registry, azurite, image] = await Promise.all([
      startRegistry({ auth: { htpasswd: { users: { [creds.username]: creds.password } } } }),
      startAzurite(),
      makeOciImage(join(work, 'image'), { layers: [{ size: 70_000, seed: 'check-azure' }] }),
    ]);
    const push = await skopeoPush(image, `docker://${registry.hostPort}/team/app:v1`, creds, { timeoutMs: 20_000 });
    if (push.code !== 0) throw new Error(push.stderr);
    await copyRegistryBlobsToAzure(registry.storageRoot, azurite.containerClient('registry'));
    config = join(work, 'azure.yaml');
    await writeFile(config, azureYaml(registry.url, azurite.endpoint));
  }, 40_000);

  afterAll(async () => {
    await registry?.stop();
    await azurite?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  }, 20_000);

  it('passes: Azurite accepts the SAS and the object has the size the registry reports', async () => {
    const layer = image.layers[0]!;
    azurite.requests.length = 0;
    const r = await run(['--config', config, '--repository', 'team/app', '--digest', layer.digest, '--creds', `${creds.username}:${creds.password}`]);
    expect(r.text).toMatch(new RegExp(`^ok    signer \\(azure\\): storage accepted the signature: GET ${azurite.endpoint}/registry/docker/registry/v2/blobs/sha256/.*\\?REDACTED -> 206, ${layer.size} bytes, as the registry says \\(valid 20m\\)$`));
    expect(r.code).toBe(0);
    expect(azurite.requests).toHaveLength(1);
    expect(azurite.requests[0]).toMatchObject({ method: 'GET', status: 206, headers: { range: 'bytes=0-0' } });
    expect(azurite.requests[0]!.headers.authorization).toBeUndefined();
  });

  it('fails when Azure refuses the SAS (wrong account key)', async () => {
    const wrongKey = Buffer.alloc(64, 7).toString('base64');
    const r = await run(['--config', config, '--repository', 'team/app', '--digest', image.layers[0]!.digest, '--size', String(image.layers[0]!.size)], { AZURE_STORAGE_KEY: wrongKey });
    expect(r.code).toBe(1);
    expect(r.text).toMatch(/^FAIL {2}signer \(azure\): storage refused the signature for .*: 403 (AuthenticationFailed|AuthorizationFailure): Server failed to authenticate the request/);
  });

  it('fails for a blob that is not in the container, and for a size that does not match', async () => {
    const missing = await run(['--config', config, '--repository', 'team/app', '--digest', `sha256:${'1'.repeat(64)}`, '--size', '10']);
    expect(missing.code).toBe(1);
    expect(missing.text).toMatch(/^FAIL {2}signer \(azure\): storage has no object at .*: 404 BlobNotFound/);
    const size = await run(['--config', config, '--repository', 'team/app', '--digest', image.layers[0]!.digest, '--size', '5']);
    expect(size.code).toBe(1);
    expect(size.text).toMatch(new RegExp(`is ${image.layers[0]!.size} bytes but the registry says 5; check rootDirectory and layout`));
  });

  it('fails when the upstream answers 404 for the blob in that repository (clients would get 404 too)', async () => {
    const layer = image.layers[0]!;
    const r = await run(['--config', config, '--repository', 'team/nope', '--digest', layer.digest, '--creds', `${creds.username}:${creds.password}`]);
    expect(r.text).toMatch(/^FAIL {2}signer \(azure\): the upstream answered 404 for team\/nope@sha256:[0-9a-f]{64}: no such blob in this repository/);
    expect(r.code).toBe(1);
  });

  it('without --digest proves the credentials: a missing object answers 404 BlobNotFound', async () => {
    azurite.requests.length = 0;
    const r = await run(['--config', config]);
    expect(r.text).toMatch(/^ok {4}signer \(azure\): signed GET .*; storage at .* accepted the signature \(a missing object answered 404 BlobNotFound/);
    expect(r.code).toBe(0);
    expect(azurite.requests).toHaveLength(1);
    const wrong = await run(['--config', config], { AZURE_STORAGE_KEY: Buffer.alloc(64, 7).toString('base64') });
    expect(wrong.text).toMatch(/^FAIL {2}signer \(azure\): storage at .* refused the signed URL: 403/);
    expect(wrong.code).toBe(1);
  });

  it('checks every named signer on its own line; one broken signer fails the run', async () => {
    const named = join(work, 'named.yaml');
    const block = (container: string) => `{ azure: { account: devstoreaccount1, accountKey: "\${AZURE_STORAGE_KEY}", container: ${container}, endpoint: ${azurite.endpoint} } }`;
    await writeFile(named, azureYaml(registry.url, azurite.endpoint, `signers:\n  mirror: ${block('registry')}\n  stale: ${block('elsewhere')}\n`));
    const layer = image.layers[0]!;
    const r = await run(['--config', named, '--repository', 'team/app', '--digest', layer.digest, '--size', String(layer.size)]);
    const lines = r.text.split('\n');
    expect(lines[0]).toMatch(/^ok {4}signer \(azure\): storage accepted the signature/);
    expect(lines[1]).toMatch(/^ok {4}signers\.mirror \(azure\): storage accepted the signature/);
    expect(lines[2]).toMatch(/^FAIL {2}signers\.stale \(azure\): storage has no object at .*: 404/);
    expect(r.code).toBe(1);
  });

  it('works with the upstream and storage on Fetch "bad ports" (10080, 6666), where serve works too', async () => {
    const upstream = await relay('127.0.0.1', [10080, 6000, 6665, 6667], registry.port);
    const storage = await relay('127.0.0.2', [6666, 6668, 6669, 6697], Number(new URL(azurite.endpoint).port));
    try {
      // The ports really are ones fetch refuses.
      await expect(fetch(`http://127.0.0.1:${upstream.port}/v2/`)).rejects.toThrow(/fetch failed/);
      const bad = join(work, 'bad-ports.yaml');
      await writeFile(bad, azureYaml(`http://127.0.0.1:${upstream.port}`, `http://127.0.0.2:${storage.port}/devstoreaccount1`));
      const layer = image.layers[0]!;
      const r = await run(['--config', bad, '--repository', 'team/app', '--digest', layer.digest, '--creds', `${creds.username}:${creds.password}`]);
      expect(r.text).toMatch(new RegExp(`^ok {4}signer \\(azure\\): storage accepted the signature: GET http://127\\.0\\.0\\.2:${storage.port}/.* -> 206, ${layer.size} bytes, as the registry says`));
      expect(r.code).toBe(0);
      expect(upstream.connections()).toBeGreaterThan(0);
      expect(storage.connections()).toBe(1);
    } finally {
      await Promise.all([upstream.close(), storage.close()]);
    }
  });

  it('names a missing environment variable as a config failure', async () => {
    const r = await run(['--config', config], {});
    expect(r.code).toBe(1);
    expect(r.text).toMatch(/^FAIL {2}config .*azure\.yaml: signer\.azure\.accountKey: environment variable AZURE_STORAGE_KEY is not set/);
  });

  describe.skipIf(!hasOpenssl)('with a registry using Docker token auth', () => {
    let tokens: RunningTokenServer;
    let tokenRegistry: RunningRegistry;
    let tokenConfig: string;

    beforeAll(async () => {
      tokens = await startTokenServer({ users: { [creds.username]: creds.password } });
      tokenRegistry = await startRegistry({ auth: tokens.registryAuth });
      const push = await skopeoPush(image, `docker://${tokenRegistry.hostPort}/team/tok:v1`, creds, { timeoutMs: 20_000 });
      if (push.code !== 0) throw new Error(push.stderr);
      tokenConfig = join(work, 'azure-token.yaml');
      await writeFile(tokenConfig, azureYaml(tokenRegistry.url, azurite.endpoint));
    }, 30_000);
    afterAll(async () => {
      await tokenRegistry?.stop();
      await tokens?.stop();
    });

    it('gets a pull token for the repository from the realm and compares the size', async () => {
      const layer = image.layers[0]!;
      tokens.requests.length = 0;
      const r = await run(['--config', tokenConfig, '--repository', 'team/tok', '--digest', layer.digest, '--creds', `${creds.username}:${creds.password}`]);
      expect(r.text).toMatch(new RegExp(`^ok {4}signer \\(azure\\): storage accepted the signature: .* -> 206, ${layer.size} bytes, as the registry says`));
      expect(r.code).toBe(0);
      expect(tokens.requests).toHaveLength(1);
      expect(tokens.requests[0]).toMatchObject({ user: creds.username, granted: [{ type: 'repository', name: 'team/tok', actions: ['pull'] }] });
    });
  });

  it.each([
    [[], /--config FILE\.yaml is required/],
    [['--config', 'x.yaml', '--repository', 'team/app'], /--repository and --digest go together/],
    [['--config', 'x.yaml', '--repository', 'Team', '--digest', `sha256:${'1'.repeat(64)}`], /--repository "Team" is not a repository name/],
    [['--config', 'x.yaml', '--repository', 'team/app', '--digest', 'sha256:abc'], /--digest "sha256:abc" is not a sha256/],
    [['--config', 'x.yaml', '--repository', 'team/app', '--digest', `sha256:${'1'.repeat(64)}`, '--size', 'lots'], /--size "lots" is not a number of bytes/],
    [['--config', 'x.yaml', '--repository', 'team/app', '--digest', `sha256:${'1'.repeat(64)}`, '--size', '-1'], /Option '--size' argument is ambiguous/],
    [['--config', 'x.yaml', '--size', '3'], /--size needs --repository and --digest/],
  ])('usage error %j exits 2 with the usage', async (args, message) => {
    const r = await run(args);
    expect(r.code).toBe(2);
    expect(r.text).toMatch(message);
    expect(r.text).toContain('Usage: registry-redirect check --config FILE.yaml');
  });
});
