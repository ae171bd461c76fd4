// When `serve` re-execs itself with a capped V8 young generation, and when it must not.
import { describe, expect, it } from 'vitest';
import { SEMI_SPACE_MIB, semiSpaceArgv } from '../../src/server/semi-space.js';

const NODE = '/usr/bin/node';
const CLI = '/app/dist/server/cli.js';
const proc = (over: { argv?: string[]; execArgv?: string[]; env?: NodeJS.ProcessEnv; platform?: NodeJS.Platform; execve?: unknown } = {}) => ({
  argv: over.argv ?? [NODE, CLI, 'serve', '--config', 'proxy.yaml'],
  execArgv: over.execArgv ?? [],
  execPath: NODE,
  env: over.env ?? {},
  platform: over.platform ?? ('linux' as NodeJS.Platform),
  execve: 'execve' in over ? over.execve : () => undefined,
});

describe('semiSpaceArgv', () => {
  it('serve: the same command line with the flag first, then node flags the user gave', () => {
    expect(semiSpaceArgv(proc())).toEqual([NODE, `--max-semi-space-size=${SEMI_SPACE_MIB}`, CLI, 'serve', '--config', 'proxy.yaml']);
    expect(semiSpaceArgv(proc({ execArgv: ['--enable-source-maps'], argv: [NODE, CLI, 'serve', '-c', 'p.yaml', '--workers', '2'] }))).toEqual([
      NODE,
      `--max-semi-space-size=${SEMI_SPACE_MIB}`,
      '--enable-source-maps',
      CLI,
      'serve',
      '-c',
      'p.yaml',
      '--workers',
      '2',
    ]);
  });

  it('a value the user chose wins: NODE_OPTIONS or node flags, either spelling, 0 included', () => {
    for (const options of ['--max-semi-space-size=8', '--max-semi-space-size 8', '--inspect --max_semi_space_size=32', '--max-semi-space-size=0']) {
      expect(semiSpaceArgv(proc({ env: { NODE_OPTIONS: options } })), options).toBeUndefined();
    }
    expect(semiSpaceArgv(proc({ execArgv: ['--max-semi-space-size=4'] }))).toBeUndefined();
    // Other flags that merely contain the words do not count.
    expect(semiSpaceArgv(proc({ env: { NODE_OPTIONS: '--min-semi-space-size=1' } }))).toBeDefined();
  });

  it('not for other commands, --help, cluster workers, children with an IPC channel, or without execve', () => {
    expect(semiSpaceArgv(proc({ argv: [NODE, CLI, 'check', '--config', 'p.yaml'] }))).toBeUndefined();
    expect(semiSpaceArgv(proc({ argv: [NODE, CLI, '--version'] }))).toBeUndefined();
    expect(semiSpaceArgv(proc({ argv: [NODE, CLI, 'serve', '--help'] }))).toBeUndefined();
    expect(semiSpaceArgv(proc({ env: { NODE_UNIQUE_ID: '1' } }))).toBeUndefined();
    expect(semiSpaceArgv(proc({ env: { NODE_CHANNEL_FD: '3' } }))).toBeUndefined();
    expect(semiSpaceArgv(proc({ execve: undefined }))).toBeUndefined();
    expect(semiSpaceArgv(proc({ platform: 'win32' }))).toBeUndefined();
  });
});
