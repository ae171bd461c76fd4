/**
 * S3 end to end with real parts: distribution 2.8 (filesystem storage, htpasswd) behind
 * `registry-redirect` configured with the issue's S3 block, skopeo pushing and pulling through
 * the proxy, and blob pulls served by s3rver behind a gate that verifies every SigV4 signature.
 * Also `registry-redirect check` against the same storage.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { runCheck } from '../../src/server/check.js';
import { loadConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { freePort } from '../support/ports.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { startS3Gate, type RunningS3Gate } from '../support/s3-gate.js';
import { copyRegistryBlobsToS3 } from '../support/seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo');
const creds = { username: 'alice', password: 'correct horse battery staple' };
const KEY = { id: 'AKIDREGISTRYE2E', secret: 'registry-e2e-secret' };

/** The issue's S3 block, verbatim but for the endpoint, plus the proxy's own keys. */
function proxyYaml(upstream: string, endpoint: string, extra = ''): string {
  return `
listen: 127.0.0.1:0
upstream: ${upstream}
signer:
  s3:
    bucket: registry
    region: us-east-1
    endpoint: ${endpoint}      # omit for AWS
    forcePathStyle: true
    accessKeyId: \${AWS_ACCESS_KEY_ID}     # omit both to use the default credential chain
    secretAccessKey: \${AWS_SECRET_ACCESS_KEY}
${extra}log:
  level: silent
`;
}

