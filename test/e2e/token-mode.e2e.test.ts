/**
 * Token mode against the real thing: distribution 2.8.2 with `auth: token` (realm, service, issuer,
 * rootcertbundle), the harness token server, skopeo pulling through `registry-redirect serve`'s
 * server (configured from the documented YAML shape), and Azurite serving the layers.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { libtrustKeyId } from '../../src/authorize/token-keys.js';
import { loadConfig } from '../../src/server/config.js';
import { startServer } from '../../src/server/server.js';
import type { RunningServer } from '../../src/server/server.js';
import { answerShape, fetchToken, pushBlob } from '../helpers/registry-api.js';
import { pull, registryClaims, signToken } from '../helpers/tokens.js';
import { startAzurite } from '../support/azurite.js';
import type { RunningAzurite } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeOciImage } from '../support/oci-image.js';
import type { OciImage } from '../support/oci-image.js';
import { startRegistry } from '../support/registry.js';
import type { RunningRegistry } from '../support/registry.js';
import { copyRegistryBlobsToAzure, registryBlobKey } from '../support/seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';
import { startTokenServer } from '../support/token-auth.js';
import type { RunningTokenServer } from '../support/token-auth.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo') && requireBinary('openssl');

const alice = { username: 'alice', password: 'alice-pass-4e1c' };
const bob = { username: 'bob', password: 'bob-pass-77d0' };

describe.skipIf(!has)('token mode e2e: distribution auth:token + token server + skopeo + Azurite', () => {
  let work: string;
  let tokens: RunningTokenServer;
  let registry: RunningRegistry;
  let azurite: RunningAzurite;
  let image: OciImage;
  let proxy: RunningServer;
  const logLines: string[] = [];
  let strayDigest: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-token-e2e-'));
    tokens = await startTokenServer({
      users: { [alice.username]: alice.password, [bob.username]: bob.password },
      // alice may do anything; bob only in bob/*.
      grant: (user, requested) => (user === alice.username ? requested.actions : user === bob.username && requested.name.startsWith('bob/') ? requested.actions : []),
    });
    [registry, azurite, image] = await Promise.all([
      startRegistry({ auth: tokens.registryAuth }),
      startAzurite(),
      makeOciImage(join(work, 'image'), { layers: [{ size: 1024 * 1024, seed: 'tok-e2e-big' }, { size: 3000, seed: 'tok-e2e-small' }] }),
    ]);
    const push = await skopeoPush(image, `docker://${registry.hostPort}/team/app:v1`, alice, { timeoutMs: 20_000 });
    expect(push.code, push.stderr).toBe(0);
    // A blob that exists only in bob/private: storage is global, the repository link is not.
    const admin = tokens.signer.mint({ service: tokens.service, access: [{ type: 'repository', name: 'bob/private', actions: ['pull', 'push'] }] });
    strayDigest = await pushBlob(registry.url, 'bob/private', Buffer.from('only in bob/private'), `Bearer ${admin}`);
    await copyRegistryBlobsToAzure(registry.storageRoot, azurite.containerClient('registry'));

    const configPath = join(work, 'proxy.yaml');
    await writeFile(
      configPath,
      `listen: 127.0.0.1:0
upstream: ${registry.url}
signer:
  azure:
    account: ${azurite.account}
    accountKey: \${AZURITE_KEY}
    container: registry
    endpoint: ${azurite.endpoint}
authorize:
  mode: token
  token:
    issuer: ${tokens.issuer}
    service: ${tokens.service}
    realm: ${tokens.realm}
    publicKeys: [${tokens.signer.certPath}]
    algorithms: [RS256]
log:
  level: debug
`,
    );
    const config = await loadConfig(configPath, { AZURITE_KEY: azurite.accountKey });
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        logLines.push(chunk.toString());
        done();
      },
    });
    proxy = await startServer(config, pino({ level: 'debug' }, sink));
  }, 60_000);

  afterAll(async () => {
    await proxy?.close();
    await Promise.all([registry?.stop(), azurite?.stop()]);
    await tokens?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  }, 20_000);

  const proxyHostPort = () => new URL(proxy.url).host;
  const blob = (repo: string, digest: string) => `/v2/${repo}/blobs/${digest}`;
  const both = async (path: string, authorization?: string) => {
    const headers = authorization ? { authorization } : {};
    const [viaProxy, direct] = await Promise.all([request(`${proxy.url}${path}`, { headers }), request(`${registry.url}${path}`, { headers })]);
    return { viaProxy, direct };
  };

  it('alice pulls through the proxy with skopeo: every blob is redirected to Azurite, which never sees a credential', async () => {
    azurite.requests.length = 0;
    const out = join(work, 'pulled-alice');
    const res = await skopeoPull(`docker://${proxyHostPort()}/team/app:v1`, out, alice, { timeoutMs: 30_000 });
    expect(res.code, res.stderr).toBe(0);
    expect((await verifyPulledDir(out, image)).problems).toEqual([]);

    const keys = [...image.layers.map((l) => l.digest), image.configDigest].map((d) => `/devstoreaccount1/registry/${registryBlobKey(d)}`);
    const served = azurite.requests.filter((r) => r.method === 'GET' && r.status === 200).map((r) => r.url.split('?')[0]);
    expect(served.sort()).toEqual(keys.sort());
    for (const r of azurite.requests) {
      expect(r.headers.authorization).toBeUndefined();
      expect(r.url).not.toContain(alice.password);
    }
    expect(tokens.requests.some((r) => r.user === alice.username)).toBe(true);
  }, 40_000);

  it('bob (no pull on team/app) gets 401 insufficient_scope and no Location, exactly as the upstream answers', async () => {
    const token = await fetchToken(tokens, 'repository:team/app:pull', bob);
    const layer = image.layers[0]!.digest;
    const { viaProxy, direct } = await both(blob('team/app', layer), `Bearer ${token}`);
    expect(viaProxy.status).toBe(401);
    expect(viaProxy.headers.location).toBeUndefined();
    expect(viaProxy.headers['www-authenticate']).toContain('error="insufficient_scope"');
    expect(answerShape(viaProxy)).toEqual(answerShape(direct));

    azurite.requests.length = 0;
    const res = await skopeoPull(`docker://${proxyHostPort()}/team/app:v1`, join(work, 'pulled-bob'), bob, { timeoutMs: 20_000 });
    expect(res.code).not.toBe(0);
    expect(res.timedOut).toBe(false);
    expect(res.stderr).toMatch(/unauthorized|denied|authentication required/i);
    expect(azurite.requests).toEqual([]);
  }, 30_000);

  it('an expired token gets the 401 invalid_token challenge, identical to the upstream\'s', async () => {
    const expired = tokens.signer.mint({ service: tokens.service, access: pull('team/app'), expiresInSec: -120 });
    const { viaProxy, direct } = await both(blob('team/app', image.layers[0]!.digest), `Bearer ${expired}`);
    expect(viaProxy.status).toBe(401);
    expect(viaProxy.headers.location).toBeUndefined();
    expect(viaProxy.headers['www-authenticate']).toBe(`Bearer realm="${tokens.realm}",service="${tokens.service}",scope="repository:team/app:pull",error="invalid_token"`);
    expect(answerShape(viaProxy)).toEqual(answerShape(direct));
  });

  it('the upstream and the proxy agree on every case: 200 upstream <=> 307 proxy, otherwise the same status, challenge and body', async () => {
    const layer = image.layers[1]!.digest;
    const mint = (access = pull('team/app'), expiresInSec?: number) => tokens.signer.mint({ service: tokens.service, access, ...(expiresInSec !== undefined && { expiresInSec }) });
    const signingKey = createPrivateKey(tokens.signer.keyPem);
    const cases: Array<[string, string, string | undefined]> = [
      ['valid token', blob('team/app', layer), `Bearer ${mint()}`],
      ['no credentials', blob('team/app', layer), undefined],
      ['Basic credentials', blob('team/app', layer), `Basic ${Buffer.from(`${alice.username}:${alice.password}`).toString('base64')}`],
      ['malformed token', blob('team/app', layer), 'Bearer not.a.jwt'],
      ['expired token', blob('team/app', layer), `Bearer ${mint(pull('team/app'), -300)}`],
      ['token for another repository', blob('team/app', layer), `Bearer ${mint(pull('team/other'))}`],
      ['push-only token', blob('team/app', layer), `Bearer ${mint([{ type: 'repository', name: 'team/app', actions: ['push'] }])}`],
      ['kid (libtrust key ID of the bundle certificate) instead of x5c', blob('team/app', layer),
        `Bearer ${signToken(registryClaims({ issuer: tokens.issuer, service: tokens.service, access: pull('team/app') }), signingKey, 'RS256', { kid: libtrustKeyId(createPublicKey(tokens.signer.keyPem)) })}`],
      ['blob linked only in another repository', blob('team/app', strayDigest), `Bearer ${mint()}`],
      ['unknown digest', blob('team/app', `sha256:${'0'.repeat(64)}`), `Bearer ${mint()}`],
      ['bob in his own repository', blob('bob/private', strayDigest), `Bearer ${await fetchToken(tokens, 'repository:bob/private:pull', bob)}`],
    ];
    const seen: Array<[string, number, number]> = [];
    for (const [name, path, authorization] of cases) {
      const { viaProxy, direct } = await both(path, authorization);
      seen.push([name, direct.status, viaProxy.status]);
      if (direct.status === 200) {
        expect(viaProxy.status, name).toBe(307);
        expect(new URL(viaProxy.headers.location!).origin, name).toBe(new URL(azurite.endpoint).origin);
      } else {
        expect(viaProxy.headers.location, name).toBeUndefined();
        expect(answerShape(viaProxy), name).toEqual(answerShape(direct));
      }
    }
    // The matrix really covers yes, auth challenges and not-found.
    expect(seen.map(([n, d]) => [n, d])).toEqual([
      ['valid token', 200],
      ['no credentials', 401],
      ['Basic credentials', 401],
      ['malformed token', 401],
      ['expired token', 401],
      ['token for another repository', 401],
      ['push-only token', 401],
      ['kid (libtrust key ID of the bundle certificate) instead of x5c', 200],
      ['blob linked only in another repository', 404],
      ['unknown digest', 404],
      ['bob in his own repository', 200],
    ]);
  });

  it('logs the decisions without tokens or passwords', () => {
    const text = logLines.join('');
    expect(text).toContain('token rejected');
    expect(text).toContain('redirected');
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/); // no JWT
    expect(text).not.toContain(alice.password);
    expect(text).not.toContain(bob.password);
    expect(text).not.toMatch(/[?&]sig=/);
  });
});
