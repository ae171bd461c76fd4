// Load generation: wrk when installed (C, far cheaper per request than any Node client, which
// matters when client and server share two cores), autocannon otherwise. Every run is bounded in
// duration and connections, and records the server processes' CPU time from /proc.
import { execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { clearTimeout, setTimeout } from 'node:timers';
import autocannon from 'autocannon';
import { cpuOf } from './procs.js';

let wrkPath;
/** Path of wrk, or undefined when it is not installed. */
export function findWrk() {
  if (wrkPath !== undefined) return wrkPath || undefined;
  try {
    wrkPath = execFileSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).trim();
  } catch {
    wrkPath = '';
  }
  return wrkPath || undefined;
}

export function wrkVersion() {
  const bin = findWrk();
  if (!bin) return undefined;
  try {
    execFileSync(bin, ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    // wrk -v prints its version and exits 1.
    return String(err.stdout || err.stderr || '').split('\n')[0].trim();
  }
  return 'wrk';
}

let scratch;
/** Removes the Lua scripts written for wrk (also done at exit). */
export function removeScratch() {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  scratch = undefined;
}
process.once('exit', removeScratch);

function toMs(text) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!m) return Number.NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1_000 : m[2] === 'ms' ? v : m[2] === 's' ? v * 1_000 : v * 60_000;
}

