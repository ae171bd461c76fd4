/**
 * Prevents: credentials (or anything else a client controls) ending up in Prometheus labels,
 * where they would be stored, replicated to a TSDB and shown on dashboards. Every label value
 * must come from configuration or a fixed set; repositories, client addresses, user names, tokens,
 * cookies, query strings, user agents and signer error messages must never appear.
 * Real proxy server with the metrics endpoint, real requests carrying secrets everywhere.
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prometheusMetrics, registryRedirect, type Signer } from '../../src/index.js';
import { silentLogger } from '../../src/log.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';
import { request } from '../support/http.js';
import { digestOf, startFakeUpstream, USER, PASS, type FakeUpstream } from '../helpers/fake-upstream.js';

const SECRETS = {
  password: PASS,
  basic: Buffer.from(`${USER}:${PASS}`).toString('base64'),
  wrongPassword: 'Wr0ngPassw0rd-hunter2',
  jwtSubject: 'robot-svc-7f3a9c',
  jwtSignature: 'SIGNATUREPART9f8e7d',
  cookie: 'sessionid-5e5e5e5e',
  queryToken: 'querytoken-4d4d4d',
  repository: 'confidential-project-x',
  userAgent: 'agent-with-secret-3c3c3c',
  clientIp: '10.77.66.55',
  signerError: 'signer-leaked-AccountKey-2b2b2b',
};

const BLOB = Buffer.from('blob for the metrics label test');
const DIGEST = digestOf(BLOB);
const jwt = `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: SECRETS.jwtSubject })).toString('base64url')}.${SECRETS.jwtSignature}`;

/** Every label value allowed, by label name; the extra names are filled from the config. */
function allowed(signers: string[], reasons: string[]): Record<string, Set<string>> {
  return {
    action: new Set(['redirect', 'proxy', 'shadow', 'error', 'steer']),
    signer: new Set([...signers, 'none']),
    reason: new Set(['default', 'override_header', 'signer_error', 'signer_timeout', 'signer_unhealthy', 'mount', 'monolithic', 'not_accepted', 'unexpected_location', ...reasons]),
    outcome: new Set(['granted', 'denied', 'error']),
    delivery: new Set(['redirected', 'proxied']),
    result: new Set(['ok', 'error', 'hit', 'miss', 'refresh', 'success', 'failure']),
  };
}

/** Checks every `registry_redirect_*` series' labels against the allowed sets. */
function assertLabels(text: string, sets: Record<string, Set<string>>): number {
  let series = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('registry_redirect_')) continue;
    series++;
    const labels = /\{(.*)\}/.exec(line)?.[1];
    if (!labels) continue;
    for (const [, name, value] of labels.matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) {
      if (name === 'le') {
        expect(value === '+Inf' || Number.isFinite(Number(value)), line).toBe(true);
        continue;
      }
      expect(sets[name!], `unexpected label ${name} in ${line}`).toBeDefined();
      expect(sets[name!]!.has(value!), `label ${name}="${value}" in ${line}`).toBe(true);
    }
  }
  return series;
}

function assertNoSecrets(text: string): void {
  for (const [what, secret] of Object.entries(SECRETS)) expect(text.includes(secret), `${what} appears in the metrics`).toBe(false);
}

let upstream: FakeUpstream;
let running: RunningServer;

beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set(`team/${SECRETS.repository}`, new Map([[DIGEST, BLOB]]));
  const azure = (container: string) => ({ azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container, endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } });
  running = await startServer(
    buildConfig({
      listen: '127.0.0.1:0',
      upstream: upstream.url,
      signer: azure('public'),
      signers: { cdn: azure('cdn') },
      trustedProxies: ['127.0.0.1/32'],
      rollout: {
        clientKey: 'subject',
        overrideHeader: 'X-Bypass',
        rules: [
          { name: 'vpc', networks: ['10.0.0.0/8'], action: 'redirect', signer: 'cdn' },
          { percent: 50, action: 'redirect' },
        ],
        default: 'proxy',
      },
      metrics: { path: '/metrics', defaultMetrics: true },
      log: { requests: false },
    }),
    silentLogger,
  );
});
afterAll(async () => {
  await running?.close();
  await upstream?.close();
});

