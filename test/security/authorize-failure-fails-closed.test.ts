/**
 * Threat: when the upstream cannot answer the authorizing (or existence) HEAD, a redirect goes out
 * anyway, or a failure is cached and keeps answering later. Invariants, in both modes:
 * - upstream 5xx on the HEAD -> no redirect; the client gets the upstream's own answer to the GET;
 * - no answer within timeouts.authorize -> 504, unreachable -> 502, both with an OCI error body;
 * - concurrent requests during the outage share one HEAD and all fail closed;
 * - failures are never cached: the first request after recovery redirects;
 * - token mode with its key source (JWKS) down -> no redirect, the upstream decides.
 */
import { generateKeyPairSync } from 'node:crypto';
import type http from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { libtrustKeyId } from '../../src/authorize/token-keys.js';
import type { RegistryRedirectOptions } from '../../src/types.js';
import { BASIC, digestOf, startFakeUpstream } from '../helpers/fake-upstream.js';
import type { FakeUpstream } from '../helpers/fake-upstream.js';
import { startProxy } from '../helpers/proxy-server.js';
import type { RunningProxy } from '../helpers/proxy-server.js';
import { testSigner } from '../helpers/token-registry.js';
import { pull, registryClaims, signToken } from '../helpers/tokens.js';
import { request } from '../support/http.js';

const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const TOKEN_AUTH = {
  issuer: 'test-issuer',
  service: 'test-registry',
  realm: 'http://127.0.0.1:1/token',
  publicKeys: [keys.publicKey.export({ type: 'spki', format: 'pem' }).toString()],
};
const BEARER = `Bearer ${signToken(registryClaims({ issuer: TOKEN_AUTH.issuer, service: TOKEN_AUTH.service, access: pull('team/app'), expiresInSec: 3_600 }), keys.privateKey, 'RS256', { kid: libtrustKeyId(keys.publicKey) })}`;

const BLOB = Buffer.from('fail-closed blob');
const DIGEST = digestOf(BLOB);
const PATH = `/v2/team/app/blobs/${DIGEST}`;

let upstream: FakeUpstream;
const started: RunningProxy[] = [];

beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
});
afterEach(() => {
  upstream.override(undefined);
  upstream.seen.length = 0;
});
afterAll(async () => {
  await Promise.all(started.map((p) => p.close()));
  await upstream.close();
});

async function proxy(options: Partial<RegistryRedirectOptions>): Promise<RunningProxy> {
  const p = await startProxy({ upstream: upstream.url, signer: testSigner(), timeouts: { authorize: 300 }, ...options });
  started.push(p);
  return p;
}

/** The fake upstream only knows Basic; in token mode let it accept the bearer token too. */
function acceptBearer(req: http.IncomingMessage): void {
  if (req.headers.authorization === BEARER) req.headers.authorization = BASIC;
}

const modes = [
  ['upstream', {}, BASIC],
  ['token', { tokenAuth: TOKEN_AUTH }, BEARER],
] as const;

describe.each(modes)('%s mode fails closed', (_mode, extra, authorization) => {
  it.each([500, 502, 503])('upstream %i on the HEAD -> no redirect, the upstream\'s own answer to the GET', async (status) => {
    const p = await proxy(extra);
    upstream.override((req, res) => {
      res.writeHead(status, { 'Content-Type': 'application/json', 'Docker-Distribution-API-Version': 'registry/2.0' });
      res.end(req.method === 'HEAD' ? undefined : `{"errors":[{"code":"UNAVAILABLE","message":"upstream says ${status}"}]}`);
      return true;
    });
    const res = await request(`${p.url}${PATH}`, { headers: { authorization } });
    expect(res.status).toBe(status);
    expect(res.headers.location).toBeUndefined();
    expect(JSON.parse(res.body.toString())).toEqual({ errors: [{ code: 'UNAVAILABLE', message: `upstream says ${status}` }] });
    expect(upstream.seen.map((s) => s.method)).toEqual(['HEAD', 'GET']);

    // not cached: once the upstream recovers, the next request is authorized afresh and redirects
    upstream.override((req) => (acceptBearer(req), false));
    expect((await request(`${p.url}${PATH}`, { headers: { authorization } })).status).toBe(307);
  });

  it('a HEAD with no answer -> 504 OCI error for every concurrent request, one shared HEAD, then recovery', async () => {
    // 1.5 s leaves a busy machine ample time to get all 8 requests in while the one HEAD is pending.
    const p = await proxy({ ...extra, timeouts: { authorize: 1_500 } });
    upstream.override(() => true); // swallow: never answer
    const answers = await Promise.all(Array.from({ length: 8 }, () => request(`${p.url}${PATH}`, { headers: { authorization } })));
    for (const res of answers) {
      expect(res.status).toBe(504);
      expect(res.headers.location).toBeUndefined();
      expect(JSON.parse(res.body.toString()).errors[0].code).toBe('UNAVAILABLE');
    }
    expect(upstream.seen.filter((s) => s.method === 'HEAD')).toHaveLength(1);

    upstream.override((req) => (acceptBearer(req), false));
    expect((await request(`${p.url}${PATH}`, { headers: { authorization } })).status).toBe(307);
  });

  it('an unreachable upstream -> 502 OCI error, no Location', async () => {
    const p = await proxy({ ...extra, upstream: 'http://127.0.0.1:1' });
    const res = await request(`${p.url}${PATH}`, { headers: { authorization } });
    expect(res.status).toBe(502);
    expect(res.headers.location).toBeUndefined();
    expect(JSON.parse(res.body.toString())).toEqual({ errors: [{ code: 'UNAVAILABLE', message: 'upstream registry unreachable', detail: { reason: 'ECONNREFUSED' } }] });
  });
});

describe('token mode with its key source down', () => {
  it('an unreachable JWKS -> no redirect: the request goes upstream, which answers itself', async () => {
    const p = await proxy({ tokenAuth: { ...TOKEN_AUTH, publicKeys: undefined, jwksUrl: 'http://127.0.0.1:1/jwks.json' } });
    const withKid = `Bearer ${signToken(registryClaims({ issuer: TOKEN_AUTH.issuer, service: TOKEN_AUTH.service, access: pull('team/app') }), keys.privateKey, 'RS256', { kid: 'k1' })}`;
    const res = await request(`${p.url}${PATH}`, { headers: { authorization: withKid } });
    expect(res.headers.location).toBeUndefined();
    expect(res.status).toBe(401); // the fake upstream's own answer (it only knows Basic)
    expect(res.headers['www-authenticate']).toBe('Basic realm="fake-registry"');
    expect(upstream.seen.map((s) => s.method)).toEqual(['GET']);
  });
});
