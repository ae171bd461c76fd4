// Scenario 7: memory bound. (a) 1 000 000 distinct digests (each with its own credential) through
// the caches with their default bounds, in a fresh process (fixtures/memory.js), as a library user
// embedding the middleware runs them; (b) the real server (`serve`, default Node flags) answering
// 1 000 000 distinct digests with distinct bearer tokens over HTTP (every one a miss of both caches:
// upstream HEAD, sign, 307), its RSS sampled from /proc.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { HAS_URL_CACHE, azureBlock } from '../lib/lib.js';
import { load } from '../lib/load.js';
import { rssBytes, sampleRss } from '../lib/procs.js';
import { expectRedirect, startFixture, startServe } from '../lib/servers.js';

export const title = 'Memory bound: RSS after many distinct digests pass the caches';
const BOUND_MIB = 256;
const MiB = 2 ** 20;
const FIXTURE = fileURLToPath(new URL('../fixtures/memory.js', import.meta.url));

// wrk: from `start` on, a new digest and a new bearer token (about as long as a registry JWT) on
// every request, so every request misses both caches (one thread, so the counter is unique).
const distinctLua = (start) => `local n = ${start}
local pad = string.rep("t", 680)
request = function()
  n = n + 1
  return wrk.format(nil, string.format("/v2/bench/app/blobs/sha256:%064x", n), { ["Authorization"] = string.format("Bearer %s.%016x", pad, n) })
end
`;

function inProcess(digests, v8Flags = []) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--expose-gc', ...v8Flags, FIXTURE, String(digests)], { timeout: 300_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`memory fixture failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').at(-1)));
    });
  });
}

// Node 24 sizes V8's young generation from the machine's memory (here up to 2 x 64 MiB
// semi-spaces), and a busy process grows into it. `serve` caps it itself (it re-execs with
// --max-semi-space-size unless the user set one); a library user's process has what its command
// line says. The in-process rows measure both; `=0` is Node's own sizing for the CLI.
const SEMI_SPACE_FLAG = '--max-semi-space-size=16';
const NODE_SIZING = '--max-semi-space-size=0';

/**
 * The real CLI answering `digests` distinct digests with distinct credentials over HTTP (bounded
 * by `maxSeconds`): wrk runs back to back, each continuing the numbering, until the count is
 * reached. RSS sampled every 50 ms from /proc, and after each run.
 */
