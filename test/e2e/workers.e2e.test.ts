import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AZURITE_KEY, azureProxyYaml } from '../helpers/constants.js';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { childrenOf } from '../support/child.js';
import { request, waitFor } from '../support/http.js';
import { freePort } from '../support/ports.js';

const CLI = new URL('../../dist/server/cli.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'rr-workers-'));
const children: ChildProcess[] = [];

function run(args: string[]) {
  const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, AZURE_STORAGE_KEY: AZURITE_KEY }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}


function configFile(port: number, upstream: string, extra: string): string {
  const file = join(dir, `proxy-${port}.yaml`);
  writeFileSync(
    file,
    azureProxyYaml({ listen: `127.0.0.1:${port}`, upstream, extra: `reload: { watch: false }\n${extra}\n` }),
  );
  return file;
}

let upstream: FakeUpstream;
const BLOB = Buffer.from('hello workers');
const DIGEST = digestOf(BLOB);

beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await upstream.close();
});

describe.skipIf(process.platform !== 'linux')('serve --workers N (node:cluster)', () => {
  it('N workers share the port; metrics.listen sums them; SIGHUP reloads each; a dead worker is replaced; SIGTERM stops all, exit 0', async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    const r = run(['serve', '--config', configFile(port, upstream.url, `metrics: { listen: 127.0.0.1:${metricsPort}, defaultMetrics: false }`), '--workers', '2']);
    const url = `http://127.0.0.1:${port}`;
    await waitFor(async () => childrenOf(r.child.pid!).length === 2 && (await request(`${url}/healthz`, { timeoutMs: 500 }).catch(() => undefined))?.status === 200, {
      timeoutMs: 20_000,
      label: 'two workers',
      describe: r.output,
    });
    await waitFor(async () => (r.output().match(/registry-redirect listening/g) ?? []).length === 2, { timeoutMs: 10_000, label: 'both workers listening', describe: r.output });

    for (let i = 0; i < 6; i++) {
      const res = await request(`${url}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: BASIC } });
      expect(res.status).toBe(307);
    }
    const metrics = (await request(`http://127.0.0.1:${metricsPort}/metrics`)).body.toString();
    expect(metrics).toContain('registry_redirect_decisions_total{action="redirect",signer="default",reason="default"} 6');
    expect(metrics).toContain('registry_redirect_signer_healthy{signer="default"} 1');
    // Both workers answered some of them (round-robin).
    // Access lines are written within 20 ms of the response.
    const workersSeen = () => new Set([...r.output().matchAll(/"worker":(\d+),"req"/g)].map((m) => m[1])).size;
    await waitFor(async () => workersSeen() === 2, { timeoutMs: 5_000, label: 'access lines of both workers', describe: r.output });

    r.child.kill('SIGHUP');
    await waitFor(async () => (r.output().match(/config reloaded/g) ?? []).length === 2, { timeoutMs: 10_000, label: 'both workers reloaded', describe: r.output });

    const [victim] = childrenOf(r.child.pid!);
    process.kill(victim!, 'SIGKILL');
    await waitFor(async () => r.output().includes('worker died; starting another') && childrenOf(r.child.pid!).filter((p) => p !== victim).length === 2, {
      timeoutMs: 15_000,
      label: 'a replacement worker',
      describe: r.output,
    });
    await waitFor(async () => (await request(`${url}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: BASIC } })).status === 307, { timeoutMs: 10_000, label: 'serving after the restart' });

    const workers = childrenOf(r.child.pid!);
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
    for (const pid of workers) expect(() => process.kill(pid, 0)).toThrow();
  }, 60_000);

  it('refuses metrics on the main port with --workers, naming metrics.listen', async () => {
    const port = await freePort();
    const r = run(['serve', '--config', configFile(port, upstream.url, 'metrics: { path: /metrics }'), '--workers', '2']);
    expect(await r.exited).toBe(1);
    expect(r.output()).toContain('metrics.listen: with --workers');
  });

  it('refuses a --workers value that is not a number of processes (a usage error: exit 2)', async () => {
    const port = await freePort();
    const r = run(['serve', '--config', configFile(port, upstream.url, ''), '--workers', 'many']);
    expect(await r.exited).toBe(2);
    expect(r.output()).toContain('--workers: "many" is not a number of processes');
    expect(r.output()).toContain('Usage: registry-redirect serve --config FILE.yaml [--workers N]');
  });

  it('a worker that cannot start stops the server with exit 1 instead of restarting forever', async () => {
    const port = await freePort();
    const blocker = run(['serve', '--config', configFile(port, upstream.url, '')]);
    await waitFor(async () => (await request(`http://127.0.0.1:${port}/healthz`, { timeoutMs: 500 }).catch(() => undefined))?.status === 200, { timeoutMs: 15_000, label: 'blocker' });
    // Same port, another process already listening: the workers' listen fails.
    const r = run(['serve', '--config', configFile(port, upstream.url, '# same port'), '--workers', '2']);
    expect(await r.exited).toBe(1);
    expect(r.output()).toContain('worker failed to start');
    blocker.child.kill('SIGTERM');
    await blocker.exited;
  }, 30_000);
});
