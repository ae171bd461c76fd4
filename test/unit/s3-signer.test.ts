import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { afterEach, describe, expect, it } from 'vitest';
import { s3Signer, type S3SignerOptions } from '../../src/signers/s3.js';
import type { SignedUrl, Signer } from '../../src/types.js';
import { checkSigV4Url } from '../support/sigv4.js';

const HEX = 'cd'.repeat(32);
const req = { repository: 'library/alpine', digest: `sha256:${HEX}`, method: 'GET' as const };
const KEYS = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };
const T0 = Date.UTC(2026, 0, 2, 3, 4, 5, 678);

const signers: Signer[] = [];
afterEach(async () => {
  await Promise.all(signers.splice(0).map((s) => s.close?.()));
});

function make(options: Partial<S3SignerOptions>): Signer {
  const signer = s3Signer({ bucket: 'registry', region: 'us-east-1', ...KEYS, ...options });
  signers.push(signer);
  return signer;
}

async function sign(options: Partial<S3SignerOptions>, request = req): Promise<SignedUrl> {
  return make(options).sign(request);
}

describe('s3Signer', () => {
  it('presigns a GET for exactly one object: SigV4, host signed only, 20 min, https on AWS', async () => {
    const signed = await sign({ now: () => T0 });
    const url = new URL(signed.url);
    expect(`${url.origin}${url.pathname}`).toBe(`https://registry.s3.us-east-1.amazonaws.com/docker/registry/v2/blobs/sha256/cd/${HEX}/data`);
    expect(url.searchParams.get('X-Amz-SignedHeaders')).toBe('host');
    expect(url.searchParams.get('X-Amz-Expires')).toBe('1200');
    expect(url.searchParams.get('X-Amz-Date')).toBe('20260102T030405Z');
    expect(url.searchParams.get('X-Amz-Credential')).toBe('AKIAIOSFODNN7EXAMPLE/20260102/us-east-1/s3/aws4_request');
    // expiresAt is exact: the signing date is a whole second, plus X-Amz-Expires
    expect(signed.expiresAt).toBe(Date.UTC(2026, 0, 2, 3, 4, 5) + 1_200_000);

    // independent check (node:crypto, from the AWS docs): valid for GET, and only for GET
    expect(checkSigV4Url(signed.url, { secretAccessKey: KEYS.secretAccessKey })).toMatchObject({ ok: true, signedHeaders: ['host'] });
    expect(checkSigV4Url(signed.url, { secretAccessKey: KEYS.secretAccessKey, method: 'HEAD' }).ok).toBe(false);
    expect(checkSigV4Url(signed.url, { secretAccessKey: 'wrong' }).ok).toBe(false);
  });

  it.each([
    ['AWS, virtual-hosted', { region: 'eu-central-1' }],
    ['AWS, bucket with dots (path style by the SDK rules)', { bucket: 'my.dotted.bucket', region: 'eu-west-1' }],
    ['AWS, forcePathStyle', { region: 'ap-southeast-2', forcePathStyle: true }],
    ['MinIO/s3rver, path style over http', { endpoint: 'http://127.0.0.2:4568', forcePathStyle: true }],
    ['Cloudflare R2, virtual-hosted', { endpoint: 'https://0123abcd.r2.cloudflarestorage.com', region: 'auto' }],
    ['gateway under a path prefix', { endpoint: 'https://gw.example.com/s3/', forcePathStyle: true }],
    ['rootDirectory with characters S3 escapes', { rootDirectory: "/my root/it's (v2)!*/" }],
  ] as const)('builds the same host, path and region as the SDK getSignedUrl: %s', async (_what, options) => {
    const ours = new URL((await sign(options)).url);
    const bucket = 'bucket' in options ? options.bucket : 'registry';
    const key = (((options as { rootDirectory?: string }).rootDirectory ?? '').replace(/^\/+|\/+$/g, '') + '/docker/registry/v2/blobs/sha256/cd/' + HEX + '/data').replace(/^\//, '');
    const client = new S3Client({
      region: 'region' in options ? options.region : 'us-east-1',
      credentials: KEYS,
      ...('endpoint' in options ? { endpoint: options.endpoint } : {}),
      ...('forcePathStyle' in options ? { forcePathStyle: options.forcePathStyle } : {}),
    });
    const sdk = new URL(await getSignedUrl(client, new GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn: 1200 }));
    client.destroy();
    expect(`${ours.origin}${ours.pathname}`).toBe(`${sdk.origin}${sdk.pathname}`);
    expect(ours.searchParams.get('X-Amz-Credential')!.split('/').slice(2).join('/')).toBe(sdk.searchParams.get('X-Amz-Credential')!.split('/').slice(2).join('/'));
    expect(checkSigV4Url(ours.href, { secretAccessKey: KEYS.secretAccessKey }).ok).toBe(true);
  });

  it('uses the endpoint scheme: http only when the endpoint says so', async () => {
    expect((await sign({ endpoint: 'http://127.0.0.2:4568', forcePathStyle: true })).url).toMatch(/^http:\/\/127\.0\.0\.2:4568\/registry\/docker\//);
    expect((await sign({ endpoint: 'https://minio.example.com', forcePathStyle: true })).url).toMatch(/^https:\/\/minio\.example\.com\/registry\//);
  });

  it('honours expiry and the oci-per-repo layout', async () => {
    const signed = await sign({ expiry: '7d', layout: 'oci-per-repo', rootDirectory: 'zot', now: () => T0 });
    const url = new URL(signed.url);
    expect(url.pathname).toBe(`/zot/library/alpine/blobs/sha256/${HEX}`);
    expect(url.searchParams.get('X-Amz-Expires')).toBe('604800');
    expect(signed.expiresAt).toBe(Date.UTC(2026, 0, 2, 3, 4, 5) + 604_800_000);
  });

  it('exposes the object key for the cache', () => {
    expect(make({ rootDirectory: 'r' }).objectKey!(req)).toBe(`r/docker/registry/v2/blobs/sha256/cd/${HEX}/data`);
  });

  it('carries a session token of temporary credentials (signed)', async () => {
    const url = new URL((await sign({ sessionToken: 'FQoGZXIvYXdzEXAMPLE' })).url);
    expect(url.searchParams.get('X-Amz-Security-Token')).toBe('FQoGZXIvYXdzEXAMPLE');
    expect(checkSigV4Url(url.href, { secretAccessKey: KEYS.secretAccessKey }).ok).toBe(true);
  });

  it('temporary credentials: a URL is never reported valid past the end of their session', async () => {
    const sessionEnd = new Date(Date.UTC(2026, 0, 2, 3, 10, 0)); // 6 min after T0, inside the 20 min expiry
    let calls = 0;
    const signer = make({
      accessKeyId: undefined,
      secretAccessKey: undefined,
      credentials: async () => (calls++, { ...KEYS, sessionToken: 'SESSION', expiration: sessionEnd }),
      now: () => T0,
    });
    const signed = await signer.sign(req);
    expect(signed.expiresAt).toBe(sessionEnd.getTime());
    expect(new URL(signed.url).searchParams.get('X-Amz-Security-Token')).toBe('SESSION');
    expect(checkSigV4Url(signed.url, { secretAccessKey: KEYS.secretAccessKey }).ok).toBe(true);
    expect(calls).toBeGreaterThan(0);
    // long-lived keys: the full expiry
    expect((await sign({ now: () => T0 })).expiresAt).toBe(Date.UTC(2026, 0, 2, 3, 4, 5) + 1_200_000);
  });

  it.each([
    [{ bucket: '' }, /signer\.s3\.bucket: must be a non-empty string/],
    [{ bucket: 'Registry_1' }, /signer\.s3\.bucket: "Registry_1" is not a bucket name/],
    [{ bucket: 'fast--x-s3' }, /signer\.s3\.bucket: .*S3 Express directory buckets/],
    [{ region: undefined }, /signer\.s3\.region: missing; write the bucket's region, e\.g\. "us-east-1"/],
    [{ region: 'us-east1' }, /signer\.s3\.region: "us-east1" is not an AWS region/],
    [{ region: 'US_EAST_1' }, /signer\.s3\.region: "US_EAST_1" is not an AWS region/],
    [{ endpoint: 'not a url' }, /signer\.s3\.endpoint: "not a url" is not a URL/],
    [{ endpoint: 'ftp://127.0.0.2:21' }, /signer\.s3\.endpoint: protocol ftp: is not supported/],
    [{ endpoint: 'http://user:pw@127.0.0.2:4568' }, /signer\.s3\.endpoint: write only scheme, host, port/],
    [{ forcePathStyle: 'yes' as unknown as boolean }, /signer\.s3\.forcePathStyle: write true/],
    [{ secretAccessKey: undefined }, /signer\.s3\.secretAccessKey: missing; accessKeyId is set/],
    [{ accessKeyId: undefined }, /signer\.s3\.accessKeyId: missing; secretAccessKey is set/],
    [{ accessKeyId: undefined, secretAccessKey: undefined, sessionToken: 't' }, /signer\.s3\.sessionToken: set accessKeyId and secretAccessKey with it/],
    [{ expiry: '8d' }, /expiry: 8d is longer than 7 days, the longest an S3 presigned URL \(SigV4\) can live/],
    [{ expiry: '500ms' }, /expiry: 500ms is shorter than one second/],
  ])('rejects bad options at construction, naming the key: %j', (options, message) => {
    expect(() => s3Signer({ bucket: 'registry', region: 'us-east-1', ...KEYS, ...options } as S3SignerOptions)).toThrow(message);
  });
});

describe('s3Signer with the default credential chain', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  });

  function isolateEnv(env: Record<string, string>): void {
    for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
    Object.assign(process.env, {
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_CONFIG_FILE: '/nonexistent/rr-aws-config',
      AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/rr-aws-credentials',
      ...env,
    });
  }

  it('takes keys from the environment when none are configured', async () => {
    isolateEnv({ AWS_ACCESS_KEY_ID: 'AKIDFROMENV', AWS_SECRET_ACCESS_KEY: 'env-secret' });
    const signer = s3Signer({ bucket: 'registry', region: 'us-east-1' });
    signers.push(signer);
    await expect(signer.ready!()).resolves.toBeUndefined();
    const { url } = await signer.sign(req);
    expect(checkSigV4Url(url, { secretAccessKey: 'env-secret' })).toMatchObject({ ok: true, accessKeyId: 'AKIDFROMENV' });
  });

  it('missing credentials: ready() fails naming the keys to set, sign() rejects', async () => {
    isolateEnv({});
    const signer = s3Signer({ bucket: 'registry', region: 'us-east-1' });
    signers.push(signer);
    await expect(signer.ready!()).rejects.toThrow(/signer\.s3: no AWS credentials: .*Set signer\.s3\.accessKeyId and signer\.s3\.secretAccessKey/);
    await expect(signer.sign(req)).rejects.toThrow();
  });
});
