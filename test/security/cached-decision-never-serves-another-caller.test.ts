/**
 * Threat: the decision cache turns one caller's "yes" into everyone's. Invariants:
 * - upstream mode keys on the SHA-256 of the caller's credentials: another (or no) credential
 *   is asked upstream afresh and gets the upstream's own answer;
 * - token mode caches only existence: every request's token is still verified, so a cached
 *   (repository, digest) never lets an expired, forged, missing or misscoped token through;
 * - the staleness trade-off is bounded by the TTL, and `ttl: 0` turns it off.
 * Real distribution 2.8.2 (auth: token) behind a recording front.
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hs256WithPublicKey, pull, registryClaims, unsignedToken } from '../helpers/tokens.js';
import { startProxy } from '../helpers/proxy-server.js';
import type { RunningProxy } from '../helpers/proxy-server.js';
import { startTokenRegistry, testSigner } from '../helpers/token-registry.js';
import type { TokenRegistry } from '../helpers/token-registry.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';

const has = requireBinary('docker-registry') && requireBinary('openssl');

describe.skipIf(!has)('a cached decision never serves another caller', () => {
  let world: TokenRegistry;
  let digest: string;
  const started: RunningProxy[] = [];
  const proxy = async (options: Partial<Parameters<typeof startProxy>[0]> = {}) => {
    const p = await startProxy({ upstream: world.front.url, signer: testSigner(), ...options });
    started.push(p);
    return p;
  };
  const heads = () => world.front.seen.filter((s) => s.method === 'HEAD').length;
  const get = (p: RunningProxy, authorization?: string) =>
    request(`${p.url}/v2/team/app/blobs/${digest}`, { headers: authorization ? { authorization } : {} });

  beforeAll(async () => {
    world = await startTokenRegistry();
    digest = await world.push('team/app');
  }, 30_000);

  afterAll(async () => {
    await Promise.all(started.map((p) => p.close()));
    await world?.stop();
  }, 15_000);

  it('upstream mode: alice\'s cached yes is not reused for bob, for no credentials, or for another token', async () => {
    const p = await proxy();
    const alice = world.bearer(pull('team/app'));
    expect((await get(p, alice)).status).toBe(307);
    const before = heads();
    expect((await get(p, alice)).status).toBe(307);
    expect(heads()).toBe(before); // served from the cache

    const bob = await get(p, world.bearer(pull('team/other')));
    expect(bob.status).toBe(401);
    expect(bob.headers.location).toBeUndefined();
    const anonymous = await get(p);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.location).toBeUndefined();
    const expired = await get(p, world.bearer(pull('team/app'), -300));
    expect(expired.status).toBe(401);
    expect(expired.headers.location).toBeUndefined();
    // each of them was asked upstream, never answered from alice's entry
    expect(heads()).toBe(before + 3);

    // A different credential with the same rights is a different key: asked again, then yes.
    expect((await get(p, world.bearer(pull('team/app')))).status).toBe(307);
    expect(heads()).toBe(before + 4);
  });

  it('upstream mode, one keep-alive connection: changing or dropping the credential mid-connection is asked upstream afresh', async () => {
    // The proxy remembers the credential digest per connection (to skip hashing an unchanged
    // token); a client that switches identities on the same socket must not inherit the last one's.
    const p = await proxy();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    agent.on('free', (socket) => sockets.add(socket));
    try {
      const on = (authorization?: string, cookie?: string) =>
        request(`${p.url}/v2/team/app/blobs/${digest}`, { agent, headers: { ...(authorization ? { authorization } : {}), ...(cookie ? { cookie } : {}) } });
      const alice = world.bearer(pull('team/app'));
      expect((await on(alice)).status).toBe(307);
      const before = heads();
      expect((await on(alice)).status).toBe(307);
      expect(heads()).toBe(before); // same credential on the same connection: the cache answers

      for (const [why, authorization] of [
        ['another token', world.bearer(pull('team/other'))],
        ['no credential', undefined],
      ] as const) {
        const res = await on(authorization);
        expect(res.status, why).toBe(401);
        expect(res.headers.location, why).toBeUndefined();
      }
      expect(heads()).toBe(before + 2);
      // The same token with a cookie is another credential: asked upstream (which says yes).
      expect((await on(alice, 'session=x')).status).toBe(307);
      expect(heads()).toBe(before + 3);
      // And alice alone again is her own cached entry.
      expect((await on(alice)).status).toBe(307);
      expect(heads()).toBe(before + 3);
      expect(sockets.size).toBe(1); // every request above went over one connection
    } finally {
      agent.destroy();
    }
  });

  it('token mode: a cached existence never lets a bad token through, and is checked without asking the upstream', async () => {
    const p = await proxy({ tokenAuth: world.tokenAuth() });
    expect((await get(p, world.bearer(pull('team/app')))).status).toBe(307);
    const before = heads();
    const claims = registryClaims({ issuer: world.tokens.issuer, service: world.tokens.service, access: pull('team/app') });
    for (const [why, authorization] of [
      ['expired', world.bearer(pull('team/app'), -300)],
      ['other repository', world.bearer(pull('team/other'))],
      ['no token', undefined],
      ['alg none', `Bearer ${unsignedToken(claims)}`],
      ['HS256 keyed with the public certificate', `Bearer ${hs256WithPublicKey(claims, world.tokens.signer.certPem)}`],
    ] as const) {
      const res = await get(p, authorization);
      expect(res.status, why).toBe(401);
      expect(res.headers.location, why).toBeUndefined();
    }
    expect(heads()).toBe(before);
    // a valid token from anyone with pull here reuses the cached existence
    expect((await get(p, world.bearer(pull('team/app')))).status).toBe(307);
    expect(heads()).toBe(before);
  });

  it('staleness is the documented trade-off: a deleted blob keeps redirecting within the TTL, and ttl 0 sees the deletion at once', async () => {
    const doomed = await world.push('team/app');
    const cached = await proxy({ decisionCache: { ttl: 60_000 } });
    const uncached = await proxy({ decisionCache: { ttl: 0 } });
    const token = world.bearer(pull('team/app'));
    const at = (p: RunningProxy) => request(`${p.url}/v2/team/app/blobs/${doomed}`, { headers: { authorization: token } });
    expect((await at(cached)).status).toBe(307);
    expect((await at(uncached)).status).toBe(307);

    const del = await request(`${world.registry.url}/v2/team/app/blobs/${doomed}`, {
      method: 'DELETE',
      headers: { authorization: world.bearer([{ type: 'repository', name: 'team/app', actions: ['*'] }]) },
    });
    expect(del.status).toBe(202);

    expect((await at(cached)).status).toBe(307); // stale for up to ttl (documented)
    const fresh = await at(uncached);
    expect(fresh.status).toBe(404);
    expect(fresh.headers.location).toBeUndefined();
  });
});
