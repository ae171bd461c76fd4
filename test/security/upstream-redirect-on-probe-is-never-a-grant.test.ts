/**
 * Prevents: anonymous reads of private blobs through a front that answers unauthenticated
 * requests with a redirect. Operators put nginx before distribution: an SSO front answers an
 * anonymous request with `302 /login`, a plain-http port with `301 https://...`. If a 3xx on the
 * authorizing HEAD counted as "authorized and present", an anonymous blob GET would get a 307 to a
 * signed storage URL (and the grant would be cached), where distribution itself says 401.
 * Invariant: only a 2xx on the probe is a grant; for anything else the real GET goes upstream
 * and its answer is relayed. Real distribution 2.8.2 (htpasswd) behind real nginx; clients over
 * HTTP/1.1 and HTTP/2 (where the Host the fronts see comes from `:authority`).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBlob } from '../helpers/registry-api.js';
import { startProxy, TRANSPORTS, type RunningProxy, type Transport } from '../helpers/proxy-server.js';
import { STORAGE_ENDPOINT, testSigner } from '../helpers/token-registry.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { startNginx, type RunningNginx } from '../support/nginx.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';

const has = requireBinary('docker-registry') && requireBinary('nginx');
const ALICE = `Basic ${Buffer.from('alice:pw').toString('base64')}`;
const REPO = 'private/app';

describe.skipIf(!has)('a redirect on the authorizing HEAD is never a grant', () => {
  let registry: RunningRegistry;
  let sso: RunningNginx;
  let httpsOnly: RunningNginx;
  let digest: string;
  const proxies: RunningProxy[] = [];
  const proxy = async (upstream: string, transport: Transport, extra: { acceptUpstreamRedirect?: boolean } = {}) => {
    const p = await startProxy({ upstream, signer: testSigner(), ...extra }, { transport });
    proxies.push(p);
    return p;
  };

  beforeAll(async () => {
    registry = await startRegistry({ auth: { htpasswd: { users: { alice: 'pw' } } } });
    digest = await pushBlob(registry.url, REPO, randomBytes(2048), ALICE);
    // An SSO front: no credentials -> the login page; with credentials -> the registry.
    sso = await startNginx({
      server: `
    location = /login { return 200 "login page\\n"; }
    location / {
      if ($http_authorization = "") { return 302 /login; }
      proxy_pass ${registry.url};
      proxy_set_header Host $http_host;
    }`,
    });
    // The plain-http port of an https registry.
    httpsOnly = await startNginx({ server: `    location / { return 301 https://$host$request_uri; }` });
  }, 30_000);

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all([sso?.stop(), httpsOnly?.stop()]);
    await registry?.stop();
  }, 15_000);

  const blob = (base: string, headers: Record<string, string> = {}) => request(`${base}/v2/${REPO}/blobs/${digest}`, { headers });

  it('distribution itself refuses the anonymous read, and the fronts redirect it', async () => {
    expect((await blob(registry.url)).status).toBe(401);
    const viaSso = await blob(sso.url);
    expect(viaSso.status).toBe(302);
    expect(viaSso.headers.location).toMatch(/\/login$/);
    expect((await blob(httpsOnly.url)).status).toBe(301);
  });

  describe.each(TRANSPORTS)('over %s', (transport) => {
    const viaProxy = (p: RunningProxy, headers: Record<string, string> = {}) => p.request(`/v2/${REPO}/blobs/${digest}`, { headers });

    it('SSO front: an anonymous blob GET gets the front\'s 302 to /login, never a signed URL, also when asked again (nothing cached)', async () => {
      const base = await proxy(sso.url, transport);
      for (let i = 0; i < 3; i++) {
        const res = await viaProxy(base);
        expect(res.status).toBe(302);
        expect(res.headers.location).toMatch(/\/login$/);
        expect(res.headers.location).not.toContain(STORAGE_ENDPOINT);
      }
      // The same blob with the owner's credentials is still redirected: the fix is about the 3xx only.
      const owner = await viaProxy(base, { authorization: ALICE });
      expect(owner.status).toBe(307);
      expect(owner.headers.location!.startsWith(`${STORAGE_ENDPOINT}/registry/`)).toBe(true);
      // And the owner's grant is not the anonymous caller's.
      expect((await viaProxy(base)).status).toBe(302);
    });

    it('http->https front: an anonymous blob GET gets the 301 to https, never a signed URL', async () => {
      const base = await proxy(httpsOnly.url, transport);
      const res = await viaProxy(base);
      expect(res.status).toBe(301);
      expect(res.headers.location).toBe(`https://${new URL(base.url).hostname}/v2/${REPO}/blobs/${digest}`);
      // With credentials too: the 301 says nothing about them either.
      expect((await viaProxy(base, { authorization: ALICE })).status).toBe(301);
    });

    it('acceptUpstreamRedirect: true takes the 3xx as a grant (the documented risk of the opt-in)', async () => {
      const base = await proxy(sso.url, transport, { acceptUpstreamRedirect: true });
      const res = await viaProxy(base);
      expect(res.status).toBe(307);
      expect(res.headers.location!.startsWith(`${STORAGE_ENDPOINT}/registry/`)).toBe(true);
    });
  });
});
