// `serve` runs with a capped V8 young generation without any flag from the user (it re-execs
// itself: same pid, clean stderr, signals still stop it), and leaves a user's own value alone.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AZURITE_KEY, azureProxyYaml } from '../helpers/constants.js';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { childrenOf } from '../support/child.js';
import { request, waitFor } from '../support/http.js';
import { freePort } from '../support/ports.js';
import { OLD_SPACE_MIB, SEMI_SPACE_MIB } from '../../src/server/semi-space.js';

const CLI = new URL('../../dist/server/cli.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'rr-semi-'));
const children: ChildProcess[] = [];
/** The old-space flag is added only where Node's own heap limit is larger (it is on hosts with 4+ GiB). */
const nodeHeapLimitMiB = Number(execFileSync(process.execPath, ['-p', 'require("node:v8").getHeapStatistics().heap_size_limit / 2 ** 20'], { env: { ...process.env, NODE_OPTIONS: '' }, encoding: 'utf8' }));
const OLD = nodeHeapLimitMiB > OLD_SPACE_MIB + 3 * SEMI_SPACE_MIB ? [`--max-old-space-size=${OLD_SPACE_MIB}`] : [];
const FLAGS = [`--max-semi-space-size=${SEMI_SPACE_MIB}`, ...OLD];

let upstream: FakeUpstream;
beforeAll(async () => {
  upstream = await startFakeUpstream();
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await upstream.close();
});

/** The running process's command line as the kernel has it (after any exec). */
const cmdline = (pid: number): string[] => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
/** Node's own options: what stands between the node binary and the script. */
const nodeFlags = (pid: number): string[] => {
  const argv = cmdline(pid);
  return argv.slice(1, argv.indexOf(CLI));
};


async function serve(opts: { nodeArgs?: string[]; env?: NodeJS.ProcessEnv; workers?: number; extra?: string } = {}) {
  const port = await freePort();
  const metricsPort = await freePort();
  const file = join(dir, `proxy-${port}.yaml`);
  const metrics = opts.workers ? `metrics: { listen: 127.0.0.1:${metricsPort}, defaultMetrics: false }\n` : '';
  writeFileSync(file, azureProxyYaml({ listen: `127.0.0.1:${port}`, upstream: upstream.url, extra: `preflight: off\nreload: { watch: false }\n${metrics}${opts.extra ?? ''}` }));
  const args = [...(opts.nodeArgs ?? []), CLI, 'serve', '--config', file, ...(opts.workers ? ['--workers', String(opts.workers)] : [])];
  const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH, AZURE_STORAGE_KEY: AZURITE_KEY, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => (opts.workers ? childrenOf(child.pid!).length === opts.workers : true) && (await request(`${url}/healthz`, { timeoutMs: 500 }).catch(() => undefined))?.status === 200,
    { timeoutMs: 20_000, label: 'serve /healthz', describe: () => err + out },
  );
  return { child, pid: child.pid!, url, exited, stdout: () => out, stderr: () => err };
}

