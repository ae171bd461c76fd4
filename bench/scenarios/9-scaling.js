// Scenario 9: scaling with connections. The redirect fast path of `serve` (default config: access
// log on, decision + URL cache hit) and the bare node:http 307 at 1, 16, 64, 256 and 1,024
// connections, side by side at each count (and nginx `return 307` when installed).
import { azureBlock, sampleLocation } from '../lib/lib.js';
import { compareRounds } from '../lib/load.js';
import { findNginx, nginxRedirect } from '../lib/nginx.js';
import { CLIENT_HEADERS, expectRedirect, startFixture, startServe } from '../lib/servers.js';

export const title = 'Scaling: fast path and bare 307 at 1 to 1,024 connections';
const PATH = `/v2/bench/app/blobs/sha256:${'a'.repeat(64)}`;
const COUNTS = [1, 16, 64, 256, 1024];

export async function run(ctx) {
  const upstream = await startFixture('upstream');
  const bare = await startFixture('bare307');
  const serve = await startServe({ upstream: upstream.origin, signer: azureBlock(), log: { level: 'info' } }, { dir: ctx.dir, name: 'serve-s9' });
  const variants = [
    { name: 'bare', origin: bare.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: bare.pids },
    { name: 'serve', origin: serve.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: serve.pids },
  ];
  if (findNginx() && !ctx.smoke) {
    const nginx = await nginxRedirect({ dir: ctx.dir, location: sampleLocation(), digest: `sha256:${'a'.repeat(64)}` });
    variants.push({ name: 'nginx', origin: nginx.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: nginx.pids });
  }
  for (const v of variants) await expectRedirect(v.origin, PATH, CLIENT_HEADERS);
  const counts = ctx.smoke ? [1, 64] : COUNTS;
  // Fewer rounds per count than scenario 1: five counts multiply the time.
  const rounds = Math.max(1, Math.min(ctx.rounds, 3));
  const rows = [];
  const details = {};
  for (const connections of counts) {
    ctx.log(`scenario 9: -c${connections}, ${rounds} rounds x ${ctx.seconds} s: ${variants.map((v) => v.name).join(', ')}`);
    const s = await compareRounds({ variants, baseline: 'bare', rounds, seconds: ctx.seconds, connections, log: ctx.log });
    details[connections] = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, { rps: v.rps, p50Ms: v.p50Ms, p99Ms: v.p99Ms, cpuUsPerRequest: v.cpuUsPerRequest, rpsRatio: v.rpsRatio, p99Ratio: v.p99Ratio, bad: v.bad }]));
    const fmt = (v) => `${Math.round(v.rps).toLocaleString('en-US')} req/s, p99 ${v.p99Ms.toFixed(2)} ms`;
    rows.push({
      id: `9-${connections}`,
      title: `fast path (default config) vs bare 307 at ${connections} connection${connections === 1 ? '' : 's'}: req/s`,
      ours: fmt(s.serve),
      baseline: fmt(s.bare),
      value: s.serve.rpsRatio,
      unit: 'x',
      target: { op: '>=', value: 0.8 },
      note: `p99 ratio ${s.serve.p99Ratio.toFixed(2)}x; CPU per request ${s.serve.cpuUsPerRequest.toFixed(1)} vs ${s.bare.cpuUsPerRequest.toFixed(1)} µs${s.nginx ? `; nginx ${fmt(s.nginx)} (${s.nginx.rpsRatio.toFixed(2)}x bare)` : ''}${s.serve.bad + s.bare.bad ? `; errors/non-3xx: serve ${s.serve.bad}, bare ${s.bare.bad}` : ''}`,
    });
  }
  return { rows, details };
}
