import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AZURITE_KEY, azureProxyYaml } from '../helpers/constants.js';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { request, waitFor } from '../support/http.js';
import { freePort } from '../support/ports.js';
import { CONFIG_DOCS } from '../../src/server/docs-links.js';
import { logFormat } from '../../src/server/logger.js';

const CLI = new URL('../../dist/server/cli.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'rr-cli-'));

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

const running: Run[] = [];

function run(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const r = { child, stdout: () => out, stderr: () => err, exited };
  running.push(r);
  return r;
}

function config(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

const proxyConfig = (port: number, upstream: string, extra = ''): string => azureProxyYaml({ listen: `127.0.0.1:${port}`, upstream, extra });

async function startServe(upstream: string, extra = '', logLevel = 'info') {
  const port = await freePort();
  const file = config(`proxy-${port}.yaml`, proxyConfig(port, upstream, `${extra}\nlog:\n  level: ${logLevel}\n`));
  const r = run(['serve', '--config', file], { AZURE_STORAGE_KEY: AZURITE_KEY });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await request(`${url}/healthz`, { timeoutMs: 500 }).catch(() => undefined))?.status === 200, {
    timeoutMs: 15_000,
    label: 'serve /healthz',
    describe: () => r.stderr() + r.stdout(),
  });
  return { ...r, url };
}

let upstream: FakeUpstream;
const BLOB = Buffer.from('hello blob');
const DIGEST = digestOf(BLOB);

beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
});
afterEach(() => upstream.override(undefined));
afterAll(async () => {
  for (const r of running) if (r.child.exitCode === null) r.child.kill('SIGKILL');
  await upstream.close();
});

