import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, grantsPull } from '../../src/authorize/token.js';
import type { TokenCheck, TokenVerifier } from '../../src/authorize/token.js';
import { jwkThumbprint, libtrustKeyId } from '../../src/authorize/token-keys.js';
import type { TokenAuthOptions } from '../../src/types.js';
import { requireBinary } from '../support/binaries.js';
import { makeCertChain, pull, registryClaims, signToken } from '../helpers/tokens.js';
import type { CertChain } from '../helpers/tokens.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsaPublicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const ecPublicPem = ec.publicKey.export({ type: 'spki', format: 'pem' }).toString();

const BASE = { issuer: 'test-issuer', service: 'test-registry', realm: 'https://auth.example.test/token' } as const;
const claims = (over: Partial<Parameters<typeof registryClaims>[0]> = {}) => registryClaims({ ...BASE, access: pull('team/app'), ...over });

function without(c: Record<string, unknown>, key: string): Record<string, unknown> {
  const copy = { ...c };
  delete copy[key];
  return copy;
}

async function check(v: TokenVerifier, token: string | undefined, repository = 'team/app'): Promise<TokenCheck> {
  return v.check(token === undefined ? undefined : `Bearer ${token}`, repository);
}

describe('token verifier: accepted tokens', () => {
  const verifier = createTokenVerifier({ ...BASE, publicKeys: [rsaPublicPem, ecPublicPem], algorithms: ['RS256', 'PS256', 'ES256'] });

  it.each([
    ['RS256 with the libtrust kid docker token servers use', () => signToken(claims(), rsa.privateKey, 'RS256', { kid: libtrustKeyId(rsa.publicKey) })],
    ['RS256 with an RFC 7638 thumbprint kid', () => signToken(claims(), rsa.privateKey, 'RS256', { kid: jwkThumbprint(rsa.publicKey) })],
    ['PS256 with an RSA key', () => signToken(claims(), rsa.privateKey, 'PS256', { kid: libtrustKeyId(rsa.publicKey) })],
    ['ES256 with an EC key', () => signToken(claims(), ec.privateKey, 'ES256', { kid: libtrustKeyId(ec.publicKey) })],
    ['exp 30 s ago, inside the 60 s skew', () => signToken(claims({ expiresInSec: -30 }), rsa.privateKey, 'RS256', { kid: libtrustKeyId(rsa.publicKey) })],
    ['actions ["*"]', () => signToken(claims({ access: [{ type: 'repository', name: 'team/app', actions: ['*'] }] }), rsa.privateKey, 'RS256', { kid: libtrustKeyId(rsa.publicKey) })],
    ['an access entry with a class (distribution 2.8 ignores it)', () => signToken(claims({ access: [{ type: 'repository', class: 'image', name: 'team/app', actions: ['pull'] } as never] }), rsa.privateKey, 'RS256', { kid: libtrustKeyId(rsa.publicKey) })],
  ])('%s', async (_why, make) => {
    expect(await check(verifier, make())).toEqual({ ok: true });
  });

  it('without a kid, a token one of the configured keys signed is left to the upstream (distribution 2.8 refuses it, others accept)', async () => {
    const ecFirst = createTokenVerifier({ ...BASE, publicKeys: [ecPublicPem, rsaPublicPem], algorithms: ['RS256', 'ES256'] });
    expect(await check(ecFirst, signToken(claims(), rsa.privateKey, 'RS256'))).toMatchObject({ ok: false, error: 'unusual' });
    expect(await check(ecFirst, signToken(claims(), ec.privateKey, 'ES256'))).toMatchObject({ ok: false, error: 'unusual' });
    const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect(await check(ecFirst, signToken(claims(), stranger.privateKey, 'RS256'))).toMatchObject({ ok: false, error: 'invalid_token' });
  });

  it('accepts a lower-case "bearer" scheme like distribution', async () => {
    expect(await verifier.check(`bearer ${signToken(claims(), rsa.privateKey, 'RS256', { kid: libtrustKeyId(rsa.publicKey) })}`, 'team/app')).toEqual({ ok: true });
  });

  it('libtrust key IDs have the 12 groups of 4 base32 characters distribution expects', () => {
    expect(libtrustKeyId(rsa.publicKey)).toMatch(/^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
  });
});

describe('token verifier: rejections name the RFC 6750 error distribution sends', () => {
  const verifier = createTokenVerifier({ ...BASE, publicKeys: [rsaPublicPem], algorithms: ['RS256'] });
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 });

  it.each([
    ['no header', undefined, 'missing'],
    ['Basic credentials', 'Basic YWxpY2U6cHc=', 'missing'],
    ['"Bearer" without a token', 'Bearer', 'missing'],
    ['"Bearer " with an empty token (distribution: a malformed token)', 'Bearer ', 'invalid_token'],
    ['two spaces after Bearer (distribution: not a bearer header)', 'Bearer  abc.def.ghi', 'missing'],
    ['garbage', 'Bearer abc.def', 'invalid_token'],
  ])('%s -> %s', async (_why, header, error) => {
    expect(await verifier.check(header, 'team/app')).toMatchObject({ ok: false, error });
  });

  it.each([
    ['signed by an untrusted key', () => signToken(claims(), other.privateKey, 'RS256'), 'invalid_token'],
    ['kid of an untrusted key, signed by a trusted one', () => signToken(claims(), rsa.privateKey, 'RS256', { kid: libtrustKeyId(other.publicKey) }), 'invalid_token'],
    ['algorithm not in the pinned list (PS256), signed by another key', () => signToken(claims(), other.privateKey, 'PS256', { kid: libtrustKeyId(rsa.publicKey) }), 'invalid_token'],
    ['algorithm not in the pinned list (RS384), signed by the trusted key: the upstream decides', () => signToken(claims(), rsa.privateKey, 'RS384', { kid: libtrustKeyId(rsa.publicKey) }), 'unusual'],
    ['no exp claim', () => signToken(without(claims(), 'exp'), rsa.privateKey, 'RS256'), 'invalid_token'],
    ['exp beyond the skew', () => signToken(claims({ expiresInSec: -120 }), rsa.privateKey, 'RS256'), 'invalid_token'],
    ['nbf beyond the skew', () => signToken(claims({ notBeforeSec: 120 }), rsa.privateKey, 'RS256'), 'invalid_token'],
    ['another issuer', () => signToken({ ...claims(), iss: 'evil' }, rsa.privateKey, 'RS256'), 'invalid_token'],
    ['another service', () => signToken({ ...claims(), aud: 'other-registry' }, rsa.privateKey, 'RS256'), 'invalid_token'],
    ['pull on another repository', () => signToken(claims({ access: pull('team/other') }), rsa.privateKey, 'RS256', { kid: libtrustKeyId(rsa.publicKey) }), 'insufficient_scope'],
    ['push only', () => signToken(claims({ access: [{ type: 'repository', name: 'team/app', actions: ['push'] }] }), rsa.privateKey, 'RS256', { kid: libtrustKeyId(rsa.publicKey) }), 'insufficient_scope'],
    ['no access claim', () => signToken(without(claims(), 'access'), rsa.privateKey, 'RS256', { kid: libtrustKeyId(rsa.publicKey) }), 'insufficient_scope'],
  ])('%s -> %s', async (_why, make, error) => {
    expect(await check(verifier, make())).toMatchObject({ ok: false, error });
  });

  it('builds the challenge exactly as distribution does', () => {
    const prefix = 'Bearer realm="https://auth.example.test/token",service="test-registry",scope="repository:team/app:pull"';
    expect(verifier.challenge('team/app', 'missing')).toBe(prefix);
    expect(verifier.challenge('team/app', 'invalid_token')).toBe(`${prefix},error="invalid_token"`);
    expect(verifier.challenge('team/app', 'insufficient_scope')).toBe(`${prefix},error="insufficient_scope"`);
  });
});

