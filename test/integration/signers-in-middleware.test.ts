import { randomBytes } from 'node:crypto';
import http from 'node:http';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cachedSigner, defineSigner, registryRedirect } from '../../src/index.js';
import { s3Signer } from '../../src/signers/s3.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer } from '../../src/server/server.js';
import { silentLogger } from '../../src/log.js';
import type { CacheResult, RegistryRedirectOptions, SignRequest } from '../../src/index.js';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { checkSigV4Url } from '../support/sigv4.js';

let upstream: FakeUpstream;
const servers: http.Server[] = [];
const BLOB = randomBytes(2048);
const DIGEST = digestOf(BLOB);

beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
  upstream.blobs.set('team/other', new Map([[DIGEST, BLOB]]));
});
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await upstream.close();
});

function app(options: Pick<RegistryRedirectOptions, 'signer'> & Partial<RegistryRedirectOptions>) {
  const mw = registryRedirect({ upstream: upstream.url, ...options });
  const server = http.createServer((req, res) => mw(req, res));
  servers.push(server);
  return server;
}

describe('defineSigner', () => {
  it('a custom signer redirects blob GETs; with cachedSigner it signs each object once', async () => {
    const calls: SignRequest[] = [];
    const results: CacheResult[] = [];
    const custom = defineSigner({
      name: 'my-cdn',
      objectKey: (r: SignRequest) => r.digest,
      sign: (r: SignRequest) => {
        calls.push(r);
        return { url: `https://cdn.example.com/blobs/${r.digest}?n=${calls.length}`, expiresAt: Date.now() + 600_000 };
      },
    });
    const server = app({ signer: cachedSigner(custom, { onResult: (r) => results.push(r) }) });
    for (const repo of ['team/app', 'team/app', 'team/other']) {
      const res = await request(server).get(`/v2/${repo}/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0);
      expect(res.status).toBe(307);
      expect(res.headers.location).toBe(`https://cdn.example.com/blobs/${DIGEST}?n=1`);
    }
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ repository: 'team/app', digest: DIGEST, method: 'GET', size: BLOB.length });
    expect(results).toEqual(['miss', 'hit', 'hit']);
  });

  it('the cache never skips authorization: an unauthorized caller gets the upstream 401, not the cached URL', async () => {
    const signer = cachedSigner(defineSigner({ name: 'c', sign: () => ({ url: 'https://cdn.example.com/x', expiresAt: Date.now() + 600_000 }) }));
    const server = app({ signer });
    await request(server).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0).expect(307);
    const anonymous = await request(server).get(`/v2/team/app/blobs/${DIGEST}`).redirects(0);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.location).toBeUndefined();
  });

  it.each([
    [{ sign: () => ({ url: 'x', expiresAt: 0 }) }, /defineSigner: name undefined must be 1-64 letters/],
    [{ name: 'has space', sign: () => ({ url: 'x', expiresAt: 0 }) }, /defineSigner: name "has space"/],
    [{ name: 'x' }, /defineSigner: signer "x" needs a sign\(/],
    [{ name: 'x', sign: () => ({ url: 'x', expiresAt: 0 }), close: 'no' }, /defineSigner: signer "x": close must be a function/],
    [{ name: 'x', sign: () => ({ url: 'x', expiresAt: 0 }), cacheKey: 'digest' }, /defineSigner: signer "x": cacheKey must be a function/],
  ])('rejects a malformed signer at construction: %j', (signer, message) => {
    expect(() => defineSigner(signer as never)).toThrow(message);
  });
});

describe('s3Signer behind the middleware', () => {
  it('answers 307 to a presigned GET that verifies; HEAD is passed through, never redirected', async () => {
    const signer = s3Signer({ bucket: 'registry', region: 'us-east-1', endpoint: 'http://127.0.0.2:4568', forcePathStyle: true, accessKeyId: 'AK', secretAccessKey: 'SK' });
    const server = app({ signer });
    const res = await request(server).get(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0);
    expect(res.status).toBe(307);
    expect(res.headers.location!.startsWith(`http://127.0.0.2:4568/registry/docker/registry/v2/blobs/sha256/${DIGEST.slice(7, 9)}/${DIGEST.slice(7)}/data?`)).toBe(true);
    expect(checkSigV4Url(res.headers.location!, { secretAccessKey: 'SK' }).ok).toBe(true);
    const head = await request(server).head(`/v2/team/app/blobs/${DIGEST}`).set('Authorization', BASIC).redirects(0);
    expect(head.status).toBe(200);
    expect(head.headers.location).toBeUndefined();
    await signer.close?.();
  });
});

describe('serve: credentials are resolved at startup', () => {
  it('an S3 signer without credentials anywhere stops startup with a message naming the keys', async () => {
    const saved = { ...process.env };
    for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
    Object.assign(process.env, { AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: '/nonexistent/c', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/c' });
    try {
      const config = buildConfig({ listen: '127.0.0.1:0', upstream: upstream.url, signer: { s3: { bucket: 'registry', region: 'us-east-1' } } });
      await expect(startServer(config, silentLogger)).rejects.toThrow(/signer\.s3: no AWS credentials.*signer\.s3\.accessKeyId/);
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});