describe('credentials never in metrics labels', () => {
  it('server: requests with secrets in every header, path and query leave only configured label values', async () => {
    const path = `/v2/team/${SECRETS.repository}/blobs/${DIGEST}?token=${SECRETS.queryToken}`;
    const common = { Cookie: `session=${SECRETS.cookie}`, 'User-Agent': SECRETS.userAgent, 'X-Forwarded-For': SECRETS.clientIp };
    const variants: Array<Record<string, string>> = [
      { Authorization: `Basic ${SECRETS.basic}` },
      { Authorization: `Basic ${Buffer.from(`${USER}:${SECRETS.wrongPassword}`).toString('base64')}` }, // 401
      { Authorization: `Bearer ${jwt}` }, // 401 at the fake upstream, still parsed for the client key
      { Authorization: `Basic ${SECRETS.basic}`, 'X-Bypass': '1' },
      { Authorization: `Basic ${SECRETS.basic}`, 'X-Forwarded-For': '198.51.100.23' },
      {},
    ];
    const statuses: number[] = [];
    for (const extra of variants) {
      statuses.push((await request(`${running.url}${path}`, { headers: { ...common, ...extra } })).status);
      statuses.push((await request(`${running.url}/v2/team/${SECRETS.repository}/manifests/latest?token=${SECRETS.queryToken}`, { headers: { ...common, ...extra } })).status);
    }
    expect(statuses).toContain(307);
    expect(statuses).toContain(401);

    const metrics = await request(`${running.url}/metrics`);
    expect(metrics.status).toBe(200);
    const text = metrics.body.toString();
    assertNoSecrets(text);
    const series = assertLabels(text, allowed(['default', 'cdn'], ['rule:vpc', 'rules[1]']));
    expect(series).toBeGreaterThan(10);
    expect(text).toContain('registry_redirect_decisions_total{action="redirect",signer="cdn",reason="rule:vpc"}');
    expect(text).toContain('registry_redirect_decisions_total{action="proxy",signer="none",reason="override_header"}');
    expect(text).toContain('registry_redirect_authorize_duration_seconds_count{outcome="denied"}');
  });

  it('middleware: signer errors that quote secrets, and cache results, still give only signer names', async () => {
    const metrics = prometheusMetrics();
    const failing: Signer = {
      name: `azure-${SECRETS.signerError}`, // even a signer's own name is not used as a label
      sign: () => {
        throw new Error(`${SECRETS.signerError} ${SECRETS.password}`);
      },
    };
    const mw = registryRedirect({ upstream: upstream.url, signer: failing, metrics });
    const server = http.createServer((req, res) => mw(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      const res = await request(`http://127.0.0.1:${port}/v2/team/${SECRETS.repository}/blobs/${DIGEST}`, {
        headers: { Authorization: `Basic ${SECRETS.basic}`, 'User-Agent': SECRETS.userAgent },
      });
      expect(res.status).toBe(200); // fell back to the upstream
      metrics.cacheResult('default', 'miss');
      const text = await metrics.render();
      assertNoSecrets(text);
      assertLabels(text, allowed(['default'], []));
      expect(text).toContain('registry_redirect_fallbacks_total{signer="default",reason="signer_error"} 1');
      expect(text).toContain('registry_redirect_signed_url_cache_total{signer="default",result="miss"} 1');
    } finally {
      await new Promise((resolve) => server.close(resolve));
      await mw.close();
    }
  });

  it('push: upload decisions carry only actions, rule names and fixed reasons', async () => {
    const metrics = prometheusMetrics();
    const signer: Signer = { name: 'unused', sign: () => ({ url: 'https://storage.invalid/x', expiresAt: Date.now() + 60_000 }) };
    const mw = registryRedirect({
      upstream: upstream.url,
      signer,
      metrics,
      trustedProxies: ['127.0.0.1/32'],
      push: { endpoint: 'http://127.0.0.2:5000', rules: [{ name: 'lan', networks: ['10.0.0.0/8'], action: 'steer' }, { percent: 50, action: 'proxy' }], default: 'steer' },
    });
    const server = http.createServer((req, res) => mw(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      const common = { Cookie: `session=${SECRETS.cookie}`, 'User-Agent': SECRETS.userAgent, 'Content-Length': '0' };
      for (const [repo, query, extra] of [
        ['up', '', { Authorization: `Basic ${SECRETS.basic}`, 'X-Forwarded-For': SECRETS.clientIp }],
        [`team/${SECRETS.repository}`, `?token=${SECRETS.queryToken}`, { Authorization: `Basic ${SECRETS.basic}`, 'X-Forwarded-For': SECRETS.clientIp }],
        ['up', '', { Authorization: `Basic ${Buffer.from(`${USER}:${SECRETS.wrongPassword}`).toString('base64')}` }],
        ['up', `?mount=${DIGEST}&from=team/${SECRETS.repository}`, { Authorization: `Bearer ${jwt}` }],
        ['up', '', { Authorization: `Bearer ${jwt}`, 'X-Forwarded-For': '198.51.100.23' }],
      ] as const) {
        await request(`http://127.0.0.1:${port}/v2/${repo}/blobs/uploads/${query}`, { method: 'POST', headers: { ...common, ...extra } });
      }
      const text = await metrics.render();
      assertNoSecrets(text);
      assertLabels(text, allowed(['default'], ['rule:lan', 'rules[1]']));
      expect(text).toContain('registry_redirect_upload_decisions_total{action="steer",reason="rule:lan"} 1');
      expect(text).toContain('registry_redirect_upload_decisions_total{action="proxy",reason="unexpected_location"} 1');
      expect(text).toContain('registry_redirect_upload_decisions_total{action="proxy",reason="mount"} 1');
    } finally {
      await new Promise((resolve) => server.close(resolve));
      await mw.close();
    }
  });
});
