// What `serve` loads before it answers /healthz without metrics: not prom-client (~30 ms of
// start-up, only metrics need it), and one build of zod, not its ESM and CommonJS builds both.
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { freePort } from '../support/ports.js';

const DIST = new URL('../../dist/server/', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'rr-cold-'));

// The CLI's `serve` path (cli.ts): the same modules, then loadConfig and startServer, with a
// module hook recording every file loaded (import and require alike).
const PROBE = `
import { registerHooks } from 'node:module';
const loaded = new Set();
registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); loaded.add(r.url); return r; } });
const [, , dist, file] = process.argv;
const [, { loadConfig }, { createServerLogger }, , { startServer }] = await Promise.all(
  ['cluster', 'config', 'logger', 'preflight', 'server'].map((m) => import(dist + m + '.js')),
);
const config = await loadConfig(file);
const running = await startServer(config, await createServerLogger(config.log, { name: 'probe' }), { configPath: file, metricsListener: true });
const res = await fetch(running.url + '/healthz');
const urls = [...loaded];
console.log(JSON.stringify({
  healthz: res.status,
  zodEntries: urls.filter((u) => /\\/node_modules\\/zod\\/index\\.c?js$/.test(u)).map((u) => u.slice(u.lastIndexOf('/') + 1)),
  promClient: urls.some((u) => u.includes('/node_modules/prom-client/')),
}));
await running.close();
`;

async function probe(extra: string) {
  const port = await freePort();
  const file = join(dir, `proxy-${port}.yaml`);
  writeFileSync(file, `listen: 127.0.0.1:${port}\nupstream: http://127.0.0.1:9\npreflight: off\nreload: { watch: false }\nlog: { level: warn }\nsigner:\n  hmac: { baseUrl: "https://cdn.example.com", key: k, preset: cloudflare }\n${extra}`);
  const script = join(dir, 'probe.mjs');
  writeFileSync(script, PROBE);
  const { stdout } = await promisify(execFile)(process.execPath, [script, DIST, file], { timeout: 30_000 });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as { healthz: number; zodEntries: string[]; promClient: boolean };
}

describe('serve start-up: what it loads', () => {
  it('without metrics: no prom-client; zod once (its CommonJS build, as the signers require it)', async () => {
    const r = await probe('');
    expect(r.healthz).toBe(200);
    expect(r.promClient).toBe(false);
    expect(r.zodEntries).toEqual(['index.cjs']);
  });

  it('with metrics: prom-client is there (the check above can fail)', async () => {
    const r = await probe('metrics: { path: /metrics }\n');
    expect(r.healthz).toBe(200);
    expect(r.promClient).toBe(true);
  });
});
