/**
 * The Node version check: the function, the CLI entry with a stubbed `process.versions.node`
 * (a preload), and the real Node 20 of this machine running the built CLI and the npm scripts' check.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { REQUIRED_NODE, nodeVersionProblem } from '../../src/server/node-version.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const CLI_TS = fileURLToPath(new URL('../../src/server/cli.ts', import.meta.url));
const CLI_JS = fileURLToPath(new URL('../../dist/server/cli.js', import.meta.url));
const CHECK = fileURLToPath(new URL('../../scripts/check-node.mjs', import.meta.url));
const HOOKS = new URL('../support/ts-hooks.mjs', import.meta.url).href;
const REGISTER = `data:text/javascript,import{register}from'node:module';register(${JSON.stringify(HOOKS)});`;
const stub = (version: string) => `data:text/javascript,Object.defineProperty(process.versions,'node',{value:${JSON.stringify(version)}});`;
const LINE = /^registry-redirect needs Node\.js >= 22\.15 \(this is 20\.19\.2\); install Node 22 LTS or newer from https:\/\/nodejs\.org\/en\/download \(or: nvm install 22\), or run the container image$/;

/** The Debian/Ubuntu default Node, when this machine has an old one. */
const systemNode = ['/usr/bin/node', '/usr/bin/nodejs'].find((p) => existsSync(p) && nodeVersionProblem(spawnSync(p, ['-p', 'process.versions.node']).stdout.toString().trim()) !== undefined);

function run(cmd: string, args: string[]) {
  const r = spawnSync(cmd, args, { cwd: root, env: { PATH: process.env.PATH }, timeout: 20_000 });
  return { code: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

describe('Node version check', () => {
  it.each([
    ['20.19.2', true],
    ['22.14.9', true],
    ['v18.0.0', true],
    ['22.15.0', false],
    ['22.20.1', false],
    ['24.0.0', false],
  ])('%s is too old: %s', (version, old) => {
    expect(nodeVersionProblem(version) !== undefined).toBe(old);
  });

  it(`the one line names ${REQUIRED_NODE}'s major.minor, the version found and where to get Node`, () => {
    expect(nodeVersionProblem('20.19.2')).toMatch(LINE);
    expect(nodeVersionProblem()).toBeUndefined();
  });

  it('the CLI entry on a stubbed Node 20 prints the line and exits 1 before doing anything', () => {
    const r = run(process.execPath, ['--no-warnings', '--import', REGISTER, '--import', stub('20.19.2'), CLI_TS, '--version']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(LINE);
    expect(r.stdout).toBe('');
    const ok = run(process.execPath, ['--no-warnings', '--import', REGISTER, '--import', stub('22.15.0'), CLI_TS, '--version']);
    expect(ok.code).toBe(0);
  });

  it('scripts/check-node.mjs (run first by npm start and npm test) says the same', () => {
    const old = run(process.execPath, ['--import', stub('20.19.2'), CHECK]);
    expect(old.code).toBe(1);
    expect(old.stderr.trim()).toMatch(LINE);
    expect(run(process.execPath, [CHECK])).toMatchObject({ code: 0, stderr: '' });
  });

  it.skipIf(!systemNode)('the real old Node of this machine: check-node.mjs and the built CLI exit 1 with the line', () => {
    const check = run(systemNode!, [CHECK]);
    expect(check.code).toBe(1);
    expect(check.stderr).toMatch(/^registry-redirect needs Node\.js >= 22\.15 \(this is 20\./);
    if (existsSync(CLI_JS)) {
      const cli = run(systemNode!, [CLI_JS, '--version']);
      expect(cli.code).toBe(1);
      expect(cli.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^registry-redirect needs Node\.js >= 22\.15 \(this is 20\./)]);
    }
  });
});