describe('grantsPull reads the access claim like distribution', () => {
  it.each([
    [[{ type: 'repository', name: 'a/b', actions: ['pull'] }], true],
    [[{ type: 'repository', name: 'a/b', actions: ['push', '*'] }], true],
    [[{ type: 'repository', name: 'a/b', class: '', actions: ['pull'] }], true],
    [[{ type: 'repository', name: 'a/b', class: 'plugin', actions: ['pull'] }], true],
    [[{ type: 'registry', name: 'catalog', actions: ['*'] }], false],
    [[{ type: 'repository', name: 'a/b/c', actions: ['pull'] }], false],
    [[{ type: 'repository', name: 'a', actions: ['pull'] }], false],
    [[{ type: 'repository', name: 'a/b', actions: 'pull' }], false],
    [{ type: 'repository', name: 'a/b', actions: ['pull'] }, false],
    [[null, 'x', { type: 'repository', name: 'a/b', actions: ['pull'] }], true],
  ])('%j -> %s', (access, expected) => {
    expect(grantsPull(access, 'a/b')).toBe(expected);
  });
});

describe('token verifier: construction-time validation', () => {
  const privatePem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  it.each([
    [{ ...BASE, publicKeys: [rsaPublicPem], algorithms: ['HS256'] }, /tokenAuth\.algorithms: "HS256" is not accepted \(unsigned and shared-secret tokens are never accepted\)/],
    [{ ...BASE, publicKeys: [rsaPublicPem], algorithms: ['none'] }, /"none" is not accepted/],
    [{ ...BASE, publicKeys: [rsaPublicPem], algorithms: [] }, /tokenAuth\.algorithms: write a non-empty list/],
    [{ ...BASE }, /tokenAuth: no signing keys; set publicKeys .*, rootCertBundle .* or jwksUrl/],
    [{ ...BASE, publicKeys: [privatePem] }, /tokenAuth\.publicKeys\[0\]: holds a private key; configure only the public key/],
    [{ ...BASE, publicKeys: ['not a pem'] }, /tokenAuth\.publicKeys\[0\]: no PEM block found/],
    [{ ...BASE, publicKeys: [ecPublicPem] }, /tokenAuth\.publicKeys\[0\]: this ec \(prime256v1\) key cannot verify any of the configured algorithms \(RS256\); add one of ES256/],
    [{ ...BASE, publicKeys: [rsa.privateKey] }, /tokenAuth\.publicKeys\[0\]: a private key was given/],
    [{ ...BASE, realm: 'https://x/"y', publicKeys: [rsaPublicPem] }, /tokenAuth\.realm: must not contain quotes/],
    [{ ...BASE, realm: 'auth.example.com', publicKeys: [rsaPublicPem] }, /tokenAuth\.realm: "auth\.example\.com" is not an http\(s\) URL/],
    [{ ...BASE, service: '', publicKeys: [rsaPublicPem] }, /tokenAuth\.service: required; write e\.g\. "my-registry"/],
    [{ ...BASE, jwksUrl: 'file:///etc/jwks.json' }, /tokenAuth\.jwksUrl: .* is not an http\(s\) URL/],
    [{ ...BASE, rootCertBundle: rsaPublicPem }, /tokenAuth\.rootCertBundle: no "-----BEGIN CERTIFICATE-----" block found/],
    [{ ...BASE, publicKeys: [rsaPublicPem], clockSkew: -1 }, /tokenAuth\.clockSkew: write milliseconds between 0 and 600000/],
    [{ ...BASE, publicKeys: [rsaPublicPem], audience: 'x' }, /tokenAuth\.audience: unknown option; known: issuer, service/],
  ])('rejects %#', (options, message) => {
    expect(() => createTokenVerifier(options as unknown as TokenAuthOptions)).toThrow(message);
  });
});

