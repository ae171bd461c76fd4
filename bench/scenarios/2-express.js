// Scenario 2: registryRedirect() as Express 5 middleware vs the same app with a handler writing
// a fixed 307.
import { HAS_URL_CACHE, fastPathSigner } from '../lib/lib.js';
import { compareRounds } from '../lib/load.js';
import { expectRedirect, startFixture } from '../lib/servers.js';
import { summarize } from './1-fast-path.js';

export const title = 'As Express 5 middleware vs the same app writing a fixed 307';
const PATH = `/v2/bench/app/blobs/sha256:${'b'.repeat(64)}`;
const fmtRps = (s) => `${Math.round(s.rps).toLocaleString('en-US')} req/s`;

export async function run(ctx) {
  const fixed = await startFixture('express-fixed');
  const mw = await startFixture('express-redirect');
  const variants = [
    { name: 'express-fixed', origin: fixed.origin, paths: [PATH], pids: fixed.pids },
    { name: 'express-redirect', origin: mw.origin, paths: [PATH], pids: mw.pids },
  ];
  if (!ctx.smoke && !HAS_URL_CACHE) {
    const fast = await startFixture('express-fast');
    variants.push({ name: 'express-fast', origin: fast.origin, paths: [PATH], pids: fast.pids });
  }
  for (const v of variants) await expectRedirect(v.origin, PATH);
  ctx.log(`scenario 2: ${variants.map((v) => v.name).join(', ')}; ${ctx.rounds} rounds x ${ctx.seconds} s`);
  const s = await compareRounds({ variants, baseline: 'express-fixed', rounds: ctx.rounds, seconds: ctx.seconds, connections: ctx.connections, log: ctx.log });
  const rows = [
    {
      id: '2a',
      title: `Express + registryRedirect() (${HAS_URL_CACHE ? 'cachedSigner' : 'signs every request'}) vs Express fixed 307`,
      ours: fmtRps(s['express-redirect']),
      baseline: fmtRps(s['express-fixed']),
      value: s['express-redirect'].rpsRatio,
      unit: 'x',
      target: { op: '>=', value: 0.9 },
      note: `embedded mode (authorize hook: a synchronous lookup); azureSigner ${HAS_URL_CACHE ? 'wrapped in cachedSigner' : 'without a URL cache (none in this build)'}`,
    },
  ];
  if (s['express-fast']) {
    rows.push({
      id: '2b',
      title: 'Express + registryRedirect(), URL cached (stand-in signer) vs Express fixed 307',
      ours: fmtRps(s['express-fast']),
      baseline: fmtRps(s['express-fixed']),
      value: s['express-fast'].rpsRatio,
      unit: 'x',
      target: { op: '>=', value: 0.9 },
      note: fastPathSigner().label,
    });
  }
  return { rows, details: summarize(s) };
}