describe('registry-redirect CLI', () => {
  it('--version prints the package version; --help exits 0; unknown command exits 2', async () => {
    const v = run(['--version']);
    expect(await v.exited).toBe(0);
    expect(v.stdout().trim()).toMatch(/^\d+\.\d+\.\d+/);
    const h = run(['--help']);
    expect(await h.exited).toBe(0);
    expect(h.stdout()).toContain('registry-redirect serve --config FILE.yaml');
    const u = run(['frobnicate']);
    expect(await u.exited).toBe(2);
    expect(u.stderr()).toContain('unknown command "frobnicate"');
  });

  it('a bad config fails at start, naming the key and the fix (exit 1, nothing listening)', async () => {
    const file = config('bad.yaml', proxyConfig(1, 'http://127.0.0.1:5000').replace('accountKey', 'acountKey'));
    const r = run(['serve', '--config', file], { AZURE_STORAGE_KEY: AZURITE_KEY });
    expect(await r.exited).toBe(1);
    expect(r.stderr()).toContain('signer.azure.acountKey: unknown key; did you mean "accountKey"?');
  });

  it('a missing environment variable names the key', async () => {
    const file = config('noenv.yaml', proxyConfig(1, 'http://127.0.0.1:5000'));
    const r = run(['serve', '--config', file]);
    expect(await r.exited).toBe(1);
    expect(r.stderr()).toContain('signer.azure.accountKey: environment variable AZURE_STORAGE_KEY is not set');
  });

  it('serve without --config explains what to pass and where the config is documented', async () => {
    const r = run(['serve']);
    expect(await r.exited).toBe(2);
    expect(r.stderr()).toContain('--config FILE.yaml is required');
    expect(r.stderr()).toContain('Usage: registry-redirect serve --config FILE.yaml [--workers N]');
    expect(r.stderr()).toContain(`Configuration: ${CONFIG_DOCS}`);
  });

  it.each([
    [['serve', '--config'], /Option '-c, --config <value>' argument missing/],
    [['serve', '--config', 'x.yaml', '--workers'], /Option '-w, --workers <value>' argument missing/],
    [['serve', '--config', 'x.yaml', '--workers', 'lots'], /--workers: "lots" is not a number of processes/],
    [['serve', '--config', 'x.yaml', '--frobnicate'], /Unknown option '--frobnicate'/],
  ])('usage error %j exits 2 with the usage text', async (args, message) => {
    const r = run(args);
    expect(await r.exited).toBe(2);
    expect(r.stderr()).toMatch(message);
    expect(r.stderr()).toContain('Usage: registry-redirect serve --config FILE.yaml');
  });

  it('log.format: json writes one JSON object per line; pretty writes pino-pretty lines; the startup line names config, listen, upstream, signers, auth', async () => {
    const lines = async (format: string) => {
      const port = await freePort();
      const file = config(`format-${format}.yaml`, proxyConfig(port, upstream.url, `preflight: off\nlog:\n  format: ${format}\n`));
      const r = run(['serve', '--config', file], { AZURE_STORAGE_KEY: AZURITE_KEY });
      await waitFor(async () => r.stdout().includes('registry-redirect listening'), { timeoutMs: 15_000, label: 'startup line', describe: () => r.stderr() + r.stdout() });
      r.child.kill('SIGTERM');
      expect(await r.exited).toBe(0);
      return { file, port, lines: r.stdout().split('\n').filter(Boolean) };
    };
    const json = await lines('json');
    const startup = json.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'registry-redirect listening');
    expect(startup).toMatchObject({
      level: 30,
      config: json.file,
      listen: `http://127.0.0.1:${json.port}`,
      upstream: `${upstream.url}/`,
      authorize: 'upstream',
      signers: { signer: { kind: 'azure', storage: 'http://127.0.0.2:10000/devstoreaccount1/registry' } },
    });
    const pretty = await lines('pretty');
    expect(pretty.lines.find((l) => l.includes('registry-redirect listening'))).toMatch(/^\[\d{2}:\d{2}:\d{2}\.\d{3}\] INFO: registry-redirect listening .*"storage":"http:\/\/127\.0\.0\.2:10000\/devstoreaccount1\/registry"/);
    expect(() => JSON.parse(pretty.lines[0]!)).toThrow();
  });

  it('without log.format: JSON when stdout is not a terminal, pretty on one', () => {
    expect(logFormat({ level: 'info', requests: true }, { isTTY: false })).toBe('json');
    expect(logFormat({ level: 'info', requests: true }, { isTTY: true })).toBe('pretty');
    expect(logFormat({ level: 'info', requests: true, format: 'json' }, { isTTY: true })).toBe('json');
  });

  it('/healthz answers 200 without touching the upstream (upstream down)', async () => {
    const s = await startServe('http://127.0.0.1:1');
    const res = await request(`${s.url}/healthz`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toEqual({ status: 'ok' });
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  it('redirects through the real binary and never logs credentials or signatures', async () => {
    const s = await startServe(upstream.url, '', 'debug');
    const res = await request(`${s.url}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: BASIC, Cookie: 'session=COOKIESECRET' } });
    expect(res.status).toBe(307);
    const sig = new URL(res.headers.location!).searchParams.get('sig')!;
    // A failing path too: signer fine, upstream 401 for a wrong password.
    await request(`${s.url}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: 'Basic d3Jvbmc6V1JPTkdQQVNT' } });
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    const logs = s.stdout() + s.stderr();
    expect(logs).toContain('"msg":"redirected"');
    for (const secret of [BASIC.slice(6), 'd3Jvbmc6V1JPTkdQQVNT', 'COOKIESECRET', sig, encodeURIComponent(sig), AZURITE_KEY]) {
      expect(logs).not.toContain(secret);
    }
  });

  it('SIGTERM: stops accepting, lets the in-flight request finish, exits 0', async () => {
    upstream.override((req, res) => {
      if (!req.url?.includes('/manifests/slow')) return false;
      setTimeout(() => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"slow":true}');
      }, 800);
      return true;
    });
    const s = await startServe(upstream.url, 'timeouts:\n  shutdown: 10s');
    const inflight = request(`${s.url}/v2/team/app/manifests/slow`, { headers: { Authorization: BASIC } });
    await new Promise((r) => setTimeout(r, 200));
    s.child.kill('SIGTERM');
    const res = await inflight;
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('{"slow":true}');
    expect(await s.exited).toBe(0);
    await expect(request(`${s.url}/healthz`, { timeoutMs: 1_000 })).rejects.toThrow();
  });

  it('SIGTERM loses no access-log line: every answered request, and the one in flight, is on stdout', async () => {
    upstream.override((req, res) => {
      if (!req.url?.includes('/manifests/slow')) return false;
      setTimeout(() => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"slow":true}');
      }, 500);
      return true;
    });
    const s = await startServe(upstream.url, 'timeouts:\n  shutdown: 10s');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
    const path = `/v2/team/app/blobs/${DIGEST}`;
    const burst = 400;
    const inflight = request(`${s.url}/v2/team/app/manifests/slow`, { headers: { Authorization: BASIC } });
    // Lines are written at most 20 ms after their response: the signal lands right after a burst,
    // while the last of them are still waiting to be written.
    const answers = await Promise.all(Array.from({ length: burst }, (_, i) => request(`${s.url}${path}`, { headers: { Authorization: BASIC, 'X-Request-Id': `burst-${i}` }, agent })));
    s.child.kill('SIGTERM');
    agent.destroy();
    expect(answers.every((r) => r.status === 307)).toBe(true);
    expect((await inflight).status).toBe(200);
    expect(await s.exited).toBe(0);
    const lines = s
      .stdout()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { msg?: string; req?: { id?: string; path?: string } });
    const ids = new Set(lines.filter((l) => l.msg === 'request completed' && l.req?.path === path).map((l) => l.req?.id));
    expect(ids.size).toBe(burst);
    for (let i = 0; i < burst; i++) expect(ids.has(`burst-${i}`)).toBe(true);
    expect(lines.some((l) => l.msg === 'request completed' && l.req?.path === '/v2/team/app/manifests/slow')).toBe(true);
  });

  it('SIGTERM with a request that outlives timeouts.shutdown: exits anyway (bounded)', async () => {
    upstream.override((req) => req.url?.includes('/manifests/forever') ?? false);
    const s = await startServe(upstream.url, 'timeouts:\n  shutdown: 500ms');
    const inflight = request(`${s.url}/v2/team/app/manifests/forever`, { headers: { Authorization: BASIC }, timeoutMs: 10_000 }).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await inflight).toBeInstanceOf(Error);
  });
});
