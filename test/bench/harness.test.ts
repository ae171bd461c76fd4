import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const run = promisify(execFile);

interface Row {
  id: string;
  title: string;
  value: number | null;
  unit: string;
  target?: { op: string; value: number };
  met?: boolean;
}

/**
 * Keeps `npm run bench` from rotting: runs the real harness (process supervision, load generator,
 * report, JSON, chart) in smoke mode on two tiny scenarios. Structure only: timings are never
 * asserted (a loaded machine must not fail the suite).
 */
describe('bench harness (smoke mode)', () => {
  const out = mkdtempSync(join(tmpdir(), 'rr-bench-test-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('runs scenarios 1 and 6 and writes the table, the JSON and the SVG chart', async () => {
    const { stdout } = await run(process.execPath, ['bench/run.js', '--smoke', '--only', '1,6', '--out', out], { cwd: ROOT, timeout: 60_000 });
    const files = readdirSync(out);
    const json = files.find((f) => f.endsWith('-smoke.json'));
    const svg = files.find((f) => f.endsWith('-smoke.svg'));
    expect(json).toBeDefined();
    expect(svg).toBeDefined();

    const result = JSON.parse(readFileSync(join(out, json!), 'utf8')) as { mode: string; rows: Row[]; failures: Record<string, string>; machine: { cpus: number } };
    expect(result.mode).toBe('smoke');
    expect(result.failures).toEqual({});
    expect(result.machine.cpus).toBeGreaterThan(0);
    const ids = result.rows.map((r) => r.id);
    expect(ids).toEqual(expect.arrayContaining(['1a', '1b']));
    expect(ids.some((id) => id.startsWith('6'))).toBe(true);
    for (const row of result.rows) {
      expect(typeof row.title).toBe('string');
      expect(typeof row.unit).toBe('string');
      if (row.target) expect(['>=', '<=']).toContain(row.target.op);
    }
    const fastPath = result.rows.find((r) => r.id === '1a')!;
    expect(typeof fastPath.value).toBe('number');
    expect(typeof fastPath.met).toBe('boolean');

    expect(readFileSync(join(out, svg!), 'utf8')).toMatch(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(stdout).toMatch(/^#\s+scenario/m);
    expect(stdout).toContain('1a');
  }, 60_000);
});
