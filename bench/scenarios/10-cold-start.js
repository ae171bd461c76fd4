// Scenario 10: cold start. For each signer kind the config file accepts: spawn the real CLI
// (`node dist/server/cli.js serve --config FILE`), and time exec -> the first 200 on /healthz
// (polled every 2 ms; a refused connection answers at once). `preflight: off`: the signers' storages
// (Azure, S3, GCS, CloudFront, a CDN) are not all reachable here, and a preflight's time is the
// storage's round trip, not ours. The upstream is not contacted to answer /healthz. Also measured:
// Node itself (a bare node:http server answering /healthz) and `serve` with the user's own
// --max-semi-space-size in NODE_OPTIONS, i.e. without the CLI's re-exec.
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { AZURITE_KEY, CLI, CONFIG_SIGNER_KINDS, S3RVER_KEYS } from '../lib/lib.js';
import { median } from '../lib/load.js';
import { freePort, start, tickCpuSeconds } from '../lib/procs.js';

export const title = 'Cold start: exec -> first 200 on /healthz, per signer';
const TARGET_MS = 300;

let pem;
const rsaPem = () => (pem ??= generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());

/** A minimal valid `signer:` block per kind (throwaway credentials; preflight is off). */
function signerBlock(kind, dir) {
  switch (kind) {
    case 'azure':
      return { azure: { account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } };
    case 's3':
      return { s3: { bucket: 'registry', region: 'us-east-1', endpoint: 'http://127.0.0.2:4568', forcePathStyle: true, ...S3RVER_KEYS } };
    case 'gcs':
      return { gcs: { bucket: 'registry', clientEmail: 'bench@example.iam.gserviceaccount.com', privateKey: rsaPem() } };
    case 'cloudfront':
      return { cloudfront: { baseUrl: 'https://d111111abcdef8.cloudfront.net', keyPairId: 'K2JCJMDEHXQW5F', privateKey: rsaPem() } };
    case 'hmac':
      return { hmac: { baseUrl: 'https://cdn.example.com', key: 'bench-key', preset: 'cloudflare' } };
    case 'origin': {
      const root = join(dir, 'cold-origin-root');
      mkdirSync(root, { recursive: true });
      return { origin: { root, key: 'bench-origin-key', baseUrl: 'http://127.0.0.2:15081/_origin' } };
    }
    default:
      return undefined;
  }
}

/** GET /healthz once; resolves with the status, or 0 when nothing answers yet. */
function probe(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/healthz', agent: false, timeout: 1_000 }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode));
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(0));
  });
}

/**
 * Spawns `args`, polls /healthz on `port`; milliseconds from spawn to the first 200, and the CPU
 * the process had used by then (all threads, including those of an image it exec'd away from:
 * /proc/<pid>/stat, 10 ms ticks). CPU time moves much less than wall time on a loaded machine.
 */
async function timeToHealthy(args, port, { env = process.env, label }) {
  const t0 = performance.now();
  const proc = start(process.execPath, args, { env, quiet: true, label });
  try {
    for (;;) {
      if (!proc.running()) throw new Error(`${label} exited before answering /healthz: ${proc.output().slice(-2_000)}`);
      if ((await probe(port)) === 200) return { ms: performance.now() - t0, cpuMs: tickCpuSeconds(proc.pid) * 1_000 };
      if (performance.now() - t0 > 15_000) throw new Error(`${label}: no 200 on /healthz within 15 s: ${proc.output().slice(-2_000)}`);
      await sleep(2);
    }
  } finally {
    await proc.stop();
  }
}

const BARE = `const http = require('node:http');
http.createServer((req, res) => { res.writeHead(200, { 'Content-Type': 'text/plain' }); res.end('ok'); }).listen(Number(process.argv[1]), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));`;

export async function run(ctx) {
  const runs = ctx.smoke ? 1 : ctx.quick ? 3 : 7;
  const dir = join(ctx.dir, 'cold-start');
  mkdirSync(dir, { recursive: true });
  const serveOnce = async (kind, env) => {
    const port = await freePort();
    const file = join(dir, `${kind}-${port}.yaml`);
    writeFileSync(file, JSON.stringify({ listen: `127.0.0.1:${port}`, upstream: 'http://127.0.0.1:9', preflight: 'off', reload: { watch: false }, log: { level: 'warn' }, signer: signerBlock(kind, dir) }));
    return timeToHealthy([CLI, 'serve', '--config', file], port, { env, label: `serve (${kind})` });
  };
  const kinds = CONFIG_SIGNER_KINDS.filter((k) => signerBlock(k, dir));
  const skipped = CONFIG_SIGNER_KINDS.filter((k) => !kinds.includes(k));
  const noReexecEnv = { ...process.env, NODE_OPTIONS: [process.env.NODE_OPTIONS, '--max-semi-space-size=16'].filter(Boolean).join(' ') };
  const variants = [
    { name: 'node', label: 'bare node:http answering /healthz (Node itself)', once: async () => {
      const port = await freePort();
      return timeToHealthy(['-e', BARE, String(port)], port, { label: 'bare node' });
    } },
    ...kinds.map((kind) => ({ name: kind, label: `serve, ${kind} signer`, once: () => serveOnce(kind, process.env), target: true })),
    { name: 'azure-no-reexec', label: 'serve, azure signer, --max-semi-space-size=16 in NODE_OPTIONS (no re-exec)', once: () => serveOnce('azure', noReexecEnv) },
  ];
  const times = new Map(variants.map((v) => [v.name, []]));
  const cpu = new Map(variants.map((v) => [v.name, []]));
  ctx.log(`scenario 10: ${runs} cold starts of each of: ${variants.map((v) => v.name).join(', ')} (interleaved; preflight off)`);
  // Interleaved: run i of every variant, then run i + 1, so load drifting hits all alike.
  for (let i = 0; i < runs; i++) {
    for (const v of variants) {
      const { ms, cpuMs } = await v.once();
      times.get(v.name).push(ms);
      cpu.get(v.name).push(cpuMs);
    }
  }
  const rows = [];
  const details = { runs, preflight: 'off', skipped, ms: Object.fromEntries(times), cpuMs: Object.fromEntries(cpu) };
  let id = 0;
  for (const v of variants) {
    const ms = times.get(v.name);
    const m = median(ms);
    const c = median(cpu.get(v.name));
    ctx.log(`  ${v.label}: median ${m.toFixed(0)} ms (${Math.min(...ms).toFixed(0)}-${Math.max(...ms).toFixed(0)}), CPU ${c.toFixed(0)} ms`);
    rows.push({
      id: `10${String.fromCharCode(97 + id++)}`,
      title: `cold start, exec -> first 200 on /healthz: ${v.label}`,
      ours: `${m.toFixed(0)} ms (${Math.min(...ms).toFixed(0)}-${Math.max(...ms).toFixed(0)})`,
      baseline: v.target ? `bound ${TARGET_MS} ms` : '',
      value: Math.round(m),
      unit: 'ms',
      ...(v.target && { target: { op: '<=', value: TARGET_MS } }),
      note: `median of ${runs} runs${v.target ? ', preflight: off' : ''}; CPU used by then ${c.toFixed(0)} ms (median)`,
    });
  }
  return { rows, details };
}
