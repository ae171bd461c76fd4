/**
 * Rollout end to end with real parts: distribution 2.8 (htpasswd) with a pushed image, Azurite
 * (verifies SAS) seeded with the registry's blobs, the proxy started from a YAML file, skopeo.
 * - /healthz, /readyz, metrics on a separate listener, scraped and asserted;
 * - circuit breaker: Azurite stopped -> probe fails -> unhealthy -> blobs proxied, /readyz 503;
 *   Azurite restarted -> probe passes -> redirects again;
 * - live reload (valid, invalid, valid) under concurrent traffic without a failed request;
 * - reload by file watch, proven with a real client (skopeo) and storage's request log;
 * - the CLI process: SIGHUP reload, JSON access logs with request ids and no secrets, SIGTERM.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import type { Logger } from '../../src/types.js';
import { AZURITE_ACCOUNT_KEY, startAzurite, type RunningAzurite } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { startCli } from '../support/cli.js';
import { request, waitFor } from '../support/http.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { freePort } from '../support/ports.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { copyRegistryBlobsToAzure } from '../support/seed-storage.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo');
const creds = { username: 'alice', password: 'rollout-e2e-Pa55word' };
const BASIC = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function recordingLogger(): Logger & { lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = (obj: object, msg?: string) => lines.push({ ...obj, msg });
  return { lines, debug: () => {}, info: log, warn: log, error: log };
}

/** Parses the exposition text into `name{labels}` -> value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

describe.skipIf(!has)('rollout, health, reload and metrics against real parts', () => {
  let work: string;
  let registry: RunningRegistry;
  let azurite: RunningAzurite;
  let image: OciImage;
  let blobs: Array<{ digest: string; size: number }>;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-rollout-e2e-'));
    [registry, azurite, image] = await Promise.all([
      startRegistry({ auth: { htpasswd: { users: { [creds.username]: creds.password } } } }),
      startAzurite(),
      makeOciImage(join(work, 'image'), { layers: [{ size: 300_000, seed: 'rollout-a' }, { size: 40_000, seed: 'rollout-b' }] }),
    ]);
    const pushed = await skopeoPush(image, `docker://${registry.hostPort}/team/app:v1`, creds, { timeoutMs: 20_000 });
    expect(pushed.code, pushed.stderr).toBe(0);
    await copyRegistryBlobsToAzure(registry.storageRoot, azurite.containerClient('registry'));
    blobs = image.layers.map((l) => ({ digest: l.digest, size: l.size }));
  }, 60_000);

  afterAll(async () => {
    await azurite?.stop();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  }, 20_000);

  /** A config file as an object; `extra` is merged at the top level. */
  const configObject = (extra: Record<string, unknown> = {}) => ({
    listen: '127.0.0.1:0',
    upstream: registry.url,
    signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry', endpoint: azurite.endpoint } },
    log: { level: 'silent' },
    ...extra,
  });

  const blobGet = (base: string, digest: string, agent?: http.Agent, headers: Record<string, string> = {}) =>
    request(`${base}/v2/team/app/blobs/${digest}`, { headers: { Authorization: BASIC, ...headers }, agent, timeoutMs: 10_000 });

  describe('in-process server from a YAML file', () => {
    let running: RunningServer;
    let configPath: string;
    const logger = recordingLogger();
    let metricsPort: number;

    const write = (extra: Record<string, unknown>) => writeFile(configPath, stringify(configObject({ ...extra, metrics: { listen: `127.0.0.1:${metricsPort}` }, health: health(), reload: { watch: false } })));
    const health = () => ({ failureThreshold: 2, probe: { repository: 'team/app', digest: blobs[1]!.digest, interval: '150ms', timeout: '1s' } });
    const scrape = async () => parseMetrics((await request(`${running.metricsUrl}/metrics`)).body.toString());

    beforeAll(async () => {
      configPath = join(work, 'proxy.yaml');
      metricsPort = await freePort();
      await write({});
      running = await startServer(await loadConfig(configPath), logger, { configPath });
    }, 20_000);
    afterAll(async () => {
      await running?.close();
    }, 15_000);

    it('/healthz and /readyz answer locally; metrics are on their own listener only', async () => {
      expect((await request(`${running.url}/healthz`)).status).toBe(200);
      const ready = await request(`${running.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(JSON.parse(ready.body.toString())).toEqual({ ready: true, upstream: 'reachable', signers: { default: 'healthy' }, storage: { signer: 'proven' } });
      expect(running.metricsUrl).toBe(`http://127.0.0.1:${metricsPort}`);
      const metrics = await request(`${running.metricsUrl}/metrics`);
      expect(metrics.status).toBe(200);
      expect(metrics.headers['content-type']).toContain('text/plain');
      expect(metrics.body.toString()).toContain('process_cpu_user_seconds_total');
      // The registry port does not serve metrics (the path goes to the upstream: 404), nor the
      // metrics port the registry.
      expect((await request(`${running.url}/metrics`)).status).toBe(404);
      expect((await request(`${running.metricsUrl}/v2/`)).status).toBe(404);
    });

    it('circuit breaker: Azurite stopped -> unhealthy, blobs proxied, not ready; restarted -> redirects again', async () => {
      await waitFor(async () => ((await scrape()).get('registry_redirect_signer_probes_total{signer="default",result="ok"}') ?? 0) >= 1, { timeoutMs: 5_000, label: 'a passing probe' });
      const healthy = await blobGet(running.url, blobs[0]!.digest);
      expect(healthy.status).toBe(307);

      await azurite.stopEmulator();
      await waitFor(async () => (await request(`${running.url}/readyz`)).status === 503, { timeoutMs: 10_000, label: '/readyz 503 after storage stopped' });
      const notReady = JSON.parse((await request(`${running.url}/readyz`)).body.toString());
      expect(notReady).toEqual({ ready: false, upstream: 'reachable', signers: { default: 'unhealthy' }, storage: { signer: 'proven' } });
      const proxied = await blobGet(running.url, blobs[0]!.digest);
      expect(proxied.status).toBe(200);
      expect(proxied.headers.location).toBeUndefined();
      expect(sha256(proxied.body)).toBe(blobs[0]!.digest);
      const open = await scrape();
      expect(open.get('registry_redirect_signer_healthy{signer="default"}')).toBe(0);
      expect(open.get('registry_redirect_fallbacks_total{signer="default",reason="signer_unhealthy"}')).toBeGreaterThanOrEqual(1);
      expect(open.get('registry_redirect_signer_probes_total{signer="default",result="error"}')).toBeGreaterThanOrEqual(2);
      expect(logger.lines.some((l) => l.msg === 'signer unhealthy: falling back')).toBe(true);

      await azurite.startEmulator();
      await waitFor(async () => (await request(`${running.url}/readyz`)).status === 200, { timeoutMs: 20_000, label: '/readyz 200 after storage restarted' });
      const again = await blobGet(running.url, blobs[0]!.digest);
      expect(again.status).toBe(307);
      const fromStorage = await request(again.headers.location!);
      expect(fromStorage.status).toBe(200);
      expect(sha256(fromStorage.body)).toBe(blobs[0]!.digest);
      expect((await scrape()).get('registry_redirect_signer_healthy{signer="default"}')).toBe(1);
    }, 45_000);

    it('reload (valid, invalid, valid) under concurrent traffic: no request fails, each sees one config', async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
      const results: Array<{ started: number; status: number; ok: boolean; why?: string }> = [];
      let stop = false;
      const deadline = Date.now() + 15_000;
      const worker = async (w: number) => {
        for (let i = 0; !stop && i < 400 && Date.now() < deadline; i++) {
          const blob = blobs[(w + i) % blobs.length]!;
          const started = performance.now();
          try {
            const res = await blobGet(running.url, blob.digest, agent);
            const ok =
              (res.status === 307 && new URL(res.headers.location!).searchParams.has('sig') && res.headers['docker-content-digest'] === blob.digest) ||
              (res.status === 200 && sha256(res.body) === blob.digest);
            results.push({ started, status: res.status, ok, why: ok ? undefined : `${res.status} ${res.body.toString().slice(0, 200)}` });
          } catch (err) {
            results.push({ started, status: 0, ok: false, why: String(err) });
          }
        }
      };
      const waitForMore = async (n: number) => {
        const target = results.length + n;
        await waitFor(async () => results.length >= target || stop, { timeoutMs: 10_000, intervalMs: 10, label: `${n} more requests` });
      };
      const traffic = Promise.all([0, 1, 2, 3].map(worker));
      try {
        await waitForMore(20);
        // 1. valid: clients from 127.0.0.0/8 ("nodes without internet") are proxied.
        await write({ rollout: { rules: [{ name: 'offline', networks: ['127.0.0.0/8'], action: 'proxy' }], default: 'redirect' } });
        const toProxy = await running.reload('test');
        const afterFirst = performance.now();
        expect(toProxy).toEqual({ ok: true, changed: true });
        await waitForMore(30);
        // 2. invalid: rejected, the previous config keeps serving.
        await write({ rollout: { rules: [{ networks: ['127.0.0.0/33'], action: 'redirect' }], default: 'redirect' } });
        const rejected = await running.reload('test');
        expect(rejected.ok).toBe(false);
        expect(!rejected.ok && rejected.error).toMatch(/rollout\.rules\[0\]\.networks\[0\]: "127\.0\.0\.0\/33" has a prefix length outside 0-32/);
        await waitForMore(30);
        // 3. valid again: everything redirected.
        const beforeLast = performance.now();
        await write({});
        const back = await running.reload('test');
        const afterLast = performance.now();
        expect(back.ok).toBe(true);
        await waitForMore(30);
        stop = true;
        await traffic;

        const failed = results.filter((r) => !r.ok);
        expect(failed, JSON.stringify(failed.slice(0, 5))).toEqual([]);
        // Requests that started after a reload finished see the new config.
        expect(results.filter((r) => r.started > afterFirst && r.started < beforeLast).every((r) => r.status === 200)).toBe(true);
        expect(results.filter((r) => r.started > afterLast).every((r) => r.status === 307)).toBe(true);
        expect(results.filter((r) => r.started > afterLast).length).toBeGreaterThanOrEqual(20);
        const m = await scrape();
        expect(m.get('registry_redirect_config_reloads_total{result="success"}')).toBe(2);
        expect(m.get('registry_redirect_config_reloads_total{result="failure"}')).toBe(1);
        expect(m.get('registry_redirect_decisions_total{action="proxy",signer="none",reason="rule:offline"}')).toBeGreaterThanOrEqual(30);
        expect(logger.lines.some((l) => l.msg === 'config reload rejected: the previous configuration keeps serving')).toBe(true);
      } finally {
        stop = true;
        await traffic;
        agent.destroy();
      }
    }, 40_000);
  });

  describe('file watch reload, proven with skopeo and storage request logs', () => {
    let running: RunningServer;
    let configPath: string;

    beforeAll(async () => {
      configPath = join(work, 'watched.yaml');
      await writeFile(configPath, stringify(configObject({ rollout: { rules: [{ networks: ['127.0.0.0/8'], action: 'proxy' }], default: 'redirect' } })));
      running = await startServer(await loadConfig(configPath), recordingLogger(), { configPath });
    }, 20_000);
    afterAll(async () => {
      await running?.close();
    }, 15_000);

    it('proxied pull touches no storage; after saving the file, the next pull is redirected', async () => {
      const ref = `docker://${running.url.slice('http://'.length)}/team/app:v1`;
      azurite.requests.length = 0;
      const first = await skopeoPull(ref, join(work, 'pull-proxied'), creds, { timeoutMs: 20_000 });
      expect(first.code, first.stderr).toBe(0);
      expect((await verifyPulledDir(join(work, 'pull-proxied'), image)).problems).toEqual([]);
      expect(azurite.requests).toEqual([]);

      await writeFile(configPath, stringify(configObject({})));
      await waitFor(async () => (await blobGet(running.url, blobs[0]!.digest)).status === 307, { timeoutMs: 10_000, label: 'the watcher to apply the saved file' });
      azurite.requests.length = 0;
      const second = await skopeoPull(ref, join(work, 'pull-redirected'), creds, { timeoutMs: 20_000 });
      expect(second.code, second.stderr).toBe(0);
      expect((await verifyPulledDir(join(work, 'pull-redirected'), image)).problems).toEqual([]);
      const blobGets = azurite.requests.filter((r) => r.method === 'GET');
      expect(blobGets.length).toBeGreaterThanOrEqual(blobs.length);
      expect(blobGets.every((r) => r.status === 200 || r.status === 206)).toBe(true);
      expect(azurite.requests.every((r) => r.headers.authorization === undefined)).toBe(true);
    }, 60_000);
  });

  describe('the CLI process', () => {
    it('SIGHUP reloads (invalid rejected), access logs are JSON with request ids and no secrets, SIGTERM exits 0', async () => {
      const port = await freePort();
      const path = join(work, 'cli.yaml');
      const cfg = (extra: Record<string, unknown>) =>
        stringify(configObject({ listen: `127.0.0.1:${port}`, log: { level: 'info' }, reload: { watch: false }, ...extra }));
      await writeFile(path, cfg({ rollout: { default: 'proxy' } }));
      const cli = startCli(['serve', '--config', path]);
      try {
        const base = `http://127.0.0.1:${port}`;
        await waitFor(async () => (await request(`${base}/readyz`, { timeoutMs: 1_000 })).status === 200, {
          timeoutMs: 15_000,
          label: 'the CLI to be ready',
          describe: () => cli.output(),
        });
        const proxied = await blobGet(base, blobs[1]!.digest, undefined, { 'X-Request-Id': 'req-test-1' });
        expect(proxied.status).toBe(200);
        expect(proxied.headers['x-request-id']).toBe('req-test-1');

        await writeFile(path, cfg({}));
        cli.child.kill('SIGHUP');
        await waitFor(async () => (await blobGet(base, blobs[1]!.digest)).status === 307, { timeoutMs: 10_000, label: 'SIGHUP reload', describe: () => cli.output() });

        await writeFile(path, cfg({ rollout: { default: 'sometimes' } }));
        cli.child.kill('SIGHUP');
        await waitFor(async () => cli.output().includes('config reload rejected'), { timeoutMs: 10_000, label: 'the rejection log', describe: () => cli.output() });
        const stillRedirects = await blobGet(base, blobs[1]!.digest);
        expect(stillRedirects.status).toBe(307);

        await cli.stop(5_000);
        expect(await cli.exited).toBe(0);
        const lines = cli.output().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown> & { req?: { id?: string; path?: string }; res?: { statusCode?: number } });
        const access = lines.find((l) => l.req?.id === 'req-test-1');
        expect(access).toMatchObject({ msg: 'request completed', req: { method: 'GET', path: `/v2/team/app/blobs/${blobs[1]!.digest}` }, res: { statusCode: 200 } });
        expect(lines.filter((l) => l.msg === 'request completed').every((l) => typeof l.req?.id === 'string' && l.req.id.length > 0)).toBe(true);
        expect(lines.find((l) => l.msg === 'config reloaded')).toMatchObject({ trigger: 'SIGHUP' });
        expect(lines.find((l) => l.msg === 'config reload rejected: the previous configuration keeps serving')?.error).toMatch(/rollout\.default: write "redirect"/);
        const text = cli.output();
        for (const secret of [creds.password, BASIC.slice('Basic '.length), 'sig=', AZURITE_ACCOUNT_KEY]) expect(text).not.toContain(secret);
      } finally {
        await cli.stop(2_000);
      }
      expect(await readFile(path, 'utf8')).toContain('sometimes');
    }, 45_000);
  });
});
