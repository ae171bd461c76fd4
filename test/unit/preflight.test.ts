import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { classifyStorageAnswer, describePreflight, missingObject, storageErrorCode } from '../../src/server/preflight.js';

describe('preflight: reading storage answers per signer kind', () => {
  it.each([
    ['azure', 404, 'BlobNotFound', 'proven'],
    ['azure', 403, 'AuthenticationFailed', 'refused'],
    ['azure', 403, 'AuthorizationFailure', 'refused'],
    ['azure', 403, 'AuthorizationPermissionMismatch', 'refused'],
    ['azure', 404, 'ContainerNotFound', 'inconclusive'],
    ['azure', 403, undefined, 'refused'],
    ['s3', 404, 'NoSuchKey', 'proven'],
    ['s3', 403, 'SignatureDoesNotMatch', 'refused'],
    ['s3', 403, 'InvalidAccessKeyId', 'refused'],
    ['s3', 400, 'AuthorizationQueryParametersError', 'refused'],
    ['s3', 404, 'NoSuchBucket', 'inconclusive'],
    ['s3', 403, 'AccessDenied', 'inconclusive'],
    ['gcs', 404, 'NoSuchKey', 'proven'],
    ['gcs', 403, 'SignatureDoesNotMatch', 'refused'],
    ['gcs', 403, 'AccessDenied', 'refused'],
    ['cloudfront', 404, undefined, 'proven'],
    ['cloudfront', 403, 'InvalidKey', 'refused'],
    ['cloudfront', 403, 'AccessDenied', 'inconclusive'],
    ['hmac', 404, undefined, 'proven'],
    ['hmac', 403, undefined, 'inconclusive'],
    ['my-cdn', 403, 'SignatureDoesNotMatch', 'refused'],
    ['my-cdn', 401, undefined, 'inconclusive'],
    ['azure', 502, undefined, 'unreachable'],
    ['s3', 503, 'SlowDown', 'unreachable'],
    ['s3', 200, undefined, 'inconclusive'],
    // "not found" codes prove nothing with another status.
    ['s3', 403, 'NoSuchKey', 'refused'],
  ] as const)('%s %i %s -> %s', (kind, status, code, outcome) => {
    expect(classifyStorageAnswer(kind, status, code).outcome).toBe(outcome);
  });

  it('every refusal names the likely fix', () => {
    expect(classifyStorageAnswer('azure', 403, 'AuthenticationFailed').hint).toMatch(/signer\.azure\.accountKey/);
    expect(classifyStorageAnswer('s3', 403, 'SignatureDoesNotMatch').hint).toMatch(/signer\.s3\.secretAccessKey/);
    expect(classifyStorageAnswer('s3', 403, 'InvalidAccessKeyId').hint).toMatch(/signer\.s3\.accessKeyId/);
    expect(classifyStorageAnswer('s3', 400, 'AuthorizationQueryParametersError').hint).toMatch(/signer\.s3\.region/);
    expect(classifyStorageAnswer('gcs', 403, 'AccessDenied').hint).toMatch(/roles\/storage\.objectViewer/);
  });

  it('finds the error code in Azure headers, S3/GCS XML and GCS JSON', () => {
    expect(storageErrorCode({ 'x-ms-error-code': 'BlobNotFound' }, '')).toEqual({ code: 'BlobNotFound' });
    expect(storageErrorCode({}, '<?xml version="1.0"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>')).toEqual({ code: 'NoSuchKey', message: 'The specified key does not exist.' });
    expect(storageErrorCode({}, '{"error":{"code":403,"message":"denied","errors":[{"reason":"forbidden"}]}}')).toEqual({ code: 'forbidden', message: 'denied' });
    expect(storageErrorCode({}, 'Forbidden')).toEqual({});
  });

  it('signs for an object that cannot exist (random digest) and prints one line', () => {
    const a = missingObject();
    expect(a.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(missingObject().digest).not.toBe(a.digest);
    expect(describePreflight({ label: 'signers.cdn', kind: 'hmac', outcome: 'inconclusive', detail: 'storage answered 403', hint: 'check the key' })).toBe('signers.cdn (hmac): storage answered 403; check the key');
  });
});

describe('malformed keys fail at config validation', () => {
  const upstream = 'http://127.0.0.1:5000';
  it.each([
    ['a non-base64 Azure account key', { azure: { account: 'acct', accountKey: 'not-base64!', container: 'registry' } }, /^signer\.azure\.accountKey: not a base64 account key/],
    ['base64 with a broken group', { azure: { account: 'acct', accountKey: 'abcde', container: 'registry' } }, /^signer\.azure\.accountKey: not a base64 account key/],
    ['Azure managed identity on a plain-http endpoint', { azure: { account: 'acct', container: 'registry', endpoint: 'http://127.0.0.2:10000/acct' } }, /^signer\.azure\.accountKey: missing; http:\/\/127\.0\.0\.2:10000\/acct is plain http/],
    ['a GCS private key that does not parse', { gcs: { bucket: 'registry', clientEmail: 'a@b.iam.gserviceaccount.com', privateKey: '-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----' } }, /signer\.gcs\.privateKey: not a PEM private key/],
    ['a CloudFront private key that does not parse', { cloudfront: { baseUrl: 'https://d1.cloudfront.net', keyPairId: 'K2JCJMDEHXQW5F', privateKey: 'not a pem' } }, /signer\.cloudfront\.privateKey: not a PEM private key/],
  ])('%s', (_what, signer, message) => {
    expect(() => buildConfig({ upstream, signer })).toThrow(message);
  });

  it('preflight takes fail (default), warn or off', () => {
    const signer = { hmac: { preset: 'cloudflare', baseUrl: 'https://cdn.example', key: 'k' } };
    expect(buildConfig({ upstream, signer }).preflight).toBe('fail');
    expect(buildConfig({ upstream, signer, preflight: 'warn' }).preflight).toBe('warn');
    expect(() => buildConfig({ upstream, signer, preflight: 'maybe' })).toThrow(/^preflight: write "fail"/);
  });
});
