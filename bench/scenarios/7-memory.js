// Scenario 7: memory bound. (a) 1 000 000 distinct digests through the caches with their default
// bounds, in a fresh process (fixtures/memory.js); (b) the real server (`serve`) answering distinct
// digests over HTTP for a bounded time (every one a decision-cache miss: upstream HEAD, sign, 307),
// its RSS sampled from /proc.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { HAS_URL_CACHE, azureBlock } from '../lib/lib.js';
import { load } from '../lib/load.js';
import { rssBytes, sampleRss } from '../lib/procs.js';
import { expectRedirect, startFixture, startServe } from '../lib/servers.js';

export const title = 'Memory bound: RSS after many distinct digests pass the caches';
const BOUND_MIB = 256;
const MiB = 2 ** 20;
const FIXTURE = fileURLToPath(new URL('../fixtures/memory.js', import.meta.url));

// wrk: a new digest per request (one thread, so the counter is unique).
const DISTINCT_LUA = `local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, string.format("/v2/bench/app/blobs/sha256:%064x", n))
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
// semi-spaces), and a busy server grows into it. This flag caps it; the bench measures both.
const SEMI_SPACE_FLAG = '--max-semi-space-size=16';

async function overHttp(ctx, upstream, name, env) {
  const serve = await startServe({ upstream: upstream.origin, signer: azureBlock(), log: { level: 'warn', requests: false } }, { dir: ctx.dir, name, env });
  await expectRedirect(serve.origin, `/v2/bench/app/blobs/sha256:${'0'.repeat(64)}`);
  const before = rssBytes(serve.proc.pid);
  const sampler = sampleRss([serve.proc.pid], 50);
  const r = await load({ origin: serve.origin, paths: ['/v2/bench/app/blobs/sha256:0'], lua: DISTINCT_LUA, nextPath: distinctPath(), connections: ctx.connections, seconds: ctx.memoryHttpSeconds, pids: serve.pids });
  const { peak } = sampler.stop();
  await serve.proc.stop();
  ctx.log(`  serve${env ? ` (NODE_OPTIONS=${env.NODE_OPTIONS})` : ''}: ${r.requests} distinct digests over HTTP in ${ctx.memoryHttpSeconds} s (${Math.round(r.rps)} req/s): RSS ${(before / MiB).toFixed(0)} -> peak ${(peak / MiB).toFixed(0)} MiB`);
  return { digests: r.requests, rps: r.rps, cpuUsPerRequest: r.cpuUsPerRequest, rssBeforeBytes: before, rssPeakBytes: peak, badResponses: r.bad + r.errors };
}

export async function run(ctx) {
  ctx.log(`scenario 7: ${ctx.memoryDigests.toLocaleString('en-US')} distinct digests through the caches (fresh process), default V8 flags and ${SEMI_SPACE_FLAG}`);
  const a = await inProcess(ctx.memoryDigests);
  const aCapped = await inProcess(ctx.memoryDigests, [SEMI_SPACE_FLAG]);
  for (const [label, m] of [['default', a], [SEMI_SPACE_FLAG, aCapped]]) {
    ctx.log(`  ${label}: ${m.digests} digests in ${m.seconds.toFixed(1)} s: RSS ${m.rssBaseMiB.toFixed(0)} -> ${m.rssEndMiB.toFixed(0)} MiB (peak ${m.rssPeakMiB.toFixed(0)}), live heap after GC ${m.heapUsedAfterGcMiB.toFixed(0)} MiB, ${m.decisionCacheEntries} decisions cached (max ${m.decisionCacheMax})`);
  }
  const upstream = await startFixture('upstream');
  const b = await overHttp(ctx, upstream, 'serve-s7', undefined);
  const bCapped = await overHttp(ctx, upstream, 'serve-s7-semi16', { NODE_OPTIONS: [process.env.NODE_OPTIONS, SEMI_SPACE_FLAG].filter(Boolean).join(' ') });
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
    title: `serve RSS, ${m.digests.toLocaleString('en-US')} distinct digests over HTTP${flags ? `, NODE_OPTIONS=${flags}` : ', default V8 flags'}`,
    ours: `peak ${(m.rssPeakBytes / MiB).toFixed(0)} MiB (from ${(m.rssBeforeBytes / MiB).toFixed(0)})`,
    baseline: `bound ${BOUND_MIB} MiB`,
    value: m.rssPeakBytes / MiB,
    unit: 'MiB',
    target: { op: '<=', value: BOUND_MIB },
    note: `the real CLI; every request a decision-cache miss (HEAD upstream, sign, 307); ${Math.round(m.rps)} req/s, ${m.cpuUsPerRequest.toFixed(0)} µs CPU/request`,
  });
  return {
    rows: [inProcessRow('7a', a), inProcessRow('7b', aCapped, SEMI_SPACE_FLAG), httpRow('7c', b), httpRow('7d', bCapped, SEMI_SPACE_FLAG)],
    details: { semiSpaceFlag: SEMI_SPACE_FLAG, inProcess: a, inProcessCapped: aCapped, serve: b, serveCapped: bCapped },
  };
}

/** autocannon's equivalent of the Lua script. */
function distinctPath() {
  let n = 0;
  return () => `/v2/bench/app/blobs/sha256:${(++n).toString(16).padStart(64, '0')}`;
}
