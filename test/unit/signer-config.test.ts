import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildConfig, loadConfig } from '../../src/server/config.js';
import { withCache } from '../../src/server/cache-config.js';
import { signerFromConfig } from '../../src/server/signer-config.js';
import type { SignedUrl } from '../../src/types.js';
import { checkSigV4Url } from '../support/sigv4.js';

// The documented S3 block, as external checks use it, verbatim.
const ISSUE_S3_CONFIG = `
upstream: http://127.0.0.1:15000
signer:
  s3:
    bucket: registry
    region: us-east-1
    endpoint: http://127.0.0.2:4568      # omit for AWS
    forcePathStyle: true
    accessKeyId: \${AWS_ACCESS_KEY_ID}     # omit both to use the default credential chain
    secretAccessKey: \${AWS_SECRET_ACCESS_KEY}
    # rootDirectory: ""   layout: distribution
`;

const HEX = 'ab'.repeat(32);
const req = { repository: 'team/app', digest: `sha256:${HEX}`, method: 'GET' as const };
const PEM = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const common = { expiry: 20 * 60_000 };

function writeTemp(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'rr-signer-config-')), 'proxy.yaml');
  writeFileSync(file, text);
  return file;
}

describe('signer blocks', () => {
  it('loads the S3 block of the issue with keys from the environment, signing path-style http URLs', async () => {
    const config = await loadConfig(writeTemp(ISSUE_S3_CONFIG), { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' });
    expect(config.signer.name).toBe('s3');
    const { url } = await config.signer.sign(req);
    expect(url.startsWith(`http://127.0.0.2:4568/registry/docker/registry/v2/blobs/sha256/ab/${HEX}/data?`)).toBe(true);
    expect(checkSigV4Url(url, { secretAccessKey: 'S3RVER' })).toMatchObject({ ok: true, accessKeyId: 'S3RVER', region: 'us-east-1' });
    await config.signer.close?.();
  });

  it.each([
    ['s3', { bucket: 'registry', region: 'eu-west-1', accessKeyId: 'AK', secretAccessKey: 'SK', rootDirectory: 'reg', layout: 'distribution' }, 'https://registry.s3.eu-west-1.amazonaws.com/reg/docker/registry/v2/blobs/'],
    ['gcs', { bucket: 'registry', clientEmail: 'sa@p.iam.gserviceaccount.com', privateKey: PEM, virtualHostedStyle: true }, 'https://registry.storage.googleapis.com/docker/registry/v2/blobs/'],
    ['cloudfront', { baseUrl: 'https://d111111abcdef8.cloudfront.net', keyPairId: 'K2JCJMDEHXQW5F', privateKey: PEM, layout: 'oci-per-repo' }, `https://d111111abcdef8.cloudfront.net/team/app/blobs/sha256/${HEX}?`],
    ['hmac', { baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare' }, 'https://cdn.example.com/docker/registry/v2/blobs/'],
  ])('%s: a block with its documented keys builds a working signer', async (kind, block, prefix) => {
    const signer = signerFromConfig({ [kind]: block }, 'signer', { ...common, now: () => Date.UTC(2036, 0, 1) });
    expect(signer.name).toBe(kind);
    const signed: SignedUrl = await signer.sign(req);
    expect(signed.url.startsWith(prefix)).toBe(true);
    expect(signed.expiresAt).toBe(Date.UTC(2036, 0, 1) + 20 * 60_000);
    await signer.close?.();
  });

  it.each([
    ['unknown key with a hint', { s3: { bucket: 'registry', region: 'us-east-1', forcePathstyle: true } }, /signer\.s3\.forcePathstyle: unknown key; did you mean "forcePathStyle"\?/],
    ['missing bucket', { s3: { region: 'us-east-1' } }, /signer\.s3\.bucket: write the bucket name/],
    ['wrong type', { s3: { bucket: 'registry', region: 'us-east-1', forcePathStyle: 'yes' } }, /signer\.s3\.forcePathStyle: write true or false/],
    ['bad region', { s3: { bucket: 'registry', region: 'us_east_1' } }, /signer\.s3\.region: "us_east_1" is not an AWS region/],
    ['bad endpoint', { s3: { bucket: 'registry', endpoint: '127.0.0.2:4568' } }, /signer\.s3\.endpoint: write a URL, e\.g\. "http:\/\/127\.0\.0\.2:4568"/],
    ['half the keys', { s3: { bucket: 'registry', region: 'us-east-1', accessKeyId: 'AK' } }, /signer\.s3\.secretAccessKey: missing; accessKeyId is set/],
    ['gcs without a bucket', { gcs: {} }, /signer\.gcs\.bucket: write the bucket name/],
    ['gcs key file missing', { gcs: { bucket: 'registry', keyFile: '/nonexistent/sa.json' } }, /signer\.gcs\.keyFile: cannot read/],
    ['cloudfront without a key', { cloudfront: { baseUrl: 'https://d1.cloudfront.net', keyPairId: 'K2JCJMDEHXQW5F' } }, /signer\.cloudfront\.privateKey: write the PEM private key/],
    ['cloudfront bad algorithm', { cloudfront: { baseUrl: 'https://d1.cloudfront.net', keyPairId: 'K2', privateKey: PEM, algorithm: 'sha1' } }, /signer\.cloudfront\.algorithm: write "SHA1" \(default\) or "SHA256"/],
    ['hmac unknown preset', { hmac: { baseUrl: 'https://cdn.example.com', key: 'k', preset: 'fastly' } }, /signer\.hmac\.preset: write one of cloudflare, nginx-secure-link, google-cdn/],
    ['hmac without a scheme', { hmac: { baseUrl: 'https://cdn.example.com', key: 'k' } }, /signer\.hmac: write a preset/],
    ['a typo in the kind', { cloudfornt: {} }, /signer\.cloudfornt: unknown signer; did you mean "cloudfront"\?/],
  ])('%s fails naming the key', (_why, block, message) => {
    expect(() => signerFromConfig(block, 'signer', common)).toThrow(message);
  });

  it.each([
    ['s3', { s3: { bucket: 'registry', region: 'us-east-1', accessKeyId: 'AK', secretAccessKey: 'SK' } }, /expiry: 8d is longer than 7 days, the longest an S3 presigned URL/],
    ['gcs', { gcs: { bucket: 'registry', clientEmail: 'sa@p.iam.gserviceaccount.com', privateKey: PEM } }, /expiry: 8d is longer than 7 days, the longest a GCS V4 signed URL/],
    ['cloudfront', { cloudfront: { baseUrl: 'https://d1.cloudfront.net', keyPairId: 'K2JCJMDEHXQW5F', privateKey: PEM } }, /expiry: 8d is longer than 7 days/],
    ['hmac', { hmac: { baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare' } }, /expiry: 8d is longer than 7 days/],
    ['azure', { azure: { account: 'acct', accountKey: 'a2V5', container: 'registry' } }, /expiry: 8d is longer than 7 days/],
  ])('%s: an expiry over the provider maximum stops startup naming expiry', (_kind, signer, message) => {
    expect(() => buildConfig({ upstream: 'http://127.0.0.1:5000', expiry: '8d', signer })).toThrow(message);
  });
});

describe('cache block', () => {
  const base = { upstream: 'http://127.0.0.1:5000', signer: { hmac: { baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare' } } };

  it('is on by default: serve reuses signed URLs (the server wraps each signer with withCache)', () => {
    const config = buildConfig(base);
    expect(config.cache).toEqual({ enabled: true, maxEntries: 10_000, maxBytes: 16_777_216, refreshFraction: 0.5, minRemainingMs: 60_000 });
    const signer = withCache(config.signer, config.cache);
    const a = signer.sign(req);
    expect(signer.sign(req)).toBe(a);
  });

  it('takes maxEntries, refreshFraction, minRemaining', () => {
    const config = buildConfig({ ...base, cache: { maxEntries: 50_000, refreshFraction: 0.25, minRemaining: '5m' } });
    expect(config.cache).toEqual({ enabled: true, maxEntries: 50_000, maxBytes: 16_777_216, refreshFraction: 0.25, minRemainingMs: 300_000 });
  });

  it('enabled: false signs every request', () => {
    const config = buildConfig({ ...base, cache: { enabled: false } });
    const signer = withCache(config.signer, config.cache);
    const a = signer.sign(req);
    expect(signer.sign(req)).not.toBe(a);
  });

  it.each([
    [{ maxEntries: 0 }, /cache\.maxEntries: write at least 1/],
    [{ maxEntries: 'many' }, /cache\.maxEntries: write a whole number of URLs/],
    [{ refreshFraction: 1 }, /cache\.refreshFraction: write a fraction below 1/],
    [{ refreshFraction: -1 }, /cache\.refreshFraction: write a fraction from 0/],
    [{ minRemaining: 'soon' }, /cache\.minRemaining: "soon" is not a duration/],
    [{ minRemaining: '20m' }, /cache\.minRemaining: 20m is not shorter than expiry \(20m\)/],
    [{ ttl: '1m' }, /cache\.ttl: unknown key/],
  ])('rejects %j naming the key', (cache, message) => {
    expect(() => buildConfig({ ...base, cache })).toThrow(message);
  });
});
