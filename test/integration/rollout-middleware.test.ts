import { randomBytes } from 'node:crypto';
import http from 'node:http';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { prometheusMetrics, registryRedirect, type PrometheusMetrics, type RegistryRedirectOptions, type Signer } from '../../src/index.js';
import type { Logger } from '../../src/types.js';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';

/** A signer that records calls and can be switched to fail. */
function testSigner(host: string): Signer & { calls: number; failing: boolean } {
  const s = {
    name: 'test',
    calls: 0,
    failing: false,
    sign({ digest }: { digest: string }) {
      s.calls++;
      if (s.failing) throw new Error('storage credentials rejected https://x/y?sig=SECRETSIG');
      return { url: `https://${host}/blobs/${digest}?sig=abc`, expiresAt: Date.now() + 60_000 };
    },
  };
  return s;
}

function recordingLogger(): Logger & { lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = (obj: object, msg?: string) => lines.push({ ...obj, msg });
  return { lines, debug: log, info: log, warn: log, error: log };
}

let upstream: FakeUpstream;
const servers: http.Server[] = [];
const closers: Array<() => Promise<void>> = [];
const BIG = randomBytes(64 * 1024);
const SMALL = randomBytes(100);
const BIG_DIGEST = digestOf(BIG);
const SMALL_DIGEST = digestOf(SMALL);

beforeAll(async () => {
  upstream = await startFakeUpstream();
  for (const repo of ['team/app', 'internal/db', 'internal/public/web']) {
    upstream.blobs.set(repo, new Map([[BIG_DIGEST, BIG], [SMALL_DIGEST, SMALL]]));
  }
});
afterAll(async () => {
  await Promise.all(closers.map((c) => c()));
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await upstream.close();
});

function app(options: Partial<RegistryRedirectOptions> & { signer: Signer }) {
  const mw = registryRedirect({ upstream: upstream.url, ...options });
  closers.push(() => mw.close());
  const server = http.createServer((req, res) => mw(req, res));
  servers.push(server);
  return { server, mw };
}

const get = (server: http.Server, repo: string, digest: string) =>
  request(server).get(`/v2/${repo}/blobs/${digest}`).set('Authorization', BASIC).redirects(0).buffer(true).parse((r, cb) => {
    const chunks: Buffer[] = [];
    r.on('data', (c: Buffer) => chunks.push(c));
    r.on('end', () => cb(null, Buffer.concat(chunks)));
  });