describe.skipIf(!requireBinary('openssl'))('token verifier: x5c chains against a rootCertBundle (openssl CA)', () => {
  let chain: CertChain;
  let stranger: CertChain;
  beforeAll(async () => {
    [chain, stranger] = await Promise.all([makeCertChain('trusted'), makeCertChain('stranger')]);
  });
  afterAll(async () => {
    await chain?.cleanup();
    await stranger?.cleanup();
  });

  const verifier = () => createTokenVerifier({ ...BASE, rootCertBundle: chain.caPem, algorithms: ['ES256'] });

  it('accepts a leaf signed by the bundle CA, with or without the CA in x5c', async () => {
    const v = verifier();
    expect(await check(v, signToken(claims(), chain.leafKey, 'ES256', { x5c: chain.x5c }))).toEqual({ ok: true });
    expect(await check(v, signToken(claims(), chain.leafKey, 'ES256', { x5c: [chain.x5c[0]] }))).toEqual({ ok: true });
  });

  it('takes the certificates after the leaf as a pool, in any order, like Go (an unrelated one is ignored)', async () => {
    const v = verifier();
    expect(await check(v, signToken(claims(), chain.leafKey, 'ES256', { x5c: [chain.x5c[0], stranger.x5c[1], chain.x5c[1]] }))).toEqual({ ok: true });
    expect(await check(v, signToken(claims(), chain.leafKey, 'ES256', { x5c: [chain.x5c[0], stranger.x5c[0]] }))).toEqual({ ok: true });
  });

  it('rejects a chain that leads to another CA', async () => {
    expect(await check(verifier(), signToken(claims(), stranger.leafKey, 'ES256', { x5c: stranger.x5c }))).toMatchObject({ error: 'invalid_token', reason: expect.stringMatching(/trusted root/) });
  });

  it('rejects a token signed by another key than the x5c leaf', async () => {
    expect(await check(verifier(), signToken(claims(), stranger.leafKey, 'ES256', { x5c: chain.x5c }))).toMatchObject({ error: 'invalid_token' });
  });

  it('rejects a leaf used as an issuer (not a CA) and a malformed x5c', async () => {
    // stranger leaf "issued by" the trusted leaf: the trusted leaf is no CA, and did not sign it.
    const v = verifier();
    expect(await check(v, signToken(claims(), stranger.leafKey, 'ES256', { x5c: [stranger.x5c[0], chain.x5c[0]] }))).toMatchObject({ error: 'invalid_token' });
    expect(await check(v, signToken(claims(), chain.leafKey, 'ES256', { x5c: 'AAAA' }))).toMatchObject({ error: 'invalid_token' });
    expect(await check(v, signToken(claims(), chain.leafKey, 'ES256', { x5c: ['!!notbase64!!'] }))).toMatchObject({ error: 'invalid_token' });
  });

  it('a kid that names no trusted key is rejected, never tried against other keys; no kid tries publicKeys and leaves a match to the upstream', async () => {
    const v = createTokenVerifier({ ...BASE, rootCertBundle: chain.caPem, publicKeys: [chain.leafPem], algorithms: ['ES256'] });
    expect(await check(v, signToken(claims(), chain.leafKey, 'ES256', { kid: 'unknown-kid' }))).toMatchObject({ error: 'invalid_token', reason: 'kid names no trusted key' });
    expect(await check(v, signToken(claims(), chain.leafKey, 'ES256'))).toMatchObject({ ok: false, error: 'unusual' });
  });
});

