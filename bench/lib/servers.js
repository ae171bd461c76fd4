// Starting the processes under test: the real CLI (`registry-redirect serve`) and the fixtures.
import { Buffer } from 'node:buffer';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI, sampleLocation } from './lib.js';
import { childPids, freePort, httpRequest, start, waitForHttp } from './procs.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/servers.js', import.meta.url));
let location;

/** Starts a fixture server (see fixtures/servers.js) on a free port; resolves once it answers. */
export async function startFixture(kind, { upstream } = {}) {
  location ??= sampleLocation();
  const port = await freePort();
  const proc = start(process.execPath, [FIXTURES, kind, String(port), ...(upstream ? [upstream] : [])], {
    env: { ...process.env, RR_BENCH_LOCATION: location },
    label: `fixture ${kind}`,
  });
  const origin = `http://127.0.0.1:${port}`;
  await waitForHttp(`${origin}/v2/`, { proc });
  return { proc, origin, pids: () => [proc.pid] };
}

let workersFlag;
/** True when this build's CLI has `serve --workers N`. */
export function cliHasWorkers() {
  workersFlag ??= execFileSync(process.execPath, [CLI, 'serve', '--help'], { encoding: 'utf8' }).includes('--workers');
  return workersFlag;
}

/**
 * Runs the real CLI, `node dist/server/cli.js serve --config FILE [--workers N]`, with `config`
 * (an object, written as JSON, which is YAML) plus `listen` on a free port. Its stdout (the JSON
 * logs) goes to /dev/null: under load a pipe to the bench would cost the bench CPU per line.
 */
export async function startServe(config, { dir, name = 'serve', workers, env } = {}) {
  const port = await freePort();
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, JSON.stringify({ listen: `127.0.0.1:${port}`, reload: { watch: false }, ...config }, null, 2));
  const args = [CLI, 'serve', '--config', file, ...(workers ? ['--workers', String(workers)] : [])];
  const proc = start(process.execPath, args, { quiet: true, label: name, env: env ? { ...process.env, ...env } : process.env });
  const origin = `http://127.0.0.1:${port}`;
  await waitForHttp(`${origin}/healthz`, { proc, ok: (s) => s === 200 });
  let workerPids = [];
  if (workers) {
    // Wait until every worker is up (each has answered at least one health check is not
    // observable from outside; the forked children are).
    const deadline = Date.now() + 10_000;
    while ((workerPids = childPids(proc.pid)).length < workers && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  }
  return { proc, origin, port, file, pids: () => [proc.pid, ...(workers ? childPids(proc.pid) : workerPids)] };
}

/**
 * What a registry client sends on a blob GET after the token dance: a bearer token the size of a
 * typical registry JWT (~700 bytes). The proxy hashes it into its decision-cache key; the
 * baselines ignore it; every variant receives the same bytes.
 */
export const CLIENT_HEADERS = {
  Authorization: `Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImJlbmNoIn0.${Buffer.from(JSON.stringify({ iss: 'bench-issuer', sub: 'bench-user', aud: 'bench-registry', exp: 4102444800, nbf: 1700000000, iat: 1700000000, jti: 'x'.repeat(32), access: [{ type: 'repository', name: 'bench/app', actions: ['pull'] }] })).toString('base64url')}.${'s'.repeat(342)}`,
};

/** Asserts `origin + path` answers a 307 with a Location (fail fast instead of benchmarking errors). */
export async function expectRedirect(origin, path, headers = {}) {
  const res = await httpRequest(origin + path, { headers });
  if (res.status !== 307 || !res.headers.location) {
    throw new Error(`${origin}${path}: expected a 307 with a Location, got ${res.status} ${res.body.toString('utf8').slice(0, 200)}`);
  }
  return res;
}
