import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { request, waitFor } from '../support/http.js';
import { freePort } from '../support/ports.js';

const CLI = new URL('../../dist/server/cli.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'rr-origin-workers-'));
const children: ChildProcess[] = [];
const BLOB = Buffer.from('hello origin workers '.repeat(1000));
const DIGEST = digestOf(BLOB);
const HEX = DIGEST.slice(7);

let upstream: FakeUpstream;
beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
  mkdirSync(join(dir, 'root/docker/registry/v2/blobs/sha256', HEX.slice(0, 2), HEX), { recursive: true });
  writeFileSync(join(dir, 'root/docker/registry/v2/blobs/sha256', HEX.slice(0, 2), HEX, 'data'), BLOB);
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await upstream.close();
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(process.platform !== 'linux')('origin mode in serve --workers N', () => {
  it('both workers serve the origin listener; metrics sum its counts; SIGHUP with a new key re-signs and the old URLs stop working', async () => {
    const [port, originPort, metricsPort] = await Promise.all([freePort(), freePort('127.0.0.2'), freePort()]);
    const file = join(dir, 'proxy.yaml');
    const write = (key: string) =>
      writeFileSync(
        file,
        [
          `listen: 127.0.0.1:${port}`,
          `upstream: ${upstream.url}`,
          'signer:',
          '  origin:',
          `    root: ${join(dir, 'root')}`,
          `    key: ${key}`,
          `    listen: 127.0.0.2:${originPort}`,
          `metrics: { listen: 127.0.0.1:${metricsPort}, defaultMetrics: false }`,
          'reload: { watch: false }',
          '',
        ].join('\n'),
      );
    write('first-key-0123456789abcdef');
    const child = spawn(process.execPath, [CLI, 'serve', '--config', file, '--workers', '2'], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await waitFor(async () => (out.match(/registry-redirect listening/g) ?? []).length === 2, { timeoutMs: 20_000, label: 'both workers listening', describe: () => out });
    expect(out).toContain(`"origin":["http://127.0.0.2:${originPort}"]`);

    const locate = async () => {
      const res = await request(`http://127.0.0.1:${port}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: BASIC } });
      expect(res.status).toBe(307);
      return res.headers.location!;
    };
    const first = await locate();
    expect(first.startsWith(`http://127.0.0.2:${originPort}/docker/registry/v2/blobs/sha256/`)).toBe(true);
    for (let i = 0; i < 6; i++) {
      const res = await request(first);
      expect(res.status).toBe(200);
      expect(res.body.equals(BLOB)).toBe(true);
    }
    // Access lines are written within 20 ms of the response.
    const workersSeen = () => new Set([...out.matchAll(/"worker":(\d+),"req":\{[^}]*"path":"\/docker\//g)].map((m) => m[1])).size;
    await waitFor(async () => workersSeen() === 2, { timeoutMs: 5_000, label: 'access lines of both workers', describe: () => out });
    const metrics = (await request(`http://127.0.0.1:${metricsPort}/metrics`)).body.toString();
    expect(metrics).toContain('registry_redirect_origin_responses_total{status="200"} 6');
    expect(metrics).toContain(`registry_redirect_origin_bytes_total ${6 * BLOB.length}`);

    write('second-key-0123456789abcdef');
    child.kill('SIGHUP');
    await waitFor(async () => (out.match(/config reloaded/g) ?? []).length === 2, { timeoutMs: 10_000, label: 'both workers reloaded', describe: () => out });
    const second = await locate();
    expect(second).not.toBe(first);
    for (let i = 0; i < 4; i++) {
      expect((await request(second)).status).toBe(200);
      expect((await request(first)).status).toBe(403);
    }

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 60_000);
});