describe('token verifier: JWKS URL', () => {
  let server: http.Server;
  let url: string;
  let fetches = 0;
  let up = true;
  const jwk = { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'key-1', use: 'sig', alg: 'RS256' };
  const rotated = generateKeyPairSync('rsa', { modulusLength: 2048 });
  let published: object[] = [jwk];

  beforeAll(async () => {
    server = http.createServer((_req, res) => {
      fetches++;
      if (!up) {
        res.writeHead(503).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: published }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('verifies by kid from the JWKS, fetching it once and then from cache', async () => {
    const v = createTokenVerifier({ ...BASE, jwksUrl: url, algorithms: ['RS256', 'PS256'] });
    fetches = 0;
    const token = signToken(claims(), rsa.privateKey, 'RS256', { kid: 'key-1' });
    expect(await check(v, token)).toEqual({ ok: true });
    expect(await check(v, token)).toEqual({ ok: true });
    expect(fetches).toBe(1);
  });

  it('rejects an unknown kid, and a token whose alg differs from the JWK alg', async () => {
    const v = createTokenVerifier({ ...BASE, jwksUrl: url, algorithms: ['RS256', 'PS256'] });
    expect(await check(v, signToken(claims(), rsa.privateKey, 'RS256', { kid: 'key-2' }))).toMatchObject({ error: 'invalid_token', reason: 'kid not found in the JWKS' });
    expect(await check(v, signToken(claims(), rsa.privateKey, 'PS256', { kid: 'key-1' }))).toMatchObject({ error: 'invalid_token' });
  });

  it('refreshes: a key rotated in later is fetched on first sight of its kid; a removed kid stops working after jwksCacheMaxAge', async () => {
    const v = createTokenVerifier({ ...BASE, jwksUrl: url, algorithms: ['RS256'], jwksCacheMaxAge: 100 });
    const oldToken = signToken(claims(), rsa.privateKey, 'RS256', { kid: 'key-1' });
    expect(await check(v, oldToken)).toEqual({ ok: true });
    published = [{ ...rotated.publicKey.export({ format: 'jwk' }), kid: 'key-2', use: 'sig', alg: 'RS256' }];
    try {
      expect(await check(v, signToken(claims(), rotated.privateKey, 'RS256', { kid: 'key-2' }))).toEqual({ ok: true });
      await new Promise((resolve) => setTimeout(resolve, 250)); // only a lower bound: waiting longer changes nothing
      expect(await check(v, oldToken)).toMatchObject({ ok: false, error: 'invalid_token' });
    } finally {
      published = [jwk];
    }
  });

  it('a token server on one of the Fetch standard\'s "bad ports" is reached (fetch would refuse it)', async ({ skip }) => {
    // fetch() refuses these ports outright; a token server may well listen on one.
    const other = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    let port: number | undefined;
    for (const candidate of [6665, 6666, 6667, 6668, 6669, 6000, 6566, 10080]) {
      const bound = await new Promise<boolean>((resolve) => {
        other.once('error', () => resolve(false));
        other.listen(candidate, '127.0.0.1', () => resolve(true));
      });
      if (bound) {
        port = candidate;
        break;
      }
    }
    if (port === undefined) {
      skip('no bad port free on 127.0.0.1');
      return;
    }
    try {
      await expect(fetch(`http://127.0.0.1:${port}/jwks.json`)).rejects.toThrow();
      const v = createTokenVerifier({ ...BASE, jwksUrl: `http://127.0.0.1:${port}/jwks.json`, algorithms: ['RS256'] });
      expect(await check(v, signToken(claims(), rsa.privateKey, 'RS256', { kid: 'key-1' }))).toEqual({ ok: true });
    } finally {
      other.closeAllConnections();
      await new Promise((resolve) => other.close(resolve));
    }
  });

  it('a redirecting or oversized JWKS is "unavailable", never followed or parsed', async () => {
    const other = http.createServer((req, res) => {
      if (req.url === '/moved') {
        res.writeHead(302, { location: url }).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk], padding: 'x'.repeat(1 << 20) }));
    });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    try {
      for (const path of ['/moved', '/big']) {
        const v = createTokenVerifier({ ...BASE, jwksUrl: base + path, algorithms: ['RS256'] });
        expect(await check(v, signToken(claims(), rsa.privateKey, 'RS256', { kid: 'key-1' })), path).toMatchObject({ ok: false, error: 'unavailable' });
      }
    } finally {
      other.closeAllConnections();
      await new Promise((resolve) => other.close(resolve));
    }
  });

  it('an unreachable JWKS is "unavailable" (the upstream then decides), never a pass', async () => {
    const v = createTokenVerifier({ ...BASE, jwksUrl: url, algorithms: ['RS256'] });
    up = false;
    try {
      expect(await check(v, signToken(claims(), rsa.privateKey, 'RS256', { kid: 'key-1' }))).toMatchObject({ ok: false, error: 'unavailable' });
    } finally {
      up = true;
    }
  });
});
