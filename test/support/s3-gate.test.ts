/**
 * Proves the SigV4 gate in front of s3rver rejects every kind of bad URL (s3rver alone accepts
 * them all), and that both signature checkers agree with AWS's published worked example.
 */
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from './http.js';
import { startS3Gate, verifyPresignedRequest, type RunningS3Gate } from './s3-gate.js';
import { checkSigV4Url } from './sigv4.js';

// AWS S3 docs, "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)": the
// example presigned GET of examplebucket/test.txt, signed 2013-05-24T00:00:00Z for 86400 s.
const AWS_EXAMPLE = {
  secret: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  url:
    'https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256' +
    '&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z' +
    '&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404',
  signedAt: Date.UTC(2013, 4, 24),
};

function asRequest(url: string, method = 'GET') {
  const u = new URL(url);
  return { method, url: `${u.pathname}${u.search}`, headers: { host: u.host } };
}

describe('SigV4 checkers against the AWS documentation example', () => {
  const keys = { AKIAIOSFODNN7EXAMPLE: AWS_EXAMPLE.secret };
  const opts = { keys, region: 'us-east-1', now: AWS_EXAMPLE.signedAt + 1_000 };

  it('the gate (@smithy/signature-v4) accepts the published URL', async () => {
    expect(await verifyPresignedRequest(asRequest(AWS_EXAMPLE.url), opts)).toMatchObject({ ok: true });
  });

  it('the node:crypto checker accepts it too', () => {
    expect(checkSigV4Url(AWS_EXAMPLE.url, { secretAccessKey: AWS_EXAMPLE.secret })).toMatchObject({ ok: true, accessKeyId: 'AKIAIOSFODNN7EXAMPLE', region: 'us-east-1', signedHeaders: ['host'] });
  });

  it.each([
    ['another object', AWS_EXAMPLE.url.replace('/test.txt', '/test2.txt')],
    ['a longer lifetime', AWS_EXAMPLE.url.replace('X-Amz-Expires=86400', 'X-Amz-Expires=86401')],
    ['a flipped signature digit', AWS_EXAMPLE.url.replace('X-Amz-Signature=a', 'X-Amz-Signature=b')],
    ['another host', AWS_EXAMPLE.url.replace('examplebucket.', 'otherbucket.')],
  ])('both reject %s', async (_what, url) => {
    expect(await verifyPresignedRequest(asRequest(url), opts)).toMatchObject({ ok: false, code: 'SignatureDoesNotMatch', status: 403 });
    expect(checkSigV4Url(url, { secretAccessKey: AWS_EXAMPLE.secret }).ok).toBe(false);
  });

  it('both reject the wrong secret and another method', async () => {
    expect(await verifyPresignedRequest(asRequest(AWS_EXAMPLE.url), { ...opts, keys: { AKIAIOSFODNN7EXAMPLE: 'x' + AWS_EXAMPLE.secret } })).toMatchObject({ code: 'SignatureDoesNotMatch' });
    expect(await verifyPresignedRequest(asRequest(AWS_EXAMPLE.url, 'HEAD'), opts)).toMatchObject({ code: 'SignatureDoesNotMatch' });
    expect(checkSigV4Url(AWS_EXAMPLE.url, { secretAccessKey: 'x' }).ok).toBe(false);
    expect(checkSigV4Url(AWS_EXAMPLE.url, { secretAccessKey: AWS_EXAMPLE.secret, method: 'HEAD' }).ok).toBe(false);
  });

  it('the gate rejects the URL once expired, before it is valid, with an unknown key or region', async () => {
    expect(await verifyPresignedRequest(asRequest(AWS_EXAMPLE.url), { ...opts, now: AWS_EXAMPLE.signedAt + 86_401_000 })).toMatchObject({ status: 403, code: 'AccessDenied', message: 'Request has expired' });
    expect(await verifyPresignedRequest(asRequest(AWS_EXAMPLE.url), { ...opts, now: AWS_EXAMPLE.signedAt - 16 * 60_000 })).toMatchObject({ status: 403, message: 'Request is not valid yet' });
    expect(await verifyPresignedRequest(asRequest(AWS_EXAMPLE.url), { ...opts, keys: { OTHER: 'x' } })).toMatchObject({ status: 403, code: 'InvalidAccessKeyId' });
    expect(await verifyPresignedRequest(asRequest(AWS_EXAMPLE.url), { ...opts, region: 'eu-west-1' })).toMatchObject({ status: 400, code: 'AuthorizationQueryParametersError' });
  });
});

