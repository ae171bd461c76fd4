/**
 * An https upstream with a private CA: distribution 2.8.2 serving `http.tls` with a certificate
 * from a CA made by openssl. With `upstreamTLS.ca` skopeo pushes and pulls through the proxy;
 * without it every request fails closed with a 502 whose `detail` names the TLS error (on
 * pass-through and on blob GETs, whose authorizing HEAD is what fails). mTLS to the upstream
 * (`http.tls.clientcas`) with `upstreamTLS.certificate/key`, and `insecureSkipVerify`.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCommand } from '../../src/server/check.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { silentLogger } from '../../src/log.js';
import { pushBlob } from '../helpers/registry-api.js';
import { recordingLogger, startProxy } from '../helpers/proxy-server.js';
import { STORAGE_ENDPOINT, testSigner } from '../helpers/token-registry.js';
import { startAzurite, type RunningAzurite } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeOciImage } from '../support/oci-image.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { copyRegistryBlobsToAzure } from '../support/seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';
import { makeSelfSigned, makeTestCa, type TestCa } from '../support/tls.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo') && requireBinary('openssl');
const alice = { username: 'alice', password: 'alice-pw' };
const basic = `Basic ${Buffer.from(`${alice.username}:${alice.password}`).toString('base64')}`;

describe.skipIf(!has)('https upstream with a private CA (upstreamTLS)', () => {
  let ca: TestCa;
  let clientCa: TestCa;
  let registry: RunningRegistry;
  let mtlsRegistry: RunningRegistry;
  let azurite: RunningAzurite;
  let work: string;
  let digest: string;
  const servers: RunningServer[] = [];
  const closers: Array<() => Promise<void>> = [];

  const serve = async (upstream: string, upstreamTLS: Record<string, unknown> | undefined) => {
    const s = await startServer(
      buildConfig({
        listen: '127.0.0.1:0',
        upstream,
        ...(upstreamTLS && { upstreamTLS }),
        signer: { azure: { account: azurite.account, accountKey: azurite.accountKey, container: 'registry', endpoint: azurite.endpoint } },
        log: { requests: false },
      }),
      silentLogger,
    );
    servers.push(s);
    return s;
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-upstream-tls-'));
    ca = makeTestCa('upstream CA');
    clientCa = makeTestCa('upstream client CA');
    const leaf = ca.issue('registry');
    const probeClient = clientCa.issue('probe');
    [registry, mtlsRegistry, azurite] = await Promise.all([
      startRegistry({ tls: { certificate: leaf.cert, key: leaf.key }, auth: { htpasswd: { users: { [alice.username]: alice.password } } } }),
      startRegistry({ tls: { certificate: leaf.cert, key: leaf.key, clientCAs: [clientCa.cert], probeClient } }),
      startAzurite({ host: '127.0.0.2' }),
    ]);
    await azurite.containerClient('registry').createIfNotExists();
  }, 60_000);

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await Promise.all(closers.map((c) => c()));
    await Promise.all([registry?.stop(), mtlsRegistry?.stop(), azurite?.stop()]);
    ca?.remove();
    clientCa?.remove();
    if (work) await rm(work, { recursive: true, force: true });
  }, 30_000);

  it('the registry really is https with an untrusted certificate', async () => {
    expect(registry.url.startsWith('https://')).toBe(true);
    await expect(request(`${registry.url}/v2/`)).rejects.toThrow(/unable to verify/);
  });

  it('with upstreamTLS.ca: skopeo pushes and pulls through the proxy, blobs redirected to storage; /readyz sees the upstream', async () => {
    const proxy = await serve(registry.url, { ca: ca.cert });
    const host = new URL(proxy.url).host;
    const image = await makeOciImage(join(work, 'img'), { layers: [{ size: 1 << 20, seed: 'up-tls-a' }] });
    const push = await skopeoPush(image, `docker://${host}/team/app:v1`, alice);
    expect(push.code, push.stderr).toBe(0);
    await copyRegistryBlobsToAzure(registry.storageRoot, azurite.containerClient('registry'));
    azurite.requests.length = 0;
    const out = join(work, 'pulled');
    const pull = await skopeoPull(`docker://${host}/team/app:v1`, out, alice);
    expect(pull.code, pull.stderr).toBe(0);
    expect((await verifyPulledDir(out, image)).problems).toEqual([]);
    expect(azurite.requests.some((r) => r.method === 'GET' && r.status === 200)).toBe(true);
    digest = image.layers[0]!.digest;
    const blob = await request(`${proxy.url}/v2/team/app/blobs/${digest}`, { headers: { authorization: basic } });
    expect(blob.status).toBe(307);
    const ready = await request(`${proxy.url}/readyz`);
    expect(JSON.parse(ready.body.toString()).upstream).toBe('reachable');
  }, 120_000);

  it('check --creds asks the https upstream for the size with upstreamTLS.ca; without it, fails naming the TLS error', async () => {
    expect(digest, 'the skopeo test pushes the blob').toBeDefined();
    const yaml = (tls: string) => `upstream: ${registry.url}\n${tls}signer:\n  azure: { account: ${azurite.account}, accountKey: "${azurite.accountKey}", container: registry, endpoint: ${azurite.endpoint} }\n`;
    const run = async (file: string, text: string) => {
      const path = join(work, file);
      await writeFile(path, text);
      const lines: string[] = [];
      const code = await checkCommand(['--config', path, '--repository', 'team/app', '--digest', digest, '--creds', `${alice.username}:${alice.password}`], (l) => void lines.push(l), {});
      return { code, text: lines.join('\n') };
    };
    const trusted = await run('check-ca.yaml', yaml(`upstreamTLS:\n  ca: ${ca.cert}\n`));
    expect(trusted.text).toMatch(/^ok {4}signer \(azure\): storage accepted the signature: GET .* -> 206, \d+ bytes, as the registry says/);
    expect(trusted.code).toBe(0);
    const untrusted = await run('check-no-ca.yaml', yaml(''));
    expect(untrusted.text).toMatch(new RegExp(`^FAIL {2}signer \\(azure\\): the upstream ${registry.url} failed the TLS handshake: unable to verify the first certificate.* \\(UNABLE_TO_VERIFY_LEAF_SIGNATURE\\); .*upstreamTLS\\.ca`));
    expect(untrusted.code).toBe(1);
  });

  it('without the CA: 502 whose detail names the TLS error and the fix, on pass-through and on a blob GET', async () => {
    const proxy = await serve(registry.url, undefined);
    for (const path of ['/v2/', '/v2/team/app/manifests/v1', `/v2/team/app/blobs/${digest ?? `sha256:${'a'.repeat(64)}`}`]) {
      const res = await request(`${proxy.url}${path}`, { headers: { authorization: basic } });
      expect(res.status, path).toBe(502);
      expect(res.headers.location).toBeUndefined();
      const error = JSON.parse(res.body.toString()).errors[0];
      expect(error.code).toBe('UNAVAILABLE');
      expect(error.detail.reason, path).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
      expect(error.detail.tls).toMatch(/unable to verify the first certificate/);
      expect(error.detail.hint).toContain('upstreamTLS.ca');
    }
    const ready = await request(`${proxy.url}/readyz`);
    expect(ready.status).toBe(503);
  });

  it('a self-signed upstream certificate: detail.reason DEPTH_ZERO_SELF_SIGNED_CERT (library, both paths)', async () => {
    const own = makeSelfSigned(work);
    const selfSigned = https.createServer({ cert: readFileSync(own.cert), key: readFileSync(own.key) }, (_req, res) => res.end());
    await new Promise<void>((resolve) => selfSigned.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => selfSigned.close(() => resolve())));
    const proxy = await startProxy({ upstream: `https://127.0.0.1:${(selfSigned.address() as AddressInfo).port}`, signer: testSigner() });
    closers.push(() => proxy.close());
    for (const path of ['/v2/', `/v2/team/app/blobs/sha256:${'b'.repeat(64)}`]) {
      const res = await request(`${proxy.url}${path}`);
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body.toString()).errors[0].detail.reason).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
    }
  });

  it('mTLS to the upstream (http.tls.clientcas): with upstreamTLS.certificate/key it works, without a client certificate it is a 502', async () => {
    const client = clientCa.issue('proxy-client');
    const withCert = await serve(mtlsRegistry.url, { ca: ca.cert, certificate: client.cert, key: client.key });
    const pushed = await pushBlob(withCert.url, 'team/mtls', randomBytes(4096), 'Basic eA==');
    const blob = await request(`${withCert.url}/v2/team/mtls/blobs/${pushed}`);
    expect(blob.status).toBe(307);
    expect((await request(`${withCert.url}/v2/`)).status).toBe(200);
    const without = await serve(mtlsRegistry.url, { ca: ca.cert });
    const refused = await request(`${without.url}/v2/`);
    expect(refused.status).toBe(502);
    expect((await request(`${without.url}/v2/team/mtls/blobs/${pushed}`)).status).toBe(502);
  });

  it('insecureSkipVerify: works without the CA, and says so loudly at start (library: rejectUnauthorized false)', async () => {
    const logger = recordingLogger();
    const proxy = await startProxy({ upstream: registry.url, signer: testSigner(), upstreamTLS: { rejectUnauthorized: false }, logger });
    closers.push(() => proxy.close());
    expect(logger.lines.some((l) => JSON.parse(l).msg.includes('upstream TLS certificate verification is OFF'))).toBe(true);
    const res = await request(`${proxy.url}/v2/team/app/blobs/${digest}`, { headers: { authorization: basic } });
    expect(res.status).toBe(307);
    expect(res.headers.location!.startsWith(`${STORAGE_ENDPOINT}/`)).toBe(true);
  });
});
