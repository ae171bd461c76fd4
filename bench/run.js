#!/usr/bin/env node
// `npm run bench`: every scenario of issue 6, side by side, on loopback; one table on stdout,
// bench/results/<date>.json and .svg. Progress goes to stderr.
//
//   node bench/run.js [--quick | --smoke] [--only 1,3,6] [--out DIR] [--rounds N] [--seconds S]
//
// --quick: about 70 s (fewer, shorter rounds; smaller image, upload and memory run). --smoke: the
// harness test's mode (one round of one second). Every target is a ratio of two things measured
// in this run, back to back, with the same duration and connections.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { removeScratch, findWrk, wrkVersion } from './lib/load.js';
import { HAS_URL_CACHE, ROOT } from './lib/lib.js';
import { killAllSync, stopAll } from './lib/procs.js';
import { judge, textTable, writeArtifacts } from './lib/report.js';
import { closeShared, shared } from './lib/shared.js';

const SCENARIOS = {
  1: () => import('./scenarios/1-fast-path.js'),
  2: () => import('./scenarios/2-express.js'),
  3: () => import('./scenarios/3-distribution.js'),
  4: () => import('./scenarios/4-pass-through.js'),
  5: () => import('./scenarios/5-offload.js'),
  6: () => import('./scenarios/6-signing.js'),
  7: () => import('./scenarios/7-memory.js'),
  8: () => import('./scenarios/8-origin.js'),
  9: () => import('./scenarios/9-scaling.js'),
  10: () => import('./scenarios/10-cold-start.js'),
};

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    smoke: { type: 'boolean' },
    only: { type: 'string' },
    out: { type: 'string' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    connections: { type: 'string' },
  },
  strict: true,
});

const mode = values.smoke ? 'smoke' : values.quick ? 'quick' : 'full';
const PRESETS = {
  full: { rounds: 5, seconds: 3, imageMiB: 100, uploadMiB: 64, uploads: 5, signerTime: 400, memoryDigests: 1_000_000, memoryHttpDigests: 1_000_000, memoryHttpSeconds: 240 },
  quick: { rounds: 2, seconds: 1, imageMiB: 24, uploadMiB: 16, uploads: 1, signerTime: 50, memoryDigests: 100_000, memoryHttpDigests: 40_000, memoryHttpSeconds: 8 },
  smoke: { rounds: 1, seconds: 1, imageMiB: 4, uploadMiB: 4, uploads: 1, signerTime: 30, memoryDigests: 20_000, memoryHttpDigests: 2_000, memoryHttpSeconds: 2 },
};
const preset = PRESETS[mode];
const only = values.only ? values.only.split(',').map((s) => s.trim()) : Object.keys(SCENARIOS);
for (const id of only) if (!SCENARIOS[id]) throw new Error(`--only: unknown scenario ${id}; known: ${Object.keys(SCENARIOS).join(', ')}`);

const dir = mkdtempSync(join(os.tmpdir(), 'rr-bench-'));
const log = (msg) => process.stderr.write(`${msg}\n`);
const ctx = {
  mode,
  smoke: mode === 'smoke',
  quick: mode !== 'full',
  ...preset,
  rounds: values.rounds ? Number(values.rounds) : preset.rounds,
  seconds: values.seconds ? Number(values.seconds) : preset.seconds,
  connections: values.connections ? Number(values.connections) : 50,
  dir,
  log,
};
ctx.shared = shared(ctx);

let stopping = false;
async function cleanup() {
  if (stopping) return;
  stopping = true;
  await closeShared().catch((err) => log(`cleanup: ${err.message}`));
  await stopAll();
  removeScratch();
  rmSync(dir, { recursive: true, force: true });
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    log(`\n${signal}: stopping everything the bench started`);
    void cleanup().finally(() => process.exit(130));
  });
}
process.once('exit', killAllSync);

const started = Date.now();
const machine = {
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model,
  memoryGiB: Math.round(os.totalmem() / 2 ** 30),
  loadAverageBefore: os.loadavg(),
  node: process.version,
  platform: `${os.type()} ${os.release()}`,
  loadGenerator: findWrk() ? `${wrkVersion()} (-t1, ${ctx.connections} connections)` : `autocannon (${ctx.connections} connections)`,
};
log(`registry-redirect bench (${mode}): ${machine.cpus} CPUs, load average ${machine.loadAverageBefore.map((l) => l.toFixed(2)).join(' ')}, ${machine.loadGenerator}`);

const rows = [];
const details = {};
const failures = {};
let exitCode = 0;
try {
  for (const id of only) {
    const scenario = await SCENARIOS[id]();
    const t0 = Date.now();
    log(`\n== ${id}. ${scenario.title}`);
    try {
      const result = await scenario.run(ctx);
      rows.push(...result.rows.map(judge));
      details[id] = result.details;
    } catch (err) {
      // One broken scenario must not hide the others: report it and carry on.
      exitCode = 1;
      failures[id] = String(err?.stack ?? err);
      log(`scenario ${id} FAILED: ${err?.stack ?? err}`);
      rows.push(judge({ id: `${id}`, title: `${scenario.title}: FAILED (${String(err?.message ?? err).split('\n')[0].slice(0, 80)})`, value: Number.NaN, unit: 'x' }));
    }
    log(`   (${((Date.now() - t0) / 1_000).toFixed(0)} s)`);
  }
} finally {
  await cleanup();
}

machine.loadAverageAfter = os.loadavg();
const wallSeconds = (Date.now() - started) / 1_000;
const date = new Date().toISOString().replace(/:/g, '-').replace(/\..+$/, '');
const outDir = values.out ?? join(ROOT, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const result = {
  date: new Date().toISOString(),
  mode,
  wallSeconds,
  machine,
  settings: { rounds: ctx.rounds, seconds: ctx.seconds, connections: ctx.connections, imageMiB: ctx.imageMiB, uploadMiB: ctx.uploadMiB, urlCacheInBuild: HAS_URL_CACHE },
  rows,
  details,
  failures,
};
const base = join(outDir, mode === 'full' ? date : `${date}-${mode}`);
writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
writeArtifacts(result, base, writeFileSync);

console.log(textTable(rows));
const notes = rows.filter((r) => r.note).map((r) => `  ${r.id}: ${r.note}`);
if (notes.length) console.log(`\nnotes:\n${notes.join('\n')}`);
console.log(`\n${mode} run, ${wallSeconds.toFixed(0)} s; machine: ${machine.cpus} CPUs, load average ${machine.loadAverageBefore[0].toFixed(2)} -> ${machine.loadAverageAfter[0].toFixed(2)}`);
console.log(`results: ${base}.json, ${base}.svg, ${base}.md`);
process.exitCode = exitCode;
