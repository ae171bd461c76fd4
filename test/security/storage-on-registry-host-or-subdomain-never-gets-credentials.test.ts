/**
 * Prevents: registry credentials reaching storage. containers/image (skopeo, podman, CRI-O),
 * containerd and oras keep `Authorization` on a redirect to the same host name or a subdomain of
 * the one they asked (`registry.example.com` -> `blobs.registry.example.com`), ports ignored.
 * Invariant: no 307 to a `Location` whose host name equals or is a subdomain of the request's
 * `Host`, unless the operator opts in (`allowRedirectToRegistryHost`); the blob is proxied
 * instead, warned about once, counted as fallback reason `same_host`.
 *
 * Real skopeo 1.9.3 pulls `registry.test` (no DNS: an HTTP forward proxy maps the names to
 * loopback servers and records what each name received); storage `blobs.registry.test` is real
 * nginx verifying `secure_link` URLs over the registry's own files; upstream is distribution 2.8.2.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hmacSigner, prometheusMetrics, type PrometheusMetrics } from '../../src/index.js';
import { recordingLogger, startProxy, type RunningProxy } from '../helpers/proxy-server.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { startNameProxy, type NameProxy } from '../support/name-proxy.js';
import { startNginx, type RunningNginx } from '../support/nginx.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';

const has = requireBinary('docker-registry') && requireBinary('nginx') && requireBinary('skopeo');
const KEY = 'storage-link-secret';
const CREDS = { username: 'alice', password: 'pw' };
const BASIC = `Basic ${Buffer.from('alice:pw').toString('base64')}`;
const signer = (baseUrl: string) => hmacSigner({ preset: 'nginx-secure-link', baseUrl, key: KEY });

describe.skipIf(!has)('storage on the registry host or a subdomain never gets the registry credentials', () => {
  let work: string;
  let registry: RunningRegistry;
  let storage: RunningNginx;
  let image: OciImage;
  let names: NameProxy;
  let guarded: RunningProxy;
  let optedIn: RunningProxy;
  let metrics: PrometheusMetrics;
  const logger = recordingLogger();

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-same-host-'));
    registry = await startRegistry({ auth: { htpasswd: { users: { alice: 'pw' } } } });
    image = await makeOciImage(join(work, 'image'), { layers: [{ size: 300_000, seed: 'same-host' }] });
    const pushed = await skopeoPush(image, `docker://${registry.hostPort}/team/app:v1`, CREDS);
    expect(pushed.code, pushed.stderr).toBe(0);
    // Storage: nginx serving the registry's blob files behind secure_link (the hmac preset).
    storage = await startNginx({
      host: '127.0.0.2',
      server: `
    location /docker/registry/v2/blobs/ {
      secure_link $arg_md5,$arg_expires;
      secure_link_md5 "$secure_link_expires$uri ${KEY}";
      if ($secure_link = "")  { return 403; }
      if ($secure_link = "0") { return 410; }
      root ${registry.storageRoot};
    }`,
    });
    metrics = prometheusMetrics();
    guarded = await startProxy({ upstream: registry.url, signer: signer('http://blobs.registry.test'), metrics, logger });
    names = await startNameProxy({
      'registry.test': guarded.url,
      'blobs.registry.test': storage.url,
      // The opt-in proxy: created in its test, where the name is pointed at it.
      'open.test': 'http://127.0.0.1:9',
      'blobs.open.test': storage.url,
    });
  }, 60_000);

  afterAll(async () => {
    await Promise.all([guarded?.close(), optedIn?.close(), names?.close()]);
    await storage?.stop();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  }, 15_000);

  const pull = async (reference: string, out: string) => {
    const res = await skopeoPull(reference, join(work, out), CREDS, { env: names.env(), timeoutMs: 60_000 });
    expect(res.code, res.stderr).toBe(0);
    return verifyPulledDir(join(work, out), image);
  };
  const storageRequests = (hostname: string) => names.requests.filter((r) => r.hostname === hostname);

  it('without the guard skopeo sends the registry\'s Authorization to the subdomain (why the guard exists)', async () => {
    optedIn = await startProxy({ upstream: registry.url, signer: signer('http://blobs.open.test'), allowRedirectToRegistryHost: true });
    names.route('open.test', optedIn.url);
    const verified = await pull('docker://open.test/team/app:v1', 'open');
    expect(verified.problems).toEqual([]);
    const toStorage = storageRequests('blobs.open.test');
    expect(toStorage.length).toBeGreaterThan(0);
    expect(toStorage.some((r) => r.authorization === BASIC)).toBe(true);
  }, 90_000);

  it('with the default, skopeo pulls through the proxy, storage receives nothing, the fallback is counted and warned about once', async () => {
    const verified = await pull('docker://registry.test/team/app:v1', 'guarded');
    expect(verified.problems).toEqual([]);
    expect(storageRequests('blobs.registry.test')).toEqual([]);
    expect(storageRequests('registry.test').some((r) => r.path.includes('/blobs/sha256:') && r.authorization === BASIC)).toBe(true);
    const text = await metrics.render();
    expect(text).toMatch(/registry_redirect_fallbacks_total\{signer="default",reason="same_host"\} [1-9]/);
    expect(text).toMatch(/registry_redirect_decisions_total\{action="proxy",signer="default",reason="same_host"\} [1-9]/);
    // A second pull: still proxied, and the warning is not repeated.
    expect((await pull('docker://registry.test/team/app:v1', 'guarded-again')).problems).toEqual([]);
    expect(logger.lines.filter((l) => l.includes('registry host or a subdomain')).length).toBe(1);
    expect(logger.text()).not.toContain(BASIC.slice(6));
  }, 120_000);

  it.each([
    ['the same host name', 'blobs.registry.test'],
    ['the same host name with another port', 'blobs.registry.test:8443'],
    ['the parent name in other case', 'REGISTRY.test'],
    ['the parent name with a trailing dot', 'registry.test.'],
    ['a parent domain of it', 'test'],
  ])('raw request with Host %s (%s): no 307', async (_what, host) => {
    const digest = image.layers[0]!.digest;
    const res = await request(`${guarded.url}/v2/team/app/blobs/${digest}`, { headers: { host, authorization: BASIC } });
    expect(res.status).toBe(200);
    expect(res.headers.location).toBeUndefined();
    expect(res.headers['docker-content-digest']).toBe(digest);
  });

  it('behind a trusted front, its X-Forwarded-Host names the registry too; an untrusted client\'s does not count', async () => {
    const digest = image.layers[0]!.digest;
    const headers = { host: 'proxy.internal:8080', 'x-forwarded-host': 'registry.test, proxy.internal', authorization: BASIC };
    const behindFront = await startProxy({ upstream: registry.url, signer: signer('http://blobs.registry.test'), trustedProxies: ['127.0.0.1/32'] });
    const trustingOthers = await startProxy({ upstream: registry.url, signer: signer('http://blobs.registry.test'), trustedProxies: ['127.0.0.9/32'] });
    try {
      const proxied = await request(`${behindFront.url}/v2/team/app/blobs/${digest}`, { headers });
      expect(proxied.status).toBe(200);
      expect(proxied.headers.location).toBeUndefined();
      expect((await request(`${trustingOthers.url}/v2/team/app/blobs/${digest}`, { headers })).status).toBe(307);
    } finally {
      await Promise.all([behindFront.close(), trustingOthers.close()]);
    }
  });

  it('another host name still gets the 307 to storage, and storage accepts it without credentials', async () => {
    const digest = image.layers[0]!.digest;
    for (const host of ['registry.example', 'other.test', 'xregistry.test', 'blobs.registry.test.example']) {
      const res = await request(`${guarded.url}/v2/team/app/blobs/${digest}`, { headers: { host, authorization: BASIC } });
      expect(res.status, host).toBe(307);
      expect(res.headers.location!.startsWith('http://blobs.registry.test/docker/registry/v2/blobs/')).toBe(true);
    }
    const res = await request(`${guarded.url}/v2/team/app/blobs/${digest}`, { headers: { host: 'registry.example', authorization: BASIC } });
    const location = new URL(res.headers.location!);
    const fetched = await request(`${storage.url}${location.pathname}${location.search}`);
    expect(fetched.status).toBe(200);
    expect(fetched.body.length).toBe(image.layers[0]!.size);
  });
});
