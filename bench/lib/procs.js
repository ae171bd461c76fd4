// Child processes the bench starts, and what /proc says about them.
//
// Every child is registered here; stopAll() stops them all (SIGTERM, then SIGKILL), and run.js
// calls it on success, on failure and on SIGINT/SIGTERM, so nothing the bench started outlives it.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Buffer } from 'node:buffer';
import { clearInterval, clearTimeout, setInterval, setTimeout } from 'node:timers';

const live = new Set();

/** Ticks per second of /proc/<pid>/stat utime/stime (USER_HZ; 100 on Linux). */
export const CLOCK_TICKS = 100;

/**
 * Spawns `cmd args` with stdin closed and stdout/stderr kept as a tail (for error messages).
 * `quiet: true` sends stdout to /dev/null (access logs under load would otherwise cost the bench
 * process a pipe read per line).
 */
export function start(cmd, args, { env = process.env, cwd, quiet = false, label = cmd } = {}) {
  const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', quiet ? 'ignore' : 'pipe', 'pipe'], detached: false });
  let tail = '';
  const keep = (chunk) => {
    tail = (tail + chunk.toString('utf8')).slice(-32_768);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise((resolve) => {
    child.once('error', (err) => {
      keep(`\n[spawn error] ${err.message}\n`);
      resolve(`error: ${err.message}`);
    });
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  const proc = {
    label,
    child,
    pid: child.pid,
    exited,
    output: () => tail,
    running: () => child.exitCode === null && child.signalCode === null,
    async stop(graceMs = 3_000) {
      if (proc.running()) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      await exited;
      live.delete(proc);
    },
  };
  live.add(proc);
  void exited.then(() => live.delete(proc));
  return proc;
}

/** Stops every child still running (in parallel). */
export async function stopAll() {
  await Promise.all([...live].map((p) => p.stop().catch(() => undefined)));
}

/** Last resort for a crashing bench: kill synchronously on exit. */
export function killAllSync() {
  for (const p of live) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** A port that was free a moment ago on `host` (loopback only). */
export function freePort(host = '127.0.0.1') {
  assertLoopback(host);
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const { port } = srv.address();
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

export function assertLoopback(host) {
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)) throw new Error(`bench: refusing to use non-loopback address ${host}`);
}

/** One bounded HTTP request; resolves with { status, headers, body } (redirects are not followed). */
export function httpRequest(url, { method = 'GET', headers = {}, body, timeoutMs = 10_000, agent = false } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
    });
    const timer = setTimeout(() => req.destroy(new Error(`${method} ${url} timed out after ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(body);
  });
}

/** Polls `url` until `ok(status)`; fails with the child's output when `proc` exits first or time runs out. */
export async function waitForHttp(url, { ok = (s) => s > 0 && s < 500, timeoutMs = 20_000, proc } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    if (proc && !proc.running()) throw new Error(`${proc.label} exited before ${url} answered:\n${proc.output()}`);
    try {
      const res = await httpRequest(url, { timeoutMs: 1_000 });
      if (ok(res.status)) return res;
      last = `status ${res.status}`;
    } catch (err) {
      last = err.message;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${url} (${last})${proc ? `\n${proc.output()}` : ''}`);
    await sleep(50);
  }
}

/**
 * CPU time of a process in seconds, all its threads: the sum of /proc/<pid>/task/<tid>/schedstat
 * (nanoseconds on CPU), falling back to utime + stime of /proc/<pid>/stat (1/100 s ticks) when
 * schedstat is unavailable. Undefined when the process is gone.
 */
export function cpuSeconds(pid) {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // thread exited meanwhile
      }
    }
    if (ns > 0) return ns / 1e9;
  } catch {
    // no schedstat: use the tick counters
  }
  return tickCpuSeconds(pid);
}

/** True when /proc/<pid>/task/<tid>/schedstat reports nanoseconds for `pid`. */
export function hasSchedstat(pid) {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) > 0;
  } catch {
    return false;
  }
}

/** utime + stime from /proc/<pid>/stat (all threads, including exited ones), in seconds. */
export function tickCpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** Summed CPU seconds of several processes (e.g. a cluster primary and its workers). */
export function cpuOf(pids) {
  let total = 0;
  for (const pid of pids) total += cpuSeconds(pid) ?? 0;
  return total;
}

/** Resident set size in bytes (VmRSS), undefined when the process is gone. */
export function rssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Direct children of `pid` (cluster workers), from /proc. */
export function childPids(pid) {
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // raced with an exit
    }
  }
  return out;
}

/** Samples `pids`' summed RSS every `everyMs` until stop() is called; returns { peak, samples }. */
export function sampleRss(pids, everyMs = 20) {
  let peak = 0;
  let samples = 0;
  const tick = () => {
    const rss = pids.reduce((sum, pid) => sum + (rssBytes(pid) ?? 0), 0);
    peak = Math.max(peak, rss);
    samples++;
  };
  tick();
  const timer = setInterval(tick, everyMs);
  return {
    stop() {
      clearInterval(timer);
      tick();
      return { peak, samples };
    },
  };
}
