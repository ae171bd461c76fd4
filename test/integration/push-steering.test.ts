/**
 * Push steering against a real distribution 2.8 with htpasswd, on 127.0.0.2: it is both
 * the proxy's upstream and the write endpoint. Plain HTTP requests, so every answer is asserted
 * as the client sees it: which POSTs are steered, which pass through unchanged, what the rules,
 * shadow mode and `mode: redirect` do, and what is counted.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prometheusMetrics, type PrometheusMetrics } from '../../src/metrics.js';
import type { PushOptions } from '../../src/push.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { sha256Digest } from '../support/oci-image.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { recordingLogger, startProxy, type RunningProxy } from '../helpers/proxy-server.js';
import { defineSigner } from '../../src/signers/define.js';

const has = requireBinary('docker-registry');
const user = { name: 'pusher', password: 'push-steer-Pa55' };
const BASIC = `Basic ${Buffer.from(`${user.name}:${user.password}`).toString('base64')}`;
const signer = defineSigner({ name: 'unused', sign: () => ({ url: 'https://storage.invalid/x', expiresAt: Date.now() + 60_000 }) });

describe.skipIf(!has)('push steering against distribution 2.8 (htpasswd)', () => {
  let registry: RunningRegistry;
  const proxies: RunningProxy[] = [];

  beforeAll(async () => {
    registry = await startRegistry({ host: '127.0.0.2', auth: { htpasswd: { users: { [user.name]: user.password } } } });
  }, 30_000);
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await registry?.stop();
  }, 20_000);

  const proxyWith = async (push: PushOptions, extra: { trustedProxies?: string[] } = {}) => {
    const metrics = prometheusMetrics();
    const logger = recordingLogger();
    const proxy = await startProxy({ upstream: registry.url, signer, push, metrics, logger, ...extra });
    proxies.push(proxy);
    return { proxy, metrics, logger };
  };
  const uploads = async (metrics: PrometheusMetrics) =>
    (await metrics.render())
      .split('\n')
      .filter((l) => l.startsWith('registry_redirect_upload_decisions_total{'))
      .map((l) => l.replace(/ 1$/, ''));
  const startUpload = (base: string, repo: string, query = '', headers: Record<string, string> = { Authorization: BASIC }, body?: Buffer) =>
    request(`${base}/v2/${repo}/blobs/uploads/${query}`, { method: 'POST', headers: { ...headers, ...(body ? { 'Content-Type': 'application/octet-stream', 'Content-Length': String(body.length) } : { 'Content-Length': '0' }) }, body });

  it('steers an upload session: the 202 Location names the endpoint, and the upload completes there without the proxy', async () => {
    const { proxy, metrics, logger } = await proxyWith({ endpoint: registry.url });
    const started = await startUpload(proxy.url, 'team/app');
    expect(started.status).toBe(202);
    const location = String(started.headers.location);
    expect(location.startsWith(`${registry.url}/v2/team/app/blobs/uploads/`)).toBe(true);
    expect(location).toContain('_state=');
    // PATCH + PUT straight to the endpoint with the same credentials: the blob exists after.
    const blob = Buffer.from('steered blob bytes');
    const digest = sha256Digest(blob);
    const patched = await request(location, { method: 'PATCH', headers: { Authorization: BASIC, 'Content-Type': 'application/octet-stream', 'Content-Length': String(blob.length) }, body: blob });
    expect(patched.status).toBe(202);
    const next = new URL(String(patched.headers.location), registry.url);
    next.searchParams.set('digest', digest);
    const put = await request(next, { method: 'PUT', headers: { Authorization: BASIC, 'Content-Length': '0' } });
    expect(put.status).toBe(201);
    const head = await request(`${proxy.url}/v2/team/app/blobs/${digest}`, { method: 'HEAD', headers: { Authorization: BASIC } });
    expect(head.status).toBe(200);
    expect(await uploads(metrics)).toEqual(['registry_redirect_upload_decisions_total{action="steer",reason="default"}']);
    const steered = logger.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'upload steered');
    expect(steered).toMatchObject({ repository: 'team/app', endpoint: registry.url, reason: 'default' });
    expect(logger.text()).not.toContain(user.password);
    expect(logger.text()).not.toContain(BASIC.slice(6));
  });

  it("the upstream's 401 reaches the client unchanged and nothing is steered", async () => {
    const { proxy, metrics } = await proxyWith({ endpoint: registry.url });
    const direct = await startUpload(registry.url, 'team/app', '', {});
    const via = await startUpload(proxy.url, 'team/app', '', {});
    expect(via.status).toBe(401);
    expect(via.headers['www-authenticate']).toBe(direct.headers['www-authenticate']);
    expect(via.body.toString()).toBe(direct.body.toString());
    expect(via.headers.location).toBeUndefined();
    expect(await uploads(metrics)).toEqual(['registry_redirect_upload_decisions_total{action="proxy",reason="not_accepted"}']);
  });

  it('a cross-repository mount and a monolithic POST pass through unchanged (their Location names the blob, on the proxy)', async () => {
    const { proxy, metrics } = await proxyWith({ endpoint: 'http://127.0.0.2:1' });
    const blob = Buffer.from('monolithic blob');
    const digest = sha256Digest(blob);
    // distribution 2.8 ignores a monolithic POST's body and opens a session instead: whatever the
    // upstream answers reaches the client as is, and the session stays on the proxy.
    const mono = await startUpload(proxy.url, 'team/mono', `?digest=${digest}`, { Authorization: BASIC }, blob);
    expect([201, 202]).toContain(mono.status);
    expect(String(mono.headers.location).startsWith(`${proxy.url}/v2/team/mono/blobs/`)).toBe(true);
    const session = await startUpload(registry.url, 'team/mono');
    const put = new URL(String(session.headers.location));
    put.searchParams.set('digest', digest);
    expect((await request(put, { method: 'PUT', headers: { Authorization: BASIC, 'Content-Length': String(blob.length) }, body: blob })).status).toBe(201);
    const mount = await startUpload(proxy.url, 'team/other', `?mount=${digest}&from=team/mono`);
    expect(mount.status).toBe(201);
    expect(String(mount.headers.location)).toBe(`${proxy.url}/v2/team/other/blobs/${digest}`);
    expect((await uploads(metrics)).sort()).toEqual([
      'registry_redirect_upload_decisions_total{action="proxy",reason="monolithic"}',
      'registry_redirect_upload_decisions_total{action="proxy",reason="mount"}',
    ]);
  });

  it('rules choose steer or proxy by repository, network and percent; first match wins', async () => {
    const { proxy, metrics } = await proxyWith({
      endpoint: registry.url,
      rules: [
        { name: 'mirrors', repositories: ['mirror/**'], action: 'proxy' },
        { name: 'lan', networks: ['10.0.0.0/8'], action: 'steer' },
        { name: 'none', percent: 0, action: 'steer' },
      ],
      default: 'proxy',
    });
    const mirror = await startUpload(proxy.url, 'mirror/alpine');
    expect(mirror.status).toBe(202);
    expect(String(mirror.headers.location).startsWith(`${proxy.url}/v2/mirror/alpine/blobs/uploads/`)).toBe(true);
    const other = await startUpload(proxy.url, 'team/app');
    expect(String(other.headers.location).startsWith(`${proxy.url}/`)).toBe(true);

    // The same client, seen through a trusted front as 10.1.2.3, matches the network rule.
    const { proxy: fronted, metrics: frontedMetrics } = await proxyWith(
      { endpoint: registry.url, rules: [{ name: 'lan', networks: ['10.0.0.0/8'], action: 'steer' }], default: 'proxy' },
      { trustedProxies: ['127.0.0.1/32'] },
    );
    const lan = await startUpload(fronted.url, 'team/app', '', { Authorization: BASIC, 'X-Forwarded-For': '10.1.2.3' });
    expect(String(lan.headers.location).startsWith(`${registry.url}/v2/team/app/blobs/uploads/`)).toBe(true);
    const wan = await startUpload(fronted.url, 'team/app', '', { Authorization: BASIC, 'X-Forwarded-For': '192.0.2.7' });
    expect(String(wan.headers.location).startsWith(`${fronted.url}/`)).toBe(true);

    expect((await uploads(metrics)).sort()).toEqual([
      'registry_redirect_upload_decisions_total{action="proxy",reason="default"}',
      'registry_redirect_upload_decisions_total{action="proxy",reason="rule:mirrors"}',
    ]);
    expect((await uploads(frontedMetrics)).sort()).toEqual([
      'registry_redirect_upload_decisions_total{action="proxy",reason="default"}',
      'registry_redirect_upload_decisions_total{action="steer",reason="rule:lan"}',
    ]);
  });

  it('shadow mode counts and logs what it would steer, and steers nothing', async () => {
    const { proxy, metrics, logger } = await proxyWith({ endpoint: registry.url, shadow: true, rules: [{ name: 'all', percent: 100, action: 'steer' }] });
    const started = await startUpload(proxy.url, 'team/app');
    expect(started.status).toBe(202);
    expect(String(started.headers.location).startsWith(`${proxy.url}/v2/team/app/blobs/uploads/`)).toBe(true);
    expect(await uploads(metrics)).toEqual(['registry_redirect_upload_decisions_total{action="shadow",reason="rule:all"}']);
    expect(logger.text()).toContain('shadow: would steer upload');
  });

  it('mode: redirect answers the POST itself with 307 to the endpoint, query kept, without asking the upstream', async () => {
    const { proxy, metrics } = await proxyWith({ endpoint: `${registry.url}/`, mode: 'redirect' });
    const res = await startUpload(proxy.url, 'team/app', '?x=1', {});
    expect(res.status).toBe(307);
    expect(res.headers.location).toBe(`${registry.url}/v2/team/app/blobs/uploads/?x=1`);
    expect(res.headers['content-length']).toBe('0');
    expect(await uploads(metrics)).toEqual(['registry_redirect_upload_decisions_total{action="redirect",reason="default"}']);
  });

  it('PATCH, PUT, manifest PUT, DELETE and GETs of upload state are never steered or redirected', async () => {
    const { proxy, metrics } = await proxyWith({ endpoint: 'http://127.0.0.2:1', mode: 'redirect' });
    for (const [method, path] of [
      ['PATCH', '/v2/team/app/blobs/uploads/4f2b0a3e-1111-4222-8333-944445555666'],
      ['PUT', '/v2/team/app/blobs/uploads/4f2b0a3e-1111-4222-8333-944445555666?digest=sha256:00'],
      ['GET', '/v2/team/app/blobs/uploads/4f2b0a3e-1111-4222-8333-944445555666'],
      ['PUT', '/v2/team/app/manifests/v1'],
      ['DELETE', '/v2/team/app/manifests/sha256:' + '0'.repeat(64)],
      ['POST', '/v2/team/app/blobs/uploads/4f2b0a3e-1111-4222-8333-944445555666'],
      ['GET', '/v2/_catalog'],
      ['GET', '/v2/team/app/tags/list'],
    ] as const) {
      const res = await request(`${proxy.url}${path}`, { method, headers: { Authorization: BASIC, 'Content-Length': '0' } });
      expect(res.status, `${method} ${path}`).not.toBe(307);
      expect(String(res.headers.location ?? ''), `${method} ${path}`).not.toContain('127.0.0.2:1');
    }
    expect(await uploads(metrics)).toEqual([]);
  });
});
