import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findBinary, requireBinary } from '../support/binaries.js';
import { ROOT, runNode } from '../helpers/package.js';

const DEMO = join(ROOT, 'scripts/demo.mjs');
const has = requireBinary('docker-registry') && requireBinary('skopeo');
const TRAIL_LINE = /^ {6}GET \/v2\/demo\/hello\/blobs\/sha256:[0-9a-f]{12}… -> 307 Location: http:\/\/127\.0\.0\.2:\d+\/devstoreaccount1\/registry\/docker\/registry\/v2\/blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{12}…\/data\?.*sp=r.*&sig=<redacted>$/gm;

/** `npm run demo` (after its build step): the script users run, as a child process, bounded. */
describe('npm run demo', () => {
  (has ? it.concurrent : it.skip)('with docker-registry and skopeo: pushes and pulls through the proxy, prints the 307 trail, exits 0', async () => {
    const run = await runNode([DEMO], ROOT, { ...process.env }, 90_000);
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toMatch(/upstream registry: distribution/);
    expect(run.stdout).toMatch(/pushed demo\/hello:v1 \(3 blobs\) through the proxy with skopeo/);
    expect(run.stdout).toMatch(/pulled demo\/hello:v1 through the proxy with skopeo/);
    expect(run.stdout.match(TRAIL_LINE)).toHaveLength(3);
    expect(run.stdout).toMatch(/GET \/v2\/demo\/hello\/manifests\/v1 -> 200/);
    expect(run.stdout).toMatch(/3 of 3 blob GETs answered with 307 to storage/);
    expect(run.stdout).not.toMatch(/sig=(?!<redacted>)/);
    expect(run.stdout.trimEnd().endsWith('stopped everything.')).toBe(true);
  }, 100_000);

  it.concurrent('without docker-registry and skopeo: says so, uses the Node example registry and a fetch walk-through, exits 0', async () => {
    // PATH holds only the Node binary's directory: no docker-registry, no skopeo.
    const path = dirname(process.execPath);
    expect(findBinary(join(path, 'docker-registry'))).toBeUndefined();
    const run = await runNode([DEMO], ROOT, { PATH: path, HOME: process.env.HOME }, 90_000);
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toMatch(/docker-registry is not installed \(Debian\/Ubuntu: apt-get install docker-registry\)/);
    expect(run.stdout).toMatch(/upstream registry: the Node registry of examples\/express-node-registry/);
    expect(run.stdout).toMatch(/through the proxy with fetch \(skopeo is not installed; apt-get install skopeo\)/);
    expect(run.stdout.match(/storage GET \S+ -> \d+ bytes, sha256 verified/g)).toHaveLength(3);
    expect(run.stdout.match(TRAIL_LINE)).toHaveLength(3);
    expect(run.stdout).toMatch(/3 of 3 blob GETs answered with 307 to storage/);
  }, 100_000);

  it('is bounded: past DEMO_TIMEOUT_MS it stops what it started and exits 1', async () => {
    const run = await runNode([DEMO], ROOT, { ...process.env, DEMO_TIMEOUT_MS: '300' }, 30_000);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/still not done after 300 ms; stopping everything/);
  }, 40_000);
});
