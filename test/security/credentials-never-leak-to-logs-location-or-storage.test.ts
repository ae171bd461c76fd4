/**
 * Threat: the caller's registry credentials (Basic password, bearer token, cookie) escape the
 * registry: into a log line, into the Location of a redirect, or into the requests the client then
 * sends to storage. Invariant: none of them ever appears in any of the three, in either mode, on
 * success and on every failure path. Real distribution (auth: token), skopeo, Azurite.
 * (Metrics labels are covered by the observability suite.)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { azureSigner } from '../../src/signers/azure.js';
import type { Signer } from '../../src/types.js';
import { recordingLogger, startProxy } from '../helpers/proxy-server.js';
import type { RunningProxy } from '../helpers/proxy-server.js';
import { startTokenRegistry } from '../helpers/token-registry.js';
import type { TokenRegistry } from '../helpers/token-registry.js';
import { pull } from '../helpers/tokens.js';
import { startAzurite } from '../support/azurite.js';
import type { RunningAzurite } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeOciImage } from '../support/oci-image.js';
import type { OciImage } from '../support/oci-image.js';
import { copyRegistryBlobsToAzure } from '../support/seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo') && requireBinary('openssl');
const alice = { username: 'alice', password: 'pw-never-seen-9f27c1' };
const COOKIE = 'session=cookie-never-seen-5d1e0a';

describe.skipIf(!has)('credentials never leak to logs, Location or storage', () => {
  let work: string;
  let world: TokenRegistry;
  let azurite: RunningAzurite;
  let image: OciImage;
  let signer: Signer;
  const logger = recordingLogger();
  const proxies: Partial<Record<'upstream' | 'token' | 'deadUpstream' | 'deadToken', RunningProxy>> = {};
  const secrets: string[] = [alice.password, Buffer.from(`${alice.username}:${alice.password}`).toString('base64'), 'cookie-never-seen-5d1e0a'];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-leak-'));
    [world, azurite, image] = await Promise.all([
      startTokenRegistry({ users: { [alice.username]: alice.password } }),
      startAzurite(),
      makeOciImage(join(work, 'image'), { layers: [{ size: 200_000, seed: 'leak' }] }),
    ]);
    const push = await skopeoPush(image, `docker://${world.registry.hostPort}/team/app:v1`, alice, { timeoutMs: 20_000 });
    expect(push.code, push.stderr).toBe(0);
    await copyRegistryBlobsToAzure(world.registry.storageRoot, azurite.containerClient('registry'));
    signer = azureSigner({ account: azurite.account, accountKey: azurite.accountKey, container: 'registry', endpoint: azurite.endpoint });
    proxies.upstream = await startProxy({ upstream: world.registry.url, signer, logger });
    proxies.token = await startProxy({ upstream: world.registry.url, signer, logger, tokenAuth: world.tokenAuth() });
    proxies.deadUpstream = await startProxy({ upstream: 'http://127.0.0.1:1', signer, logger });
    proxies.deadToken = await startProxy({ upstream: 'http://127.0.0.1:1', signer, logger, tokenAuth: world.tokenAuth() });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(Object.values(proxies).map((p) => p.close()));
    await Promise.all([world?.stop(), azurite?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  }, 20_000);

  function assertNoSecret(text: string, tokens: string[], where: string): void {
    for (const secret of [...secrets, ...tokens]) expect(text.includes(secret), `${where} contains a credential`).toBe(false);
    expect(text, `${where} contains a JWT`).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/);
  }

  it.each(['upstream', 'token'] as const)('%s mode: a skopeo pull with credentials sends storage no Authorization, cookie or secret', async (mode) => {
    azurite.requests.length = 0;
    const out = join(work, `pulled-${mode}`);
    const res = await skopeoPull(`docker://${new URL(proxies[mode]!.url).host}/team/app:v1`, out, alice, { timeoutMs: 30_000 });
    expect(res.code, res.stderr).toBe(0);
    expect((await verifyPulledDir(out, image)).ok).toBe(true);
    expect(azurite.requests.length).toBeGreaterThanOrEqual(2); // config + layer came from storage
    for (const r of azurite.requests) {
      expect(r.headers.authorization).toBeUndefined();
      expect(r.headers.cookie).toBeUndefined();
      assertNoSecret(`${r.url}\n${JSON.stringify(r.headers)}`, [], 'a storage request');
    }
  }, 40_000);

  it.each(['upstream', 'token'] as const)('%s mode: the Location holds no credential, and following it without them works', async (mode) => {
    const token = world.bearer(pull('team/app'));
    const layer = image.layers[0]!.digest;
    const res = await request(`${proxies[mode]!.url}/v2/team/app/blobs/${layer}`, { headers: { authorization: token, cookie: COOKIE } });
    expect(res.status).toBe(307);
    const location = res.headers.location!;
    assertNoSecret(location, [token.slice(7)], 'Location');
    expect(new URL(location).origin).toBe(new URL(azurite.endpoint).origin);
    azurite.requests.length = 0;
    const blob = await request(location);
    expect(blob.status).toBe(200);
    expect(blob.body.length).toBe(image.layers[0]!.size);
  });

  it('no log line of any path (redirects, rejected tokens, relayed denials, dead upstream) holds a credential', async () => {
    const layer = image.layers[0]!.digest;
    const good = world.bearer(pull('team/app'));
    const expired = world.bearer(pull('team/app'), -300);
    const basic = `Basic ${secrets[1]}`;
    const used = [good, expired].map((t) => t.slice(7));
    for (const p of Object.values(proxies)) {
      for (const authorization of [good, expired, basic, 'Bearer not.a.jwt']) {
        const res = await request(`${p.url}/v2/team/app/blobs/${layer}`, { headers: { authorization, cookie: COOKIE } });
        if (res.status === 307) assertNoSecret(res.headers.location!, used, 'Location');
      }
      await request(`${p.url}/v2/team/app/manifests/v1`, { headers: { authorization: good, cookie: COOKIE } });
    }
    const text = logger.text();
    expect(text).toContain('redirected');
    expect(text).toContain('token rejected');
    expect(text).toContain('authorizing HEAD failed');
    expect(text).toContain('existence HEAD failed');
    assertNoSecret(text, used, 'the log');
  });
});