describe('the gate in front of a live s3rver', () => {
  let s3: RunningS3Gate;
  const key = 'docker/registry/v2/blobs/sha256/aa/aaaa/data';
  const body = Buffer.from('layer bytes\n');

  beforeAll(async () => {
    s3 = await startS3Gate({ keys: { S3RVER: 'S3RVER', AKIDSECOND: 'second-secret' } });
    await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: body }));
  }, 20_000);
  afterAll(async () => {
    await s3?.stop();
  });

  it('serves an object for a URL presigned by the AWS SDK, with any of its keys', async () => {
    s3.requests.length = 0;
    const ok = await request(await s3.presign(key));
    expect(ok.status).toBe(200);
    expect(ok.body.equals(body)).toBe(true);
    const second = await request(await s3.presign(key, { accessKeyId: 'AKIDSECOND', secretAccessKey: 'second-secret' }));
    expect(second.status).toBe(200);
    expect(s3.requests.map((r) => [r.verdict.code, r.status])).toEqual([['OK', 200], ['OK', 200]]);
  });

  it('rejects wrong key, unknown key, tampered, expired, unsigned, other region, other method and header auth', async () => {
    const good = new URL(await s3.presign(key));
    const tamperedPath = new URL(good);
    tamperedPath.pathname = tamperedPath.pathname.replace('/aaaa/', '/aaab/');
    const tamperedSig = new URL(good);
    tamperedSig.searchParams.set('X-Amz-Signature', '0'.repeat(64));
    const unsigned = `${s3.endpoint}/${s3.bucket}/${key}`;
    const cases: [string, string | URL, { method?: string; headers?: Record<string, string> }, number, string][] = [
      ['wrong secret', await s3.presign(key, { secretAccessKey: 'not-the-secret' }), {}, 403, 'SignatureDoesNotMatch'],
      ['unknown key id', await s3.presign(key, { accessKeyId: 'AKIDUNKNOWN', secretAccessKey: 'S3RVER' }), {}, 403, 'InvalidAccessKeyId'],
      ['tampered key', tamperedPath, {}, 403, 'SignatureDoesNotMatch'],
      ['tampered signature', tamperedSig, {}, 403, 'SignatureDoesNotMatch'],
      ['expired', await s3.presign(key, { expiresIn: 60, signingDate: new Date(Date.now() - 3_600_000) }), {}, 403, 'AccessDenied'],
      ['unsigned', unsigned, {}, 403, 'AccessDenied'],
      ['other region', await s3.presign(key, { region: 'eu-west-1' }), {}, 400, 'AuthorizationQueryParametersError'],
      ['HEAD with a GET signature', good, { method: 'HEAD' }, 403, 'SignatureDoesNotMatch'],
      ['Authorization header', unsigned, { headers: { authorization: 'AWS4-HMAC-SHA256 Credential=S3RVER/x' } }, 403, 'AccessDenied'],
    ];
    s3.requests.length = 0;
    for (const [what, url, init, status, code] of cases) {
      const res = await request(url, init);
      expect([what, res.status]).toEqual([what, status]);
      if (init.method !== 'HEAD') expect([what, res.body.toString()]).toEqual([what, expect.stringContaining(`<Code>${code}</Code>`)]);
    }
    expect(s3.requests.map((r) => r.verdict.code)).toEqual(cases.map((c) => c[4]));
    // the good URL still works: rejections were about the URLs, not the gate
    expect((await request(good)).status).toBe(200);
  });

  it('control: s3rver alone serves tampered and unsigned URLs (why the gate exists)', async () => {
    const good = new URL(await s3.presign(key));
    const direct = new URL(`${s3.directEndpoint}${good.pathname}${good.search}`);
    direct.searchParams.set('X-Amz-Signature', '0'.repeat(64));
    expect((await request(direct)).status).toBe(200);
    expect((await request(`${s3.directEndpoint}/${s3.bucket}/${key}`)).status).toBe(200);
  });
});
