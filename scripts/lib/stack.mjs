/**
 * The parts of a local stack that `npm start` (scripts/start.mjs) and `npm run demo`
 * (scripts/demo.mjs) both run: finding binaries and free ports, child processes whose output is
 * kept for error messages, distribution on a filesystem, the Node example registry's listener, a
 * temp dir, and the cleanups that stop all of it in reverse order.
 */
/* global fetch */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clearTimeout, setTimeout } from 'node:timers';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const say = (text = '') => process.stdout.write(`${text}\n`);

/** dist/ is what `registry-redirect serve` runs; `command` is the npm script that builds it first. */
export function requireDist(command) {
  if (!existsSync(join(ROOT, 'dist', 'server', 'server.js'))) throw new Error(`dist/ is missing: run \`${command}\` (it builds first) or \`npm run build\``);
}

export function findBinary(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      if (statSync(path).isFile()) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function freePort(host) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function waitFor(label, probe, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await probe()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${label} did not come up within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * What one script started, and how to stop it. `name` prefixes its messages; `detached` puts each
 * child in its own process group, so a Ctrl-C on the terminal reaches only the script, which then
 * stops the children in order; `killAfterMs` is how long a child gets after SIGTERM before SIGKILL.
 */
export function createStack({ name, detached = false, killAfterMs }) {
  /** Run in reverse order on the way out, whatever the way out is. */
  const cleanups = [];
  /** Children still running; killed when this process exits, even on a path that skips the cleanups. */
  const children = new Set();
  let stopping = false;
  process.once('exit', () => {
    for (const child of children) child.kill('SIGKILL');
  });

  /** Starts a child process; its output is kept and shown only when something fails. */
  function startChild(cmd, args, options) {
    // Once the cleanups run, a child started now might outlive them.
    if (stopping) throw new Error('stopping');
    const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'], detached });
    children.add(child);
    child.once('exit', () => children.delete(child));
    let output = '';
    const keep = (chunk) => {
      output = (output + chunk.toString('utf8')).slice(-16_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    cleanups.push(async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      await exited;
      clearTimeout(timer);
    });
    return { child, output: () => output, exited };
  }

  /** A fresh temp dir under the OS's, removed by the cleanups. */
  async function tempDir(prefix) {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  /** Runs every cleanup, last added first; one that fails is reported and the rest still run. */
  async function stop() {
    stopping = true;
    while (cleanups.length > 0) {
      const cleanup = cleanups.pop();
      try {
        await cleanup();
      } catch (err) {
        say(`${name}: cleanup failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  /** For a second Ctrl-C: no waiting on anyone. */
  function killAll() {
    for (const child of children) child.kill('SIGKILL');
  }

  return { onStop: (cleanup) => cleanups.push(cleanup), startChild, tempDir, stop, killAll };
}

/** distribution (`docker-registry` at `bin`) on 127.0.0.1, blobs under `storage`, its config in `work`. */
export async function startDistribution(stack, bin, work, storage) {
  const port = await freePort('127.0.0.1');
  const config = join(work, 'registry.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log: { level: error, accesslog: { disabled: true } }',
      `storage: { filesystem: { rootdirectory: ${JSON.stringify(storage)} }, delete: { enabled: true }, redirect: { disable: true } }`,
      `http: { addr: "127.0.0.1:${port}", secret: "${randomBytes(16).toString('hex')}" }`,
      '',
    ].join('\n'),
  );
  const env = { ...process.env };
  delete env.AWS_CA_BUNDLE; // distribution's s3 driver panics at start when it is set
  const registry = stack.startChild(bin, ['serve', config], { env, cwd: work });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('docker-registry', async () => {
    if (registry.child.exitCode !== null) throw new Error(`docker-registry exited:\n${registry.output()}`);
    return (await fetch(`${url}/v2/`)).status === 200;
  });
  return url;
}

/** Serves a registry of examples/express-node-registry on 127.0.0.1 in this process; returns its URL. */
export async function serveNodeRegistry(stack, registry) {
  const server = await new Promise((resolve) => {
    const s = registry.app.listen(0, '127.0.0.1', () => resolve(s));
  });
  stack.onStop(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await registry.close();
  });
  return `http://127.0.0.1:${server.address().port}`;
}
