// Scenario 1: the redirect fast path (authorization cached, URL cached) of the standalone server
// vs a bare node:http server answering a fixed 307, in the same run.
import { HAS_URL_CACHE, azureBlock, fastPathSigner, sampleLocation } from '../lib/lib.js';
import { findNginx, nginxRedirect } from '../lib/nginx.js';
import { compareRounds } from '../lib/load.js';
import { CLIENT_HEADERS, cliHasWorkers, expectRedirect, startFixture, startServe } from '../lib/servers.js';

export const title = 'Redirect fast path: serve vs bare node:http 307';
const PATH = `/v2/bench/app/blobs/sha256:${'a'.repeat(64)}`;

const fmtRps = (s) => `${Math.round(s.rps).toLocaleString('en-US')} req/s`;

export async function run(ctx) {
  const upstream = await startFixture('upstream');
  // `serve`'s defaults: access log on (log.requests: true), decision cache and URL cache on.
  const defaults = { upstream: upstream.origin, signer: azureBlock(), log: { level: 'info' } };
  const noLog = { ...defaults, log: { level: 'info', requests: false } };
  const bare = await startFixture('bare307');
  const serve = await startServe(defaults, { dir: ctx.dir, name: 'serve-s1' });
  const variants = [
    { name: 'bare', origin: bare.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: bare.pids },
    { name: 'serve', origin: serve.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: serve.pids },
  ];
  if (!ctx.smoke) {
    const quiet = await startServe(noLog, { dir: ctx.dir, name: 'serve-s1-nolog' });
    variants.push({ name: 'serve-nolog', origin: quiet.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: quiet.pids });
    if (findNginx()) {
      const nginx = await nginxRedirect({ dir: ctx.dir, location: sampleLocation(), digest: `sha256:${'a'.repeat(64)}` });
      variants.push({ name: 'nginx', origin: nginx.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: nginx.pids });
    }
    if (HAS_URL_CACHE) {
      // serve caches signed URLs by default; this one signs every request, to show what the cache saves.
      const uncached = await startServe({ ...noLog, cache: { enabled: false } }, { dir: ctx.dir, name: 'serve-s1-nocache' });
      variants.push({ name: 'serve-nocache', origin: uncached.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: uncached.pids });
    } else {
      const fast = await startFixture('serve-fast', { upstream: upstream.origin });
      variants.push({ name: 'serve-fast', origin: fast.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: fast.pids });
    }
    if (cliHasWorkers()) {
      const two = await startServe(defaults, { dir: ctx.dir, name: 'serve-s1-w2', workers: 2 });
      variants.push({ name: 'serve-w2', origin: two.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: two.pids });
    }
  }
  for (const v of variants) await expectRedirect(v.origin, PATH, CLIENT_HEADERS);

  ctx.log(`scenario 1: ${variants.map((v) => v.name).join(', ')}; ${ctx.rounds} rounds x ${ctx.seconds} s, ${ctx.connections} connections`);
  const s = await compareRounds({ variants, baseline: 'bare', rounds: ctx.rounds, seconds: ctx.seconds, connections: ctx.connections, log: ctx.log });

  const urlCache = HAS_URL_CACHE ? 'URL cache on (serve default)' : 'no URL cache in this build: signs every request (~8 µs Azure SAS)';
  const cpu = (v) => `${v.cpuUsPerRequest.toFixed(1)} µs`;
  const rows = [
    {
      id: '1a',
      title: 'serve, default config (access log on) vs bare 307: req/s',
      ours: fmtRps(s.serve),
      baseline: fmtRps(s.bare),
      value: s.serve.rpsRatio,
      unit: 'x',
      target: { op: '>=', value: 0.85 },
      note: `authorization cached (requests carry a ${CLIENT_HEADERS.Authorization.length}-byte bearer token, hashed into the decision-cache key); ${urlCache}; one JSON access line per request (stdout to /dev/null). CPU per request: serve ${cpu(s.serve)}, bare ${cpu(s.bare)}; per-round ratios ${s.serve.rpsRatioRange.map((x) => x.toFixed(2)).join('-')}`,
    },
    {
      id: '1b',
      title: 'serve, default config vs bare 307: p99 latency',
      ours: `${s.serve.p99Ms.toFixed(2)} ms`,
      baseline: `${s.bare.p99Ms.toFixed(2)} ms`,
      value: s.serve.p99Ratio,
      unit: 'x',
      target: { op: '<=', value: 1.5 },
    },
  ];
  if (s['serve-nolog']) {
    rows.push({
      id: '1c',
      title: 'serve, access log off (log.requests: false) vs bare 307: req/s',
      ours: fmtRps(s['serve-nolog']),
      baseline: fmtRps(s.bare),
      value: s['serve-nolog'].rpsRatio,
      unit: 'x',
      target: { op: '>=', value: 0.92 },
      note: `CPU per request ${cpu(s['serve-nolog'])}; the access log costs ${(s.serve.cpuUsPerRequest - s['serve-nolog'].cpuUsPerRequest).toFixed(1)} µs per request (1a minus this)`,
    });
  }
  if (s.nginx) {
    rows.push({
      id: '1h',
      title: 'nginx return 307 (1 worker, access log off) vs bare 307: the limit of this machine',
      ours: fmtRps(s.nginx),
      baseline: fmtRps(s.bare),
      value: s.nginx.rpsRatio,
      unit: 'x',
      note: `CPU per request ${cpu(s.nginx)}; p99 ${s.nginx.p99Ms.toFixed(2)} ms; nginx adds its default HTML body to a 3xx`,
    });
  }
  if (s['serve-fast']) {
    rows.push(
      {
        id: '1d',
        title: `serve, URL cached (${HAS_URL_CACHE ? 'cachedSigner' : 'stand-in signer'}) vs bare 307: req/s`,
        ours: fmtRps(s['serve-fast']),
        baseline: fmtRps(s.bare),
        value: s['serve-fast'].rpsRatio,
        unit: 'x',
        note: `${fastPathSigner().label}; same server code (startServer) in its own process`,
      },
    );
  }
  if (s['serve-nocache']) {
    rows.push({
      id: '1g',
      title: 'serve with the URL cache off (cache.enabled: false, access log off) vs bare 307',
      ours: fmtRps(s['serve-nocache']),
      baseline: fmtRps(s.bare),
      value: s['serve-nocache'].rpsRatio,
      unit: 'x',
      note: `signs every request: ${(s['serve-nocache'].cpuUsPerRequest - (s['serve-nolog'] ?? s.serve).cpuUsPerRequest).toFixed(1)} µs CPU per request more than 1c`,
    });
  }
  if (s['serve-w2']) {
    rows.push({
      id: '1f',
      title: 'serve --workers 2 (default config) vs bare 307 (1 process)',
      ours: fmtRps(s['serve-w2']),
      baseline: fmtRps(s.bare),
      value: s['serve-w2'].rpsRatio,
      unit: 'x',
      note: `scaling 1 -> 2 workers: ${(s['serve-w2'].rps / s.serve.rps).toFixed(2)}x (the load generator shares the same 2 cores, so this cannot reach 2x)`,
    });
  }
  return { rows, details: summarize(s) };
}

/** What goes into the JSON besides the rows: per-variant medians and every run. */
export function summarize(s) {
  return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, { rps: v.rps, p50Ms: v.p50Ms, p99Ms: v.p99Ms, cpuUsPerRequest: v.cpuUsPerRequest, cpuUsPerRequestBy: v.cpuUsPerRequestBy, rpsRatio: v.rpsRatio, rpsRatioRange: v.rpsRatioRange, p99Ratio: v.p99Ratio, requests: v.requests, badResponses: v.bad, runs: v.runs }]));
}
