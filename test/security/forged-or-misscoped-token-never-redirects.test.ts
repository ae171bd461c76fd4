/**
 * Threat: a token that distribution would refuse gets a redirect from token mode (which verifies
 * tokens itself). Invariant: every such token gets exactly the upstream's answer (401, same
 * WWW-Authenticate challenge, same body), no Location, and is refused locally: the proxy does
 * not even ask the upstream. Each forgery is checked against real distribution 2.8.2.
 */
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { libtrustKeyId } from '../../src/authorize/token-keys.js';
import { answerShape } from '../helpers/registry-api.js';
import { startProxy } from '../helpers/proxy-server.js';
import type { RunningProxy } from '../helpers/proxy-server.js';
import { startTokenRegistry, testSigner } from '../helpers/token-registry.js';
import type { TokenRegistry } from '../helpers/token-registry.js';
import { hs256WithPublicKey, pull, registryClaims, signToken, unsignedToken, withPayload } from '../helpers/tokens.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeTokenSigner } from '../support/token-auth.js';
import type { TokenSigner } from '../support/token-auth.js';

const has = requireBinary('docker-registry') && requireBinary('openssl');

describe.skipIf(!has)('forged or misscoped tokens never redirect (token mode)', () => {
  let world: TokenRegistry;
  let proxy: RunningProxy;
  let impostor: TokenSigner;
  let digest: string;
  const attacker = generateKeyPairSync('rsa', { modulusLength: 2048 });

  beforeAll(async () => {
    world = await startTokenRegistry();
    [digest, impostor] = await Promise.all([world.push('team/app'), makeTokenSigner(world.tokens.issuer)]);
    proxy = await startProxy({ upstream: world.front.url, signer: testSigner(), tokenAuth: world.tokenAuth() });
  }, 30_000);

  afterAll(async () => {
    await proxy?.close();
    await impostor?.cleanup();
    await world?.stop();
  }, 15_000);

  const claims = (over: Record<string, unknown> = {}) => ({
    ...registryClaims({ issuer: world.tokens.issuer, service: world.tokens.service, access: pull('team/app') }),
    ...over,
  });
  /** The trusted certificate as an `x5c` header value. */
  const x5c = () => [new X509Certificate(world.tokens.signer.certPem).raw.toString('base64')];
  /** Signed by the trusted key with the trusted certificate: only the claims make it bad. */
  const trusted = (c: Record<string, unknown>) => signToken(c, world.tokens.signer.keyPem, 'RS256', { x5c: x5c() });
  /** The libtrust key ID of the trusted certificate's key: distribution accepts it as a `kid`. */
  const trustedKid = () => libtrustKeyId(new X509Certificate(world.tokens.signer.certPem).publicKey);

  const forgeries: Array<[string, () => string]> = [
    ['token for another repository', () => world.bearer(pull('team/other'))],
    ['token with push but not pull', () => world.bearer([{ type: 'repository', name: 'team/app', actions: ['push'] }])],
    ['token for another service (aud)', () => `Bearer ${trusted(claims({ aud: 'another-registry' }))}`],
    ['token from another issuer', () => `Bearer ${trusted(claims({ iss: 'another-issuer' }))}`],
    ['expired token', () => world.bearer(pull('team/app'), -300)],
    ['token not yet valid (nbf in 5 minutes)', () => `Bearer ${trusted(claims({ nbf: Math.floor(Date.now() / 1000) + 300 }))}`],
    ['token without exp', () => {
      const c = claims();
      delete c.exp;
      return `Bearer ${trusted(c)}`;
    }],
    ['alg: none', () => `Bearer ${unsignedToken(claims())}`],
    ['alg: none with the trusted x5c', () => {
      const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT', x5c: x5c() })).toString('base64url');
      return `Bearer ${header}.${Buffer.from(JSON.stringify(claims())).toString('base64url')}.`;
    }],
    ['HS256 keyed with the trusted certificate PEM', () => `Bearer ${hs256WithPublicKey(claims(), world.tokens.signer.certPem)}`],
    ['HS256 keyed with the certificate PEM, carrying its x5c', () => `Bearer ${hs256WithPublicKey(claims(), world.tokens.signer.certPem, { x5c: x5c() })}`],
    ['unknown kid', () => `Bearer ${signToken(claims(), attacker.privateKey, 'RS256', { kid: libtrustKeyId(attacker.publicKey) })}`],
    ['trusted kid, signed by another key', () => `Bearer ${signToken(claims(), attacker.privateKey, 'RS256', { kid: trustedKid() })}`],
    ['self-signed x5c with the same issuer name (untrusted key)', () => `Bearer ${impostor.mint({ service: world.tokens.service, access: pull('team/app') })}`],
    ['trusted x5c, signed by another key', () => `Bearer ${signToken(claims(), attacker.privateKey, 'RS256', { x5c: x5c() })}`],
    ['valid token with a tampered access claim', () => `Bearer ${withPayload(world.tokens.signer.mint({ service: world.tokens.service, access: pull('team/other') }), claims())}`],
    ['malformed token', () => 'Bearer eyJhbGciOiJSUzI1NiJ9.e30'],
    ['Basic credentials', () => `Basic ${Buffer.from('alice:secret').toString('base64')}`],
  ];

  it.each(forgeries)('%s: 401 exactly as the upstream, no Location, refused without asking the upstream', async (_name, make) => {
    const authorization = make();
    const path = `/v2/team/app/blobs/${digest}`;
    world.front.seen.length = 0;
    const viaProxy = await request(`${proxy.url}${path}`, { headers: { authorization } });
    expect(world.front.seen).toEqual([]);
    const direct = await request(`${world.registry.url}${path}`, { headers: { authorization } });
    expect(direct.status).toBe(401);
    expect(viaProxy.status).toBe(401);
    expect(viaProxy.headers.location).toBeUndefined();
    expect(answerShape(viaProxy)).toEqual(answerShape(direct));
  });

  it.each([
    ['x5c', () => `Bearer ${trusted(claims())}`],
    ['kid', () => `Bearer ${signToken(claims(), world.tokens.signer.keyPem, 'RS256', { kid: trustedKid() })}`],
  ])('control: the same construction with the trusted key (%s) and right claims redirects, and distribution agrees', async (_how, make) => {
    const authorization = make();
    const path = `/v2/team/app/blobs/${digest}`;
    expect((await request(`${world.registry.url}${path}`, { headers: { authorization } })).status).toBe(200);
    expect((await request(`${proxy.url}${path}`, { headers: { authorization } })).status).toBe(307);
  });
});