describe.skipIf(!has)('S3: skopeo pulls through registry-redirect, blobs from verified S3 URLs', () => {
  let work: string;
  let registry: RunningRegistry;
  let s3: RunningS3Gate;
  let image: OciImage;
  let proxy: RunningServer;
  let configFile: string;
  const env = { AWS_ACCESS_KEY_ID: KEY.id, AWS_SECRET_ACCESS_KEY: KEY.secret };
  const ref = () => `docker://${proxy.url.slice('http://'.length)}/team/app:v1`;
  const blobDigests = () => [...image.layers.map((l) => l.digest), image.configDigest];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-s3-e2e-'));
    [registry, s3, image] = await Promise.all([
      startRegistry({ auth: { htpasswd: { users: { [creds.username]: creds.password } } } }),
      startS3Gate({ keys: { [KEY.id]: KEY.secret } }),
      makeOciImage(join(work, 'image'), { layers: [{ size: 1 << 20, seed: 's3-big' }, { size: 3000, seed: 's3-small' }] }),
    ]);
    configFile = join(work, 'proxy.yaml');
    await writeFile(configFile, proxyYaml(registry.url, s3.endpoint));
    proxy = await startServer(await loadConfig(configFile, env), silentLogger);
    // The start's preflight asked S3 once (preflight.e2e.test.ts); the tests below count from here.
    s3.requests.length = 0;
  }, 30_000);

  afterAll(async () => {
    await proxy?.close();
    await registry?.stop();
    await s3?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  }, 20_000);

  it('skopeo pushes through the proxy (uploads pass through, never redirected)', async () => {
    const push = await skopeoPush(image, ref(), creds, { timeoutMs: 20_000 });
    expect(push.code, push.stderr).toBe(0);
    expect(s3.requests).toHaveLength(0);
    const copied = await copyRegistryBlobsToS3(registry.storageRoot, s3.client, s3.bucket);
    expect(copied.length).toBeGreaterThanOrEqual(blobDigests().length);
  }, 25_000);

  it('skopeo pulls through the proxy: every blob comes from S3 on a signature the gate verified', async () => {
    s3.requests.length = 0;
    const out = join(work, 'pulled');
    const pull = await skopeoPull(ref(), out, creds, { timeoutMs: 20_000 });
    expect(pull.code, pull.stderr).toBe(0);
    expect((await verifyPulledDir(out, image)).problems).toEqual([]);

    const fetched = s3.requests.map((r) => r.url.split('?')[0]);
    expect(fetched.sort()).toEqual(blobDigests().map((d) => `/registry/docker/registry/v2/blobs/sha256/${d.slice(7, 9)}/${d.slice(7)}/data`).sort());
    expect(s3.requests.map((r) => [r.method, r.verdict.code, r.status])).toEqual(blobDigests().map(() => ['GET', 'OK', 200]));
    // storage never sees the registry credentials
    expect(s3.requests.filter((r) => r.headers.authorization !== undefined)).toEqual([]);
    expect(s3.requests.every((r) => new URL(r.url, s3.endpoint).searchParams.get('X-Amz-SignedHeaders') === 'host')).toBe(true);
  }, 25_000);

  it('a second pull reuses the cached signed URLs (same signatures, no re-signing)', async () => {
    const first = new Map(s3.requests.map((r) => [r.url.split('?')[0], r.url]));
    s3.requests.length = 0;
    const pull = await skopeoPull(ref(), join(work, 'pulled-again'), creds, { timeoutMs: 20_000 });
    expect(pull.code, pull.stderr).toBe(0);
    expect(s3.requests.map((r) => r.url).sort()).toEqual([...first.values()].sort());
  }, 25_000);

  it('a ranged GET (resume) gets a fresh 307; storage answers 206 with the exact Content-Range', async () => {
    const layer = image.layers[0]!;
    const auth = { authorization: `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` };
    const redirect = await request(`${proxy.url}/v2/team/app/blobs/${layer.digest}`, { headers: { ...auth, range: 'bytes=1000-' } });
    expect(redirect.status).toBe(307);
    const ranged = await request(redirect.headers.location!, { headers: { range: 'bytes=1000-' } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers['content-range']).toBe(`bytes 1000-${layer.size - 1}/${layer.size}`);
    expect(ranged.body.length).toBe(layer.size - 1000);
  });

  it('with the wrong secret the pull fails: storage refuses the signature (the test depends on real verification)', async () => {
    // The preflight would stop this start; with it off, the pull shows what it prevents.
    const wrong = await startServer({ ...(await loadConfig(configFile, { ...env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' })), preflight: 'off' }, silentLogger);
    try {
      s3.requests.length = 0;
      const pull = await skopeoPull(`docker://${wrong.url.slice('http://'.length)}/team/app:v1`, join(work, 'pulled-wrong'), creds, { timeoutMs: 20_000 });
      expect(pull.code).not.toBe(0);
      expect(pull.stderr).toMatch(/403|Forbidden/);
      expect(s3.requests.length).toBeGreaterThan(0);
      expect(new Set(s3.requests.map((r) => r.verdict.code))).toEqual(new Set(['SignatureDoesNotMatch']));
    } finally {
      await wrong.close();
    }
  }, 45_000);

  describe('registry-redirect check', () => {
    const lines: string[] = [];
    const out = (line: string) => void lines.push(line);
    async function check(args: Partial<Parameters<typeof runCheck>[0]>, config = configFile, e: NodeJS.ProcessEnv = env): Promise<{ code: number; text: string }> {
      lines.length = 0;
      const code = await runCheck({ config, timeoutMs: 5_000, ...args }, out, e);
      return { code, text: lines.join('\n') };
    }
    it('passes for a pushed blob: storage accepts the signature and the size matches the registry', async () => {
      const layer = image.layers[0]!;
      const r = await check({ repository: 'team/app', digest: layer.digest, creds: `${creds.username}:${creds.password}` });
      expect(r.text).toMatch(new RegExp(`^ok    signer \\(s3\\): storage accepted the signature: GET ${s3.endpoint}/registry/docker/registry/v2/blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}/data\\?REDACTED -> 206, ${layer.size} bytes, as the registry says`));
      expect(r.text).not.toContain('X-Amz-Signature');
      expect(r.code).toBe(0);
      expect(s3.requests.at(-1)).toMatchObject({ method: 'GET', verdict: { code: 'OK' }, headers: { range: 'bytes=0-0' } });
    });

    it('without --creds it still proves the signature, and says the size was not compared', async () => {
      const r = await check({ repository: 'team/app', digest: image.layers[1]!.digest });
      expect(r.code).toBe(0);
      expect(r.text).toMatch(/^ok {4}signer \(s3\): storage accepted the signature: .* -> 206, \d+ bytes \(not compared: the upstream answered 401; pass --creds USER:PASS or --size N\)/);
    });

    it('without --digest it proves the credentials (a missing object answers 404 NoSuchKey) and says how to go further', async () => {
      const r = await check({});
      expect(r.code).toBe(0);
      expect(r.text).toMatch(/^ok {4}signer \(s3\): signed GET http:\/\/127\.0\.0\.2:\d+\/registry\/docker\/registry\/v2\/blobs\/sha256\/e3\/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\/data\?REDACTED \(valid 20m\); storage at http:\/\/127\.0\.0\.2:\d+\/registry accepted the signature \(a missing object answered 404 NoSuchKey.*\); pass --repository and --digest/);
      const wrong = await check({}, configFile, { ...env, AWS_SECRET_ACCESS_KEY: 'wrong' });
      expect(wrong.code).toBe(1);
      expect(wrong.text).toMatch(/^FAIL {2}signer \(s3\): storage at .* refused the signed URL: 403 SignatureDoesNotMatch .*; check signer\.s3\.secretAccessKey/);
    });

    it('fails when storage refuses the signature (wrong secret)', async () => {
      const r = await check({ repository: 'team/app', digest: image.layers[0]!.digest, size: image.layers[0]!.size }, configFile, { ...env, AWS_SECRET_ACCESS_KEY: 'wrong' });
      expect(r.code).toBe(1);
      expect(r.text).toMatch(/^FAIL {2}signer \(s3\): storage refused the signature for .*: 403 SignatureDoesNotMatch: The request signature we calculated does not match/);
    });

    it('fails on the wrong region with the region storage expects', async () => {
      const file = join(work, 'wrong-region.yaml');
      await writeFile(file, proxyYaml(registry.url, s3.endpoint).replace('region: us-east-1', 'region: eu-west-1'));
      const r = await check({ repository: 'team/app', digest: image.layers[0]!.digest, size: image.layers[0]!.size }, file);
      expect(r.code).toBe(1);
      expect(r.text).toMatch(/^FAIL {2}signer \(s3\): storage refused the signature .*: 400 AuthorizationQueryParametersError: .*the region 'eu-west-1' is wrong; expecting 'us-east-1'/);
    });

    it('fails when the object is missing (wrong rootDirectory or unseeded storage)', async () => {
      const file = join(work, 'wrong-root.yaml');
      await writeFile(file, proxyYaml(registry.url, s3.endpoint).replace('    forcePathStyle: true\n', '    forcePathStyle: true\n    rootDirectory: elsewhere\n'));
      const r = await check({ repository: 'team/app', digest: image.layers[0]!.digest, size: image.layers[0]!.size }, file);
      expect(r.code).toBe(1);
      expect(r.text).toMatch(/^FAIL {2}signer \(s3\): storage has no object at http:\/\/127\.0\.0\.2:\d+\/registry\/elsewhere\/docker\/.*: 404 NoSuchKey.*check rootDirectory and layout/);
    });

    it('catches a zot-style deduplicated copy: an empty object where the registry reports a size', async () => {
      // zot with dedupe on S3 keeps one real copy and leaves empty objects for the other repositories.
      const layer = image.layers[0]!;
      const hex = layer.digest.slice(7);
      await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `zot/team/first/blobs/sha256/${hex}`, Body: Buffer.alloc(layer.size, 1) }));
      await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `zot/team/app/blobs/sha256/${hex}`, Body: Buffer.alloc(0) }));
      const file = join(work, 'zot.yaml');
      await writeFile(file, proxyYaml(registry.url, s3.endpoint).replace('    forcePathStyle: true\n', '    forcePathStyle: true\n    rootDirectory: zot\n    layout: oci-per-repo\n'));
      const copy = await check({ repository: 'team/app', digest: layer.digest, creds: `${creds.username}:${creds.password}` }, file);
      expect(copy.code).toBe(1);
      expect(copy.text).toMatch(new RegExp(`^FAIL  signer \\(s3\\): the object at .*/registry/zot/team/app/blobs/sha256/${hex}\\?REDACTED is 0 bytes but the registry says ${layer.size} \\(an empty object: a deduplicated copy`));
      const original = await check({ repository: 'team/first', digest: layer.digest, size: layer.size }, file);
      expect(original.code, original.text).toBe(0);
      const noSize = await check({ repository: 'team/app', digest: layer.digest }, file);
      expect(noSize.code).toBe(1);
      expect(noSize.text).toMatch(/is empty, but only the empty blob may be/);
    });

    it('fails when storage is unreachable (wrong endpoint)', async () => {
      const file = join(work, 'unreachable.yaml');
      const closed = await freePort('127.0.0.2');
      await writeFile(file, proxyYaml(registry.url, `http://127.0.0.2:${closed}`));
      const r = await check({ repository: 'team/app', digest: image.layers[0]!.digest, size: 1 }, file);
      expect(r.code).toBe(1);
      expect(r.text).toMatch(/^FAIL {2}signer \(s3\): storage unreachable at http:\/\/127\.0\.0\.2:\d+\/.*: connect ECONNREFUSED 127\.0\.0\.2:\d+$/);
    });

    it('fails on an invalid config naming the key', async () => {
      const file = join(work, 'invalid.yaml');
      await writeFile(file, proxyYaml(registry.url, s3.endpoint).replace('bucket: registry', 'bucket: bad/bucket'));
      const r = await check({}, file);
      expect(r.code).toBe(1);
      expect(r.text).toMatch(/^FAIL {2}config .*invalid\.yaml: signer\.s3\.bucket: "bad\/bucket" is not a bucket name/);
    });
  });
});
