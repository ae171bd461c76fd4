// When `serve` re-execs itself with a capped V8 heap, with which flags, and when it must not.
import { describe, expect, it } from 'vitest';
import { OLD_SPACE_MIB, SEMI_SPACE_MIB, semiSpaceArgv } from '../../src/server/semi-space.js';

const NODE = '/usr/bin/node';
const CLI = '/app/dist/server/cli.js';
const SEMI = `--max-semi-space-size=${SEMI_SPACE_MIB}`;
const OLD = `--max-old-space-size=${OLD_SPACE_MIB}`;
/** Node's heap limit on a 16+ GiB host, and on a small container. */
const LARGE = 4288;
const SMALL = 512;
const proc = (over: { argv?: string[]; execArgv?: string[]; env?: NodeJS.ProcessEnv; platform?: NodeJS.Platform; execve?: unknown } = {}) => ({
  argv: over.argv ?? [NODE, CLI, 'serve', '--config', 'proxy.yaml'],
  execArgv: over.execArgv ?? [],
  execPath: NODE,
  env: over.env ?? {},
  platform: over.platform ?? ('linux' as NodeJS.Platform),
  execve: 'execve' in over ? over.execve : () => undefined,
});

describe('semiSpaceArgv', () => {
  it('serve: the same command line with the flags first, then node flags the user gave', () => {
    expect(semiSpaceArgv(proc(), LARGE)).toEqual([NODE, SEMI, OLD, CLI, 'serve', '--config', 'proxy.yaml']);
    expect(semiSpaceArgv(proc({ execArgv: ['--enable-source-maps'], argv: [NODE, CLI, 'serve', '-c', 'p.yaml', '--workers', '2'] }), LARGE)).toEqual([
      NODE,
      SEMI,
      OLD,
      '--enable-source-maps',
      CLI,
      'serve',
      '-c',
      'p.yaml',
      '--workers',
      '2',
    ]);
  });

  it('the old-space limit is only ever lowered: a heap limit Node already sized small is kept', () => {
    expect(semiSpaceArgv(proc(), SMALL)).toEqual([NODE, SEMI, CLI, 'serve', '--config', 'proxy.yaml']);
    expect(semiSpaceArgv(proc(), OLD_SPACE_MIB)).toEqual([NODE, SEMI, CLI, 'serve', '--config', 'proxy.yaml']);
  });

  it('a value the user chose wins, per flag: NODE_OPTIONS or node flags, either spelling, 0 included', () => {
    for (const options of ['--max-semi-space-size=8', '--max-semi-space-size 8', '--inspect --max_semi_space_size=32', '--max-semi-space-size=0']) {
      expect(semiSpaceArgv(proc({ env: { NODE_OPTIONS: options } }), LARGE), options).toEqual([NODE, OLD, CLI, 'serve', '--config', 'proxy.yaml']);
    }
    for (const options of ['--max-old-space-size=2048', '--max_old_space_size 512', '--max-heap-size=300']) {
      expect(semiSpaceArgv(proc({ env: { NODE_OPTIONS: options } }), LARGE), options).toEqual([NODE, SEMI, CLI, 'serve', '--config', 'proxy.yaml']);
    }
    expect(semiSpaceArgv(proc({ env: { NODE_OPTIONS: '--max-semi-space-size=8 --max-old-space-size=4096' } }), LARGE)).toBeUndefined();
    expect(semiSpaceArgv(proc({ execArgv: ['--max-semi-space-size=4', '--max-old-space-size=700'] }), LARGE)).toBeUndefined();
    expect(semiSpaceArgv(proc({ execArgv: ['--max-semi-space-size=4'] }), SMALL)).toBeUndefined();
    // Other flags that merely contain the words do not count.
    expect(semiSpaceArgv(proc({ env: { NODE_OPTIONS: '--min-semi-space-size=1 --initial-old-space-size=10' } }), LARGE)).toEqual([NODE, SEMI, OLD, CLI, 'serve', '--config', 'proxy.yaml']);
  });

  it('not for other commands, --help, cluster workers, children with an IPC channel, or without execve', () => {
    expect(semiSpaceArgv(proc({ argv: [NODE, CLI, 'check', '--config', 'p.yaml'] }), LARGE)).toBeUndefined();
    expect(semiSpaceArgv(proc({ argv: [NODE, CLI, '--version'] }), LARGE)).toBeUndefined();
    expect(semiSpaceArgv(proc({ argv: [NODE, CLI, 'serve', '--help'] }), LARGE)).toBeUndefined();
    expect(semiSpaceArgv(proc({ env: { NODE_UNIQUE_ID: '1' } }), LARGE)).toBeUndefined();
    expect(semiSpaceArgv(proc({ env: { NODE_CHANNEL_FD: '3' } }), LARGE)).toBeUndefined();
    expect(semiSpaceArgv(proc({ execve: undefined }), LARGE)).toBeUndefined();
    expect(semiSpaceArgv(proc({ platform: 'win32' }), LARGE)).toBeUndefined();
  });
});