/** Parses the exposition text into `name{labels} value` -> value. */
async function scrape(metrics: PrometheusMetrics): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of (await metrics.render()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

describe('per-network routing with named signers (issue example)', () => {
  const vpc = testSigner('vpc-storage.example');
  const cdn = testSigner('cdn.example');
  const def = testSigner('default.example');
  const metrics = prometheusMetrics();
  let server: http.Server;
  beforeAll(() => {
    server = app(routingOptions()).server;
  });
  const routingOptions = (): Partial<RegistryRedirectOptions> & { signer: Signer } => ({
    signer: def,
    signers: { s3: vpc, cdn },
    trustedProxies: ['127.0.0.1/32'],
    metrics,
    rollout: {
      rules: [
        { name: 'offline', networks: ['10.99.0.0/16'], action: 'proxy' },
        { name: 'vpc', networks: ['10.0.0.0/8'], action: 'redirect', signer: 's3' },
        { repositories: ['internal/**', '!internal/public/**'], action: 'proxy' },
        { name: 'small', minSize: '1KiB', action: 'redirect', signer: 'cdn' },
      ],
      default: 'proxy',
      overrideHeader: 'X-Registry-Redirect-Bypass',
    },
  });

  it('VPC clients (behind the trusted proxy) get the s3 signer', async () => {
    const res = await get(server, 'team/app', BIG_DIGEST).set('X-Forwarded-For', '10.1.2.3');
    expect(res.status).toBe(307);
    expect(res.headers.location).toBe(`https://vpc-storage.example/blobs/${BIG_DIGEST}?sig=abc`);
  });

  it('nodes without internet are proxied: the bytes come from the upstream', async () => {
    const res = await get(server, 'team/app', BIG_DIGEST).set('X-Forwarded-For', '10.99.0.7');
    expect(res.status).toBe(200);
    expect(Buffer.compare(res.body as Buffer, BIG)).toBe(0);
  });

  it('internal repositories are proxied, except the excluded public ones', async () => {
    expect((await get(server, 'internal/db', BIG_DIGEST)).status).toBe(200);
    const pub = await get(server, 'internal/public/web', BIG_DIGEST);
    expect(pub.status).toBe(307);
    expect(pub.headers.location).toContain('cdn.example');
  });

  it('small blobs (size from the upstream HEAD) are proxied, big ones go to the CDN', async () => {
    const small = await get(server, 'team/app', SMALL_DIGEST);
    expect(small.status).toBe(200);
    expect(Buffer.compare(small.body as Buffer, SMALL)).toBe(0);
    expect((await get(server, 'team/app', BIG_DIGEST)).headers.location).toContain('cdn.example');
  });

  it('the override header forces proxy', async () => {
    const res = await get(server, 'team/app', BIG_DIGEST).set('X-Forwarded-For', '10.1.2.3').set('X-Registry-Redirect-Bypass', '1');
    expect(res.status).toBe(200);
    expect(res.headers.location).toBeUndefined();
  });

  it('an unauthorized request is never decided, signed or counted as a decision', async () => {
    const before = vpc.calls + cdn.calls + def.calls;
    const res = await request(server).get(`/v2/team/app/blobs/${BIG_DIGEST}`).set('X-Forwarded-For', '10.1.2.3').redirects(0);
    expect(res.status).toBe(401);
    expect(vpc.calls + cdn.calls + def.calls).toBe(before);
  });

  it('metrics: decisions by action/signer/reason, bytes redirected vs proxied, authorize latency', async () => {
    const m = await scrape(metrics);
    expect(m.get('registry_redirect_decisions_total{action="redirect",signer="s3",reason="rule:vpc"}')).toBe(1);
    expect(m.get('registry_redirect_decisions_total{action="proxy",signer="none",reason="rule:offline"}')).toBe(1);
    expect(m.get('registry_redirect_decisions_total{action="proxy",signer="none",reason="rules[2]"}')).toBe(1);
    expect(m.get('registry_redirect_decisions_total{action="redirect",signer="cdn",reason="rule:small"}')).toBe(2);
    expect(m.get('registry_redirect_decisions_total{action="proxy",signer="none",reason="default"}')).toBe(1);
    expect(m.get('registry_redirect_decisions_total{action="proxy",signer="none",reason="override_header"}')).toBe(1);
    // Redirected: 3 big blobs. Proxied: offline + internal + override (big) and one small.
    expect(m.get('registry_redirect_blob_bytes_total{delivery="redirected"}')).toBe(3 * BIG.length);
    expect(m.get('registry_redirect_blob_bytes_total{delivery="proxied"}')).toBe(3 * BIG.length + SMALL.length);
    expect(m.get('registry_redirect_authorize_duration_seconds_count{outcome="granted"}')).toBe(7);
    expect(m.get('registry_redirect_authorize_duration_seconds_count{outcome="denied"}')).toBe(1);
    expect(m.get('registry_redirect_sign_duration_seconds_count{signer="cdn",result="ok"}')).toBe(2);
    expect(m.get('registry_redirect_signer_healthy{signer="default"}')).toBe(1);
    expect(m.get('registry_redirect_signer_healthy{signer="s3"}')).toBe(1);
  });
});

describe('shadow mode', () => {
  it('decides and signs, logs and counts, but proxies every blob', async () => {
    const signer = testSigner('cdn.example');
    const metrics = prometheusMetrics();
    const logger = recordingLogger();
    const { server } = app({
      signer,
      metrics,
      logger,
      rollout: { mode: 'shadow', rules: [{ repositories: ['internal/**'], action: 'proxy' }], default: 'redirect' },
    });
    const a = await get(server, 'team/app', BIG_DIGEST);
    const b = await get(server, 'internal/db', BIG_DIGEST);
    for (const res of [a, b]) {
      expect(res.status).toBe(200);
      expect(res.headers.location).toBeUndefined();
      expect(Buffer.compare(res.body as Buffer, BIG)).toBe(0);
    }
    expect(signer.calls).toBe(1); // signed only where the policy said redirect
    const m = await scrape(metrics);
    expect(m.get('registry_redirect_decisions_total{action="shadow",signer="default",reason="default"}')).toBe(1);
    expect(m.get('registry_redirect_decisions_total{action="proxy",signer="none",reason="rules[0]"}')).toBe(1);
    expect(m.get('registry_redirect_blob_bytes_total{delivery="proxied"}')).toBe(2 * BIG.length);
    expect(m.has('registry_redirect_blob_bytes_total{delivery="redirected"}')).toBe(false);
    const line = logger.lines.find((l) => l.msg === 'shadow: would redirect');
    expect(line).toMatchObject({ repository: 'team/app', signer: 'default', reason: 'default' });
  });
});

describe('circuit breaker from signer errors during requests', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('opens after failureThreshold errors (traffic proxied without calling the signer), retries after retryAfter, closes on success', async () => {
    // Only Date is faked (timers and sockets stay real): the breaker's clock moves when the test says.
    vi.useFakeTimers({ toFake: ['Date'] });
    const signer = testSigner('cdn.example');
    const metrics = prometheusMetrics();
    const { server, mw } = app({ signer, metrics, health: { failureThreshold: 2, retryAfter: 30_000 } });
    signer.failing = true;
    for (let i = 0; i < 2; i++) expect((await get(server, 'team/app', BIG_DIGEST)).status).toBe(200);
    expect(signer.calls).toBe(2);
    expect(mw.health.status().default).toMatchObject({ healthy: false, consecutiveFailures: 2 });
    expect(mw.health.status().default!.lastError).not.toContain('SECRETSIG');

    const open = await get(server, 'team/app', BIG_DIGEST);
    expect(open.status).toBe(200);
    expect(Buffer.compare(open.body as Buffer, BIG)).toBe(0);
    expect(signer.calls).toBe(2); // breaker open: not even asked

    signer.failing = false;
    vi.setSystemTime(Date.now() + 29_000);
    expect((await get(server, 'team/app', BIG_DIGEST)).status).toBe(200); // still open
    expect(signer.calls).toBe(2);
    vi.setSystemTime(Date.now() + 1_000);
    const retried = await get(server, 'team/app', BIG_DIGEST);
    expect(retried.status).toBe(307);
    expect(mw.health.status().default!.healthy).toBe(true);

    const m = await scrape(metrics);
    expect(m.get('registry_redirect_fallbacks_total{signer="default",reason="signer_error"}')).toBe(2);
    expect(m.get('registry_redirect_fallbacks_total{signer="default",reason="signer_unhealthy"}')).toBe(2);
    expect(m.get('registry_redirect_decisions_total{action="proxy",signer="default",reason="signer_unhealthy"}')).toBe(2);
    expect(m.get('registry_redirect_sign_duration_seconds_count{signer="default",result="error"}')).toBe(2);
    expect(m.get('registry_redirect_signer_healthy{signer="default"}')).toBe(1);
  });

  it("with onSignerError: 'error' an open breaker answers 503 instead", async () => {
    const signer = testSigner('cdn.example');
    signer.failing = true;
    const { server } = app({ signer, onSignerError: 'error', health: { failureThreshold: 1, retryAfter: 60_000 } });
    expect((await get(server, 'team/app', BIG_DIGEST)).status).toBe(503);
    expect((await get(server, 'team/app', BIG_DIGEST)).status).toBe(503);
    expect(signer.calls).toBe(1);
  });
});

