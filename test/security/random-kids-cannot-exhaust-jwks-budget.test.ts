/**
 * Threat: anonymous callers switch everyone's redirects off. In token mode with `jwksUrl`, any
 * caller can send a token with a made-up `kid`, and an unknown `kid` makes the proxy fetch the
 * JWKS. With one budget of 10 fetches a minute for everything, 12 such requests spent it; once the
 * real key's cache entry aged out, legitimate tokens could not be verified ("keys unavailable")
 * and every pull went through the upstream instead of a redirect, for as long as the flood lasted.
 * Invariant: unknown `kid`s spend their own budget (and a repeated one is remembered), known keys
 * are refreshed before they expire from a budget of their own, so a legitimate token keeps getting
 * its 307 during and after a flood. A real JWKS endpoint (node:http on loopback, keys made with
 * node:crypto) and the real middleware; a short `jwksCacheMaxAge` instead of fake timers.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTokenVerifier } from '../../src/authorize/token.js';
import type { TokenAuthOptions } from '../../src/types.js';
import { digestOf, startFakeUpstream } from '../helpers/fake-upstream.js';
import type { FakeUpstream } from '../helpers/fake-upstream.js';
import { startProxy } from '../helpers/proxy-server.js';
import type { RunningProxy } from '../helpers/proxy-server.js';
import { testSigner } from '../helpers/token-registry.js';
import { pull, registryClaims, signToken } from '../helpers/tokens.js';
import { request } from '../support/http.js';

const real = generateKeyPairSync('rsa', { modulusLength: 2048 });
const attacker = generateKeyPairSync('rsa', { modulusLength: 2048 });
const BASE = { issuer: 'jwks-issuer', service: 'jwks-registry', realm: 'https://auth.example.test/token' } as const;
const MAX_AGE = 1_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('random kids cannot exhaust the JWKS budget', () => {
  let jwks: http.Server;
  let jwksUrl: string;
  let fetches = 0;
  let delayMs = 0;

  beforeAll(async () => {
    const body = JSON.stringify({ keys: [{ ...real.publicKey.export({ format: 'jwk' }), kid: 'real-key', use: 'sig', alg: 'RS256' }] });
    jwks = http.createServer((_req, res) => {
      fetches++;
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(body), delayMs);
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/.well-known/jwks.json`;
  });
  afterAll(async () => {
    jwks.closeAllConnections();
    await new Promise((resolve) => jwks.close(resolve));
  });
  beforeEach(() => {
    fetches = 0;
    delayMs = 0;
  });

  const options = (): TokenAuthOptions => ({ ...BASE, jwksUrl, jwksCacheMaxAge: MAX_AGE });
  const legit = () => `Bearer ${signToken(registryClaims({ ...BASE, access: pull('team/app') }), real.privateKey, 'RS256', { kid: 'real-key' })}`;
  const randomKid = () => `Bearer ${signToken(registryClaims({ ...BASE, access: pull('team/app') }), attacker.privateKey, 'RS256', { kid: randomUUID() })}`;

  describe('through the real middleware', () => {
    let upstream: FakeUpstream;
    let proxy: RunningProxy;
    const data = Buffer.from('private layer bytes');
    const digest = digestOf(data);

    beforeAll(async () => {
      upstream = await startFakeUpstream();
      // The upstream accepts bearer tokens for existence checks and pulls.
      upstream.override((req, res) => {
        if (!req.headers.authorization?.startsWith('Bearer ') || req.url !== `/v2/team/app/blobs/${digest}`) return false;
        res.writeHead(200, { 'Content-Length': data.length, 'Docker-Content-Digest': digest });
        res.end(req.method === 'HEAD' ? undefined : data);
        return true;
      });
      proxy = await startProxy({ upstream: upstream.url, signer: testSigner(), tokenAuth: options(), decisionCache: false });
    });
    afterAll(async () => {
      await proxy?.close();
      await upstream?.close();
    });

    it('a flood of random kids, then the real key ages out: the legitimate caller still gets its 307', async () => {
      const blob = `${proxy.url}/v2/team/app/blobs/${digest}`;
      expect((await request(blob, { headers: { authorization: legit() } })).status).toBe(307);
      for (let i = 0; i < 30; i++) {
        const res = await request(blob, { headers: { authorization: randomKid() } });
        expect(res.status).not.toBe(307);
      }
      expect(fetches).toBeLessThanOrEqual(1 + 10);
      await sleep(MAX_AGE + 200); // the real key's entry is now older than jwksCacheMaxAge
      for (let i = 0; i < 30; i++) await request(blob, { headers: { authorization: randomKid() } });
      const after = await request(blob, { headers: { authorization: legit() } });
      expect(after.status).toBe(307);
      expect(after.headers.location).toMatch(/^http:\/\/127\.0\.0\.2:10000\//);
    }, 15_000);
  });

  it('unknown kids never pass and spend at most 10 fetches a minute; the known key keeps verifying', async () => {
    const v = createTokenVerifier(options());
    expect(await v.check(legit(), 'team/app')).toEqual({ ok: true });
    const verdicts = await Promise.all(Array.from({ length: 50 }, () => v.check(randomKid(), 'team/app')));
    for (const verdict of verdicts) expect(verdict).toMatchObject({ ok: false });
    expect(verdicts.map((x) => (x.ok ? 'ok' : x.error)).filter((e) => e !== 'invalid_token' && e !== 'unavailable')).toEqual([]);
    expect(fetches).toBeLessThanOrEqual(1 + 10);
    await sleep(MAX_AGE + 100);
    expect(await v.check(legit(), 'team/app')).toEqual({ ok: true });
  }, 10_000);

  it('a repeated unknown kid is remembered: one fetch, not one per request', async () => {
    const v = createTokenVerifier(options());
    const sameKid = `Bearer ${signToken(registryClaims({ ...BASE, access: pull('team/app') }), attacker.privateKey, 'RS256', { kid: 'made-up' })}`;
    for (let i = 0; i < 40; i++) expect(await v.check(sameKid, 'team/app')).toMatchObject({ ok: false, error: 'invalid_token' });
    expect(fetches).toBe(1);
  });

  it('the known key is refreshed in the background before it expires: the caller never waits for the JWKS', async () => {
    // A synchronous verdict is the proof: a lookup that waits for the JWKS returns a promise.
    const maxAge = 2_000;
    const v = createTokenVerifier({ ...options(), jwksCacheMaxAge: maxAge });
    expect(await v.check(legit(), 'team/app')).toEqual({ ok: true });
    expect(fetches).toBe(1);
    delayMs = 400; // a slow JWKS from now on
    await sleep(maxAge * 0.6); // past half of jwksCacheMaxAge: this use refreshes in the background
    expect(v.check(legit(), 'team/app')).toEqual({ ok: true });
    await sleep(delayMs + 300);
    expect(fetches).toBe(2);
    await sleep(maxAge * 0.45); // older than jwksCacheMaxAge since the first fetch, not since the refresh
    expect(v.check(legit(), 'team/app')).toEqual({ ok: true });
  }, 10_000);
});
