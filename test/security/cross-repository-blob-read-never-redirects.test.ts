/**
 * Threat: storage holds one object per digest for the whole registry, so a caller who knows a
 * digest could ask for it through any repository. Invariant: a 307 is only ever answered for a
 * blob the caller may read IN THE REQUESTED repository and that is linked there. Real distribution
 * 2.8.2 (auth: token), both authorization modes, with the decision cache on (its default), over
 * HTTP/1.1 and HTTP/2.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull } from '../helpers/tokens.js';
import { startProxy, TRANSPORTS, type Transport } from '../helpers/proxy-server.js';
import type { RunningProxy } from '../helpers/proxy-server.js';
import { STORAGE_ENDPOINT, startTokenRegistry, testSigner } from '../helpers/token-registry.js';
import type { TokenRegistry } from '../helpers/token-registry.js';
import { requireBinary } from '../support/binaries.js';

const has = requireBinary('docker-registry') && requireBinary('openssl');

describe.skipIf(!has)('cross-repository blob reads never redirect', () => {
  let world: TokenRegistry;
  let onlyInA: string;
  let inB: string;
  const proxies = new Map<string, RunningProxy>();

  beforeAll(async () => {
    world = await startTokenRegistry();
    [onlyInA, inB] = await Promise.all([world.push('team/a'), world.push('team/b')]);
    for (const transport of TRANSPORTS) {
      proxies.set(`upstream ${transport}`, await startProxy({ upstream: world.front.url, signer: testSigner() }, { transport }));
      proxies.set(`token ${transport}`, await startProxy({ upstream: world.front.url, signer: testSigner(), tokenAuth: world.tokenAuth() }, { transport }));
    }
  }, 30_000);

  afterAll(async () => {
    await Promise.all([...proxies.values()].map((p) => p.close()));
    await world?.stop();
  }, 15_000);

  const cases = (['upstream', 'token'] as const).flatMap((mode) => TRANSPORTS.map((transport): [string, Transport] => [mode, transport]));
  describe.each(cases)('%s mode over %s', (mode, transport) => {
    const get = (repo: string, digest: string, authorization: string) =>
      proxies.get(`${mode} ${transport}`)!.request(`/v2/${repo}/blobs/${digest}`, { headers: { authorization } });

    it('a blob linked only in repository A, requested via repository B the caller can read, gets the upstream 404 and no Location', async () => {
      const res = await get('team/b', onlyInA, world.bearer([...pull('team/a'), ...pull('team/b')]));
      expect(res.status).toBe(404);
      expect(res.headers.location).toBeUndefined();
      expect(JSON.parse(res.body.toString()).errors[0].code).toBe('BLOB_UNKNOWN');
    });

    it('a blob requested via a repository the caller cannot read gets 401 and no Location', async () => {
      const res = await get('team/c', onlyInA, world.bearer([...pull('team/a'), ...pull('team/b')]));
      expect(res.status).toBe(401);
      expect(res.headers.location).toBeUndefined();
      expect(res.headers['www-authenticate']).toContain('error="insufficient_scope"');
    });

    it('a yes cached for repository A is never reused for repository B', async () => {
      const both = world.bearer([...pull('team/a'), ...pull('team/b')]);
      const inA = await get('team/a', onlyInA, both);
      expect(inA.status).toBe(307);
      expect(inA.headers.location!.startsWith(`${STORAGE_ENDPOINT}/registry/`)).toBe(true);
      for (let i = 0; i < 3; i++) {
        const viaB = await get('team/b', onlyInA, both);
        expect(viaB.status).toBe(404);
        expect(viaB.headers.location).toBeUndefined();
      }
      // and B's own blob still redirects: the denial above is about the link, not the caller
      expect((await get('team/b', inB, both)).status).toBe(307);
    });

    it('a yes cached for repository A is never reused for a caller who can read only B', async () => {
      expect((await get('team/a', onlyInA, world.bearer(pull('team/a')))).status).toBe(307);
      const res = await get('team/a', onlyInA, world.bearer(pull('team/b')));
      expect(res.status).toBe(401);
      expect(res.headers.location).toBeUndefined();
    });
  });
});
