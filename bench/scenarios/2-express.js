// Scenario 2: registryRedirect() as Express 5 middleware vs the same app with a handler writing
// a fixed 307.
import { HAS_URL_CACHE, fastPathSigner } from '../lib/lib.js';
import { compareRounds } from '../lib/load.js';
import { CLIENT_HEADERS, expectRedirect, startFixture } from '../lib/servers.js';
import { summarize } from './1-fast-path.js';

export const title = 'As Express 5 middleware vs the same app writing a fixed 307';
const PATH = `/v2/bench/app/blobs/sha256:${'b'.repeat(64)}`;
const fmtRps = (s) => `${Math.round(s.rps).toLocaleString('en-US')} req/s`;

export async function run(ctx) {
  const fixed = await startFixture('express-fixed');
  const fast = await startFixture('express-fast');
  const variants = [
    { name: 'express-fixed', origin: fixed.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: fixed.pids },
    { name: 'express-fast', origin: fast.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: fast.pids },
  ];
  if (!ctx.smoke) {
    const mw = await startFixture('express-redirect');
    variants.push({ name: 'express-redirect', origin: mw.origin, paths: [PATH], headers: CLIENT_HEADERS, pids: mw.pids });
  }
  for (const v of variants) await expectRedirect(v.origin, PATH, CLIENT_HEADERS);
  ctx.log(`scenario 2: ${variants.map((v) => v.name).join(', ')}; ${ctx.rounds} rounds x ${ctx.seconds} s`);
  const s = await compareRounds({ variants, baseline: 'express-fixed', rounds: ctx.rounds, seconds: ctx.seconds, connections: ctx.connections, log: ctx.log });
  const rows = [
    {
      id: '2a',
      title: `Express + registryRedirect(), URL cached (${HAS_URL_CACHE ? 'cachedSigner' : 'stand-in signer'}) vs Express fixed 307`,
      ours: fmtRps(s['express-fast']),
      baseline: fmtRps(s['express-fixed']),
      value: s['express-fast'].rpsRatio,
      unit: 'x',
      target: { op: '>=', value: 0.9 },
      note: `embedded mode (authorize hook: a synchronous lookup); ${fastPathSigner().label}, as the README wires it. CPU per request: ${s['express-fast'].cpuUsPerRequest.toFixed(1)} vs ${s['express-fixed'].cpuUsPerRequest.toFixed(1)} µs`,
    },
  ];
  if (s['express-redirect']) {
    rows.push({
      id: '2b',
      title: 'Express + registryRedirect(), no URL cache (signs every request) vs Express fixed 307',
      ours: fmtRps(s['express-redirect']),
      baseline: fmtRps(s['express-fixed']),
      value: s['express-redirect'].rpsRatio,
      unit: 'x',
      note: 'azureSigner used directly, without cachedSigner',
    });
  }
  return { rows, details: summarize(s) };
}
