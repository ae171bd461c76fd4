import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/package.js';
import { requireBinary } from '../support/binaries.js';
import { waitFor } from '../support/http.js';
import { makeOciImage } from '../support/oci-image.js';
import { freePort } from '../support/ports.js';
import { skopeoPull, skopeoPush, verifyPulledDir } from '../support/skopeo.js';

const START = join(ROOT, 'scripts/start.mjs');
const hasSkopeo = requireBinary('skopeo');

/** Pids whose parent is `pid` (from /proc), i.e. the children `npm start` launched. */
async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) out.push(Number(entry));
  }
  return out;
}

/**
 * `npm start` is `npm run build && node scripts/start.mjs`: the script is run here against the
 * dist/ that `npm test` built, from a state where nothing exists yet (fresh temp dirs, free ports).
 */
async function smoke(env: NodeJS.ProcessEnv, expectUpstream: RegExp): Promise<void> {
  const [port, originPort] = await Promise.all([freePort('127.0.0.1'), freePort('127.0.0.2')]);
  const child = spawn(process.execPath, [START], { cwd: ROOT, env: { ...env, LISTEN: `127.0.0.1:${port}`, ORIGIN_LISTEN: `127.0.0.2:${originPort}` }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const work = await mkdtemp(join(tmpdir(), 'rr-start-test-'));
  try {
    await waitFor(async () => output.includes('Ctrl-C stops everything'), { timeoutMs: 30_000, label: 'npm start', describe: () => output, giveUp: () => (child.exitCode !== null ? 'exited' : undefined) });
    expect(output).toMatch(expectUpstream);
    expect(output).toMatch(new RegExp(`skopeo copy --dest-tls-verify=false \\S+ docker://127\\.0\\.0\\.1:${port}/`));
    expect(output).toMatch(/podman push/);
    expect(output).toMatch(/docker push/);
    expect(output).toMatch(/crane copy/);
    const state = /state in (\S+), removed on exit/.exec(output)?.[1];
    expect(state && existsSync(state)).toBe(true);

    const image = await makeOciImage(join(work, 'img'), { layers: [{ size: 400_000, seed: `start-${port}` }] });
    const push = await skopeoPush(image, `docker://127.0.0.1:${port}/demo/hello:v1`);
    expect(push.code, push.stderr).toBe(0);
    const pull = await skopeoPull(`docker://127.0.0.1:${port}/demo/hello:v1`, join(work, 'pulled'));
    expect(pull.code, pull.stderr).toBe(0);
    expect((await verifyPulledDir(join(work, 'pulled'), image)).problems).toEqual([]);
    expect(output).toMatch(new RegExp(`proxy  GET /v2/demo/hello/blobs/sha256:[0-9a-f]{12}… 307 -> http://127\\.0\\.0\\.2:${originPort}/docker/registry/v2/blobs/sha256/`));
    expect(output).toMatch(/origin GET \/docker\/registry\/v2\/blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{12}…\/data 200/);

    const kids = await childrenOf(child.pid!);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(output.trimEnd().endsWith('stopped everything.')).toBe(true);
    for (const pid of kids) expect(existsSync(`/proc/${pid}`), `child ${pid} still running`).toBe(false);
    expect(existsSync(state!)).toBe(false);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await rm(work, { recursive: true, force: true });
  }
}

describe.skipIf(!hasSkopeo)('npm start on a fresh machine', () => {
  it.skipIf(!requireBinary('docker-registry'))('with docker-registry: distribution on disk, the proxy in origin mode; skopeo push + pull; Ctrl-C stops every child and removes its state', async () => {
    await smoke({ ...process.env }, /upstream registry: distribution/);
  }, 90_000);

  it('without docker-registry: the Node example registry on disk, the same stack', async () => {
    // PATH holds only the Node binary's directory: no docker-registry for the script to find.
    await smoke({ PATH: dirname(process.execPath), HOME: process.env.HOME }, /upstream registry: the Node registry of examples\/express-node-registry/);
  }, 90_000);
});