describe('embedded mode', () => {
  it('the policy applies; proxy decisions go to next() with the bytes counted from its Content-Length', async () => {
    const signer = testSigner('cdn.example');
    const metrics = prometheusMetrics();
    const mw = registryRedirect({
      signer,
      metrics,
      authorize: () => ({ size: 5000 }),
      rollout: { rules: [{ minSize: 4096, action: 'redirect' }], default: 'proxy' },
    });
    closers.push(() => mw.close());
    const server = http.createServer((req, res) =>
      mw(req, res, () => {
        res.writeHead(200, { 'Content-Length': '3' });
        res.end('abc');
      }),
    );
    servers.push(server);
    expect((await request(server).get(`/v2/a/b/blobs/${BIG_DIGEST}`).redirects(0)).status).toBe(307);
    const small = registryRedirect({ signer, metrics: prometheusMetrics(), authorize: () => ({ size: 10 }), rollout: { rules: [{ minSize: 4096, action: 'redirect' }], default: 'proxy' } });
    closers.push(() => small.close());
    const s2 = http.createServer((req, res) => small(req, res, () => res.end('next')));
    servers.push(s2);
    const res = await request(s2).get(`/v2/a/b/blobs/${BIG_DIGEST}`).redirects(0);
    expect(res.status).toBe(200);
    expect(res.text).toBe('next');
    const m = await scrape(metrics);
    expect(m.get('registry_redirect_blob_bytes_total{delivery="redirected"}')).toBe(5000);
  });
});

describe('construction-time validation of the rollout options', () => {
  const signer = testSigner('x.example');
  it.each<[Partial<RegistryRedirectOptions>, RegExp]>([
    [{ signers: { default: signer } }, /signers\.default: "default" is reserved/],
    [{ signers: { cdn: {} as Signer } }, /signers\.cdn: not a signer/],
    [{ rollout: { rules: [{ action: 'redirect', signer: 'cdn' }], default: 'proxy' } }, /rollout\.rules\[0\]\.signer: unknown signer "cdn"/],
    [{ trustedProxies: ['lb.internal'] }, /trustedProxies\[0\]: "lb\.internal" is not an IP address/],
    [{ health: { failureThreshold: 0 } }, /health\.failureThreshold: write a whole number >= 1/],
    [{ health: { probe: { repository: 'a', digest: 'nope' } } }, /health\.probe\.digest: "nope" is not a digest/],
  ])('rejects %j', (extra, message) => {
    expect(() => registryRedirect({ upstream: 'http://127.0.0.1:1', signer, ...extra })).toThrow(message);
  });
});