/** Parses wrk's report (with --latency). */
export function parseWrk(text) {
  const num = (re) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : 0;
  };
  const pct = (p) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+(?:us|ms|s|m))$`, 'm').exec(text);
    return m ? toMs(m[1]) : Number.NaN;
  };
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(text);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return {
    requests: total ? Number(total[1]) : 0,
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50Ms: pct(50),
    p99Ms: pct(99),
    bad: num(/Non-2xx or 3xx responses: (\d+)/),
    errors: socket ? Number(socket[1]) + Number(socket[2]) + Number(socket[3]) + Number(socket[4]) : 0,
  };
}

/** A wrk Lua script cycling through `paths`, or generating them with a Lua `gen` body. */
function luaScript({ paths, lua }) {
  scratch ??= mkdtempSync(join(tmpdir(), 'rr-bench-lua-'));
  const file = join(scratch, `s${Math.random().toString(36).slice(2)}.lua`);
  if (lua) writeFileSync(file, lua);
  else writeFileSync(file, `local paths = { ${paths.map((p) => JSON.stringify(p)).join(', ')} }\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(nil, paths[i])\nend\n`);
  return file;
}

function runWrk({ origin, paths, lua, connections, seconds, headers = {} }) {
  const bin = findWrk();
  const args = ['-t1', `-c${connections}`, `-d${Math.max(1, Math.round(seconds))}s`, '--latency', '--timeout', '5s'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  if (lua || paths.length > 1) args.push('-s', luaScript({ paths, lua }));
  args.push(origin + paths[0]);
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    // Bounded even if wrk hangs: duration + 15 s, then SIGKILL.
    const timer = setTimeout(() => child.kill('SIGKILL'), (seconds + 15) * 1_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`wrk exited ${code}: ${out}`));
      else resolve({ tool: 'wrk', ...parseWrk(out) });
    });
  });
}

async function runAutocannon({ origin, paths, nextPath, connections, seconds, headers = {} }) {
  let i = 0;
  const request = nextPath
    ? { setupRequest: (req) => ({ ...req, path: nextPath() }) }
    : { setupRequest: (req) => ({ ...req, path: paths[i++ % paths.length] }) };
  const r = await autocannon({ url: origin, connections, duration: Math.max(1, Math.round(seconds)), timeout: 5, headers, requests: [request] });
  const ok = (r['2xx'] ?? 0) + (r['3xx'] ?? 0);
  return {
    tool: 'autocannon',
    requests: r.requests.total,
    rps: r.requests.total / r.duration,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    bad: r.requests.total - ok,
    errors: r.errors + r.timeouts,
  };
}

/**
 * A keep-alive node:http client with `connections` requests in flight, for what neither wrk nor
 * autocannon can run: HEAD (both wait for the body that the response's Content-Length announces).
 * Costs the bench process ~30-50 µs of CPU per request, so use it for rates of a few thousand
 * requests per second, and for every variant being compared.
 */
async function runNodeClient({ origin, paths, connections, seconds, headers = {}, method = 'GET' }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const url = new URL(origin);
  const deadline = performance.now() + seconds * 1_000;
  const latencies = [];
  let requests = 0;
  let bad = 0;
  let errors = 0;
  let i = 0;
  const once = (path) =>
    new Promise((resolve) => {
      const t0 = performance.now();
      const req = http.request({ host: url.hostname, port: url.port, path, method, headers, agent, timeout: 5_000 }, (res) => {
        res.resume();
        res.once('end', () => {
          latencies.push(performance.now() - t0);
          requests++;
          if (res.statusCode >= 400) bad++;
          resolve();
        });
      });
      req.once('timeout', () => req.destroy(new Error('timeout')));
      req.once('error', () => {
        errors++;
        resolve();
      });
      req.end();
    });
  const started = performance.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < deadline) await once(paths[i++ % paths.length]);
    }),
  );
  const wall = (performance.now() - started) / 1_000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] : Number.NaN);
  return { tool: 'node', requests, rps: requests / wall, p50Ms: pct(50), p99Ms: pct(99), bad, errors };
}

/**
 * One bounded load run against `origin` + `paths`; `pids()` are the processes whose CPU time the
 * run is charged with. `lua`/`nextPath` generate paths (wrk/autocannon) when a fixed list will not do.
 */
export async function load({ origin, paths, lua, nextPath, connections, seconds, headers, method, pids = () => [], parts, tool }) {
  // HEAD: see runNodeClient.
  const use = tool ?? (method === 'HEAD' ? 'node' : findWrk() ? 'wrk' : 'autocannon');
  if (use !== 'node' && method && method !== 'GET') throw new Error(`load: ${use} runs GET only here (asked for ${method}); use tool: 'node'`);
  const before = cpuOf(pids());
  // Optional attribution of CPU time to named processes ({ label: () => [pids] }).
  const partsBefore = parts && Object.fromEntries(Object.entries(parts).map(([k, f]) => [k, cpuOf(f())]));
  const started = performance.now();
  const r =
    use === 'wrk'
      ? await runWrk({ origin, paths, lua, connections, seconds, headers })
      : use === 'node'
        ? await runNodeClient({ origin, paths, connections, seconds, headers, method })
        : await runAutocannon({ origin, paths, nextPath, connections, seconds, headers });
  const wall = (performance.now() - started) / 1_000;
  const cpu = cpuOf(pids()) - before;
  const perRequest = (seconds) => (r.requests > 0 ? (seconds * 1e6) / r.requests : Number.NaN);
  const cpuUsPerRequestBy = parts && Object.fromEntries(Object.entries(parts).map(([k, f]) => [k, perRequest(cpuOf(f()) - partsBefore[k])]));
  return { ...r, wallSeconds: wall, serverCpuSeconds: cpu, cpuUsPerRequest: perRequest(cpu), ...(parts && { cpuUsPerRequestBy }) };
}

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/**
 * Runs every variant once per round, back to back with the same duration and connections; odd
 * rounds go in reverse order so no variant always runs first. Each variant is warmed up first.
 * Returns per-variant runs and medians, and per-round ratios against `baseline` (its name).
 */
export async function compareRounds({ variants, baseline, rounds, seconds, connections, warmupSeconds = 1, log = () => {} }) {
  const runs = new Map(variants.map((v) => [v.name, []]));
  for (const v of variants) {
    await load({ ...v, connections, seconds: warmupSeconds });
  }
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 ? [...variants].reverse() : variants;
    for (const v of order) {
      const r = await load({ ...v, connections, seconds });
      runs.get(v.name).push(r);
      log(`  round ${round + 1}/${rounds} ${v.name}: ${Math.round(r.rps)} req/s, p99 ${r.p99Ms.toFixed(2)} ms, ${r.cpuUsPerRequest.toFixed(1)} µs CPU/req${r.bad || r.errors ? `, ${r.bad} bad, ${r.errors} errors` : ''}`);
    }
  }
  const summary = {};
  for (const v of variants) {
    const rs = runs.get(v.name);
    const base = runs.get(baseline);
    summary[v.name] = {
      runs: rs,
      rps: median(rs.map((r) => r.rps)),
      p50Ms: median(rs.map((r) => r.p50Ms)),
      p99Ms: median(rs.map((r) => r.p99Ms)),
      cpuUsPerRequest: median(rs.map((r) => r.cpuUsPerRequest)),
      ...(v.parts && { cpuUsPerRequestBy: Object.fromEntries(Object.keys(v.parts).map((k) => [k, median(rs.map((r) => r.cpuUsPerRequestBy[k]))])) }),
      bad: rs.reduce((s, r) => s + r.bad + r.errors, 0),
      requests: rs.reduce((s, r) => s + r.requests, 0),
      // Ratio per round (back to back), then the median: robust to load drifting between rounds.
      rpsRatio: median(rs.map((r, i) => r.rps / base[i].rps)),
      p99Ratio: median(rs.map((r, i) => r.p99Ms / base[i].p99Ms)),
      rpsRatioRange: [Math.min(...rs.map((r, i) => r.rps / base[i].rps)), Math.max(...rs.map((r, i) => r.rps / base[i].rps))],
    };
  }
  return summary;
}