/** `unshare` can give serve a PID namespace of its own (root on Linux), as Docker does. */
function canUnshare(): boolean {
  try {
    execFileSync('unshare', ['-fp', '--mount-proc', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(process.platform !== 'linux')('serve: V8 young-generation cap', () => {
  it('runs with the flag in the same process (same pid), prints no warning, and SIGTERM still stops it gracefully', async () => {
    const s = await serve();
    expect(nodeFlags(s.pid)).toEqual(FLAGS);
    expect(cmdline(s.pid).slice(-3)).toEqual(['serve', '--config', expect.stringMatching(/proxy-\d+\.yaml$/)]);
    // The re-exec'd process is the one serving: its log line names the listener.
    await waitFor(async () => s.stdout().includes('registry-redirect listening'), { timeoutMs: 10_000, label: 'listening line', describe: s.stdout });
    s.child.kill('SIGTERM');
    expect(await s.exited).toEqual({ code: 0, signal: null });
    expect(s.stdout()).toContain('"signal":"SIGTERM"');
    expect(s.stderr()).toBe('');
  });

  it('SIGINT right after start, before the server listens, still ends the process', async () => {
    const port = await freePort();
    const file = join(dir, `early-${port}.yaml`);
    writeFileSync(file, azureProxyYaml({ listen: `127.0.0.1:${port}`, upstream: upstream.url, extra: 'preflight: off\nreload: { watch: false }\n' }));
    const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { env: { PATH: process.env.PATH, AZURE_STORAGE_KEY: AZURITE_KEY }, stdio: 'ignore' });
    children.push(child);
    const exited = new Promise<unknown>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
    await new Promise((r) => setTimeout(r, 30));
    child.kill('SIGINT');
    const how = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
    expect(['SIGINT', 0]).toContain(how);
  });

  it("leaves the user's own values alone: NODE_OPTIONS (no re-exec) or node's command line", async () => {
    const both = await serve({ env: { NODE_OPTIONS: '--max-semi-space-size=8 --max-old-space-size=2048' } });
    expect(nodeFlags(both.pid)).toEqual([]);
    const viaEnv = await serve({ env: { NODE_OPTIONS: '--max-semi-space-size=8' } });
    expect(nodeFlags(viaEnv.pid)).toEqual(OLD);
    expect(readFileSync(`/proc/${viaEnv.pid}/environ`, 'utf8').split('\0')).toContain('NODE_OPTIONS=--max-semi-space-size=8');
    const viaArgs = await serve({ nodeArgs: ['--max-semi-space-size=4'] });
    expect(nodeFlags(viaArgs.pid)).toEqual([...OLD, '--max-semi-space-size=4']);
    for (const s of [both, viaEnv, viaArgs]) {
      s.child.kill('SIGTERM');
      expect((await s.exited).code).toBe(0);
    }
  });

  it('--workers 2: the primary re-execs once and every worker inherits the flag; SIGTERM stops all', async () => {
    const s = await serve({ workers: 2 });
    expect(nodeFlags(s.pid)).toEqual(FLAGS);
    const workers = childrenOf(s.pid);
    expect(workers).toHaveLength(2);
    for (const w of workers) expect(nodeFlags(w)).toEqual(FLAGS);
    for (let i = 0; i < 4; i++) expect((await request(`${s.url}/healthz`)).status).toBe(200);
    s.child.kill('SIGTERM');
    expect((await s.exited).code).toBe(0);
    for (const w of workers) expect(() => readFileSync(`/proc/${w}/stat`)).toThrow();
    expect(s.stderr()).toBe('');
  });

  it.skipIf(!canUnshare())('as PID 1 of its own PID namespace (the Docker image): re-execs as PID 1, SIGTERM drains and exits 0', async () => {
    const port = await freePort();
    const file = join(dir, `pid1-${port}.yaml`);
    writeFileSync(file, azureProxyYaml({ listen: `127.0.0.1:${port}`, upstream: upstream.url, extra: 'preflight: off\nreload: { watch: false }\n' }));
    const wrapper = spawn('unshare', ['-fp', '--mount-proc', process.execPath, CLI, 'serve', '--config', file], { env: { PATH: process.env.PATH, AZURE_STORAGE_KEY: AZURITE_KEY }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(wrapper);
    let out = '';
    wrapper.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    wrapper.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => wrapper.on('exit', (code) => resolve(code)));
    await waitFor(async () => (await request(`http://127.0.0.1:${port}/healthz`, { timeoutMs: 500 }).catch(() => undefined))?.status === 200, { timeoutMs: 20_000, label: 'serve as PID 1', describe: () => out });
    const [pid] = childrenOf(wrapper.pid!);
    expect(readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(/^NSpid:\s+\d+\s+1$/m);
    expect(nodeFlags(pid!)).toEqual(FLAGS);
    process.kill(pid!, 'SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toContain('"signal":"SIGTERM"');
  });
});