async function overHttp(ctx, upstream, { name, env, digests, maxSeconds }) {
  const serve = await startServe({ upstream: upstream.origin, signer: azureBlock(), log: { level: 'warn', requests: false } }, { dir: ctx.dir, name, env });
  await expectRedirect(serve.origin, `/v2/bench/app/blobs/sha256:${'0'.repeat(64)}`);
  const cmdline = readFileSync(`/proc/${serve.proc.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  const before = rssBytes(serve.proc.pid);
  const sampler = sampleRss([serve.proc.pid], 50);
  const started = Date.now();
  let done = 0;
  let cpuSeconds = 0;
  let bad = 0;
  let rps = 0;
  const checkpoints = [];
  while (done < digests && (Date.now() - started) / 1_000 < maxSeconds) {
    const left = Math.min(maxSeconds - (Date.now() - started) / 1_000, rps ? (digests - done) / rps : 2);
    const seconds = Math.max(1, Math.min(20, Math.ceil(left)));
    const r = await load({ origin: serve.origin, paths: ['/v2/bench/app/blobs/sha256:0'], lua: distinctLua(done), nextPath: distinctPath(done), connections: ctx.connections, seconds, pids: serve.pids });
    done += r.requests;
    cpuSeconds += r.serverCpuSeconds;
    bad += r.bad + r.errors;
    rps = r.rps || 1;
    checkpoints.push({ digests: done, rssMiB: rssBytes(serve.proc.pid) / MiB });
  }
  const wall = (Date.now() - started) / 1_000;
  const end = rssBytes(serve.proc.pid);
  const { peak } = sampler.stop();
  await serve.proc.stop();
  // Node's own options: what comes between the node binary and the script.
  const flags = cmdline.slice(1, cmdline.findIndex((a) => a.endsWith('cli.js')));
  ctx.log(`  serve${env ? ` (NODE_OPTIONS=${env.NODE_OPTIONS})` : ''} [${flags.join(' ') || 'no node flags'}]: ${done.toLocaleString('en-US')} distinct digests + credentials over HTTP in ${wall.toFixed(0)} s (${Math.round(done / wall)} req/s): RSS ${(before / MiB).toFixed(0)} -> peak ${(peak / MiB).toFixed(0)} MiB, end ${(end / MiB).toFixed(0)}; at ${checkpoints.map((c) => `${Math.round(c.digests / 1000)}k: ${c.rssMiB.toFixed(0)}`).join(', ')} MiB`);
  return { digests: done, seconds: wall, rps: done / wall, cpuUsPerRequest: (cpuSeconds * 1e6) / done, nodeFlags: flags, rssBeforeBytes: before, rssPeakBytes: peak, rssEndBytes: end, checkpoints, badResponses: bad };
}

export async function run(ctx) {
  ctx.log(`scenario 7: ${ctx.memoryDigests.toLocaleString('en-US')} distinct digests through the caches (fresh process), default V8 flags and ${SEMI_SPACE_FLAG}`);
  const a = await inProcess(ctx.memoryDigests);
  const aCapped = await inProcess(ctx.memoryDigests, [SEMI_SPACE_FLAG]);
  for (const [label, m] of [['default', a], [SEMI_SPACE_FLAG, aCapped]]) {
    ctx.log(`  ${label}: ${m.digests} digests in ${m.seconds.toFixed(1)} s: RSS ${m.rssBaseMiB.toFixed(0)} -> ${m.rssEndMiB.toFixed(0)} MiB (peak ${m.rssPeakMiB.toFixed(0)}), live heap after GC ${m.heapUsedAfterGcMiB.toFixed(0)} MiB, ${m.decisionCacheEntries} decisions cached (max ${m.decisionCacheMax})`);
  }
  const upstream = await startFixture('upstream');
  const b = await overHttp(ctx, upstream, { name: 'serve-s7', digests: ctx.memoryHttpDigests, maxSeconds: ctx.memoryHttpSeconds });
  // Node's own young-generation sizing, for comparison: a quarter of the digests shows it.
  const bNode = await overHttp(ctx, upstream, {
    name: 'serve-s7-node-sizing',
    env: { NODE_OPTIONS: [process.env.NODE_OPTIONS, NODE_SIZING].filter(Boolean).join(' ') },
    digests: Math.ceil(ctx.memoryHttpDigests / 4),
    maxSeconds: ctx.memoryHttpSeconds / 4,
  });
  const caches = HAS_URL_CACHE ? 'decision cache + signed-URL cache' : 'decision cache (no signed-URL cache in this build)';
  const inProcessRow = (id, m, flags) => ({
    id,
    title: `RSS after ${m.digests.toLocaleString('en-US')} distinct digests through the caches${flags ? `, ${flags}` : ', default V8 flags'}`,
    ours: `${m.rssEndMiB.toFixed(0)} MiB (from ${m.rssBaseMiB.toFixed(0)}; live heap ${m.heapUsedAfterGcMiB.toFixed(0)} MiB)`,
    baseline: `bound ${BOUND_MIB} MiB`,
    value: m.rssEndMiB,
    unit: 'MiB',
    target: { op: '<=', value: BOUND_MIB },
    note: `${caches} with default bounds, fresh process, as fast as it goes (${m.seconds.toFixed(1)} s); ${m.decisionCacheEntries} decisions kept (maxEntries ${m.decisionCacheMax})`,
  });
  const httpRow = (id, m, flags) => ({
    id,
    title: `serve RSS, ${m.digests.toLocaleString('en-US')} distinct digests and credentials over HTTP${flags ? `, NODE_OPTIONS=${flags}` : ', default Node flags'}`,
    ours: `peak ${(m.rssPeakBytes / MiB).toFixed(0)} MiB (from ${(m.rssBeforeBytes / MiB).toFixed(0)}, end ${(m.rssEndBytes / MiB).toFixed(0)})`,
    baseline: `bound ${BOUND_MIB} MiB`,
    value: m.rssPeakBytes / MiB,
    unit: 'MiB',
    target: { op: '<=', value: BOUND_MIB },
    note: `the real CLI (runs with: ${m.nodeFlags.join(' ') || 'no node flags'}); every request a miss of both caches (HEAD upstream, sign, 307) with its own bearer token; ${Math.round(m.rps)} req/s, ${m.cpuUsPerRequest.toFixed(0)} µs CPU/request`,
  });
  return {
    rows: [inProcessRow('7a', a), inProcessRow('7b', aCapped, SEMI_SPACE_FLAG), httpRow('7c', b), httpRow('7d', bNode, NODE_SIZING)],
    details: { semiSpaceFlag: SEMI_SPACE_FLAG, inProcess: a, inProcessCapped: aCapped, serve: b, serveNodeSizing: bNode },
  };
}

/** autocannon's equivalent of the Lua script's paths (its credential is the run's fixed one). */
function distinctPath(start) {
  let n = start;
  return () => `/v2/bench/app/blobs/sha256:${(++n).toString(16).padStart(64, '0')}`;
}
