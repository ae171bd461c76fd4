/**
 * Imported by the CLI right after the Node version check, before any dependency: `serve` replaces
 * its own process image (`process.execve`, same pid, same stdio and signals) with one started with
 * `--max-semi-space-size` and `--max-old-space-size`, unless the user chose values.
 *
 * Why: Node sizes V8's heap from the host's memory (two 64 MiB semi-spaces and a ~4 GiB heap limit
 * on a 16+ GiB host), and V8 grows a heap with a large limit generously: a proxy answering many
 * distinct blobs ends far above the caches' bound in RSS, in pages V8 keeps. Measured with 1M
 * distinct digests through the caches in one process: 477 MiB with Node's sizing, 338 MiB with
 * 16 MiB semi-spaces, about 210 MiB with a 1 GiB old space as well (its live heap: 29 MiB). The
 * flags only work on the command line (`v8.setFlagsFromString` does not resize a heap V8 has
 * already configured), and a shebang cannot pass them portably (`env -S` is missing from BusyBox).
 * So the CLI restarts itself once, before it has loaded anything, which costs one Node start (tens
 * of milliseconds) on the way to listening. The old-space limit is only ever lowered: a host or
 * container whose memory already gives a smaller one keeps it; `startServer` refuses caches whose
 * byte bounds do not fit the limit.
 */

/** MiB per semi-space `serve` runs with; docs/performance.md (memory) has the measurements. */
export const SEMI_SPACE_MIB = 16;

/** MiB of old space `serve` runs with when Node would allow more (see above). */
export const OLD_SPACE_MIB = 1024;

/** V8 accepts either spelling. */
const SEMI_SPACE_FLAG = /(?:^|\s)--max[-_]semi[-_]space[-_]size(?:[=\s]|$)/;
/** Either of these sets the old space's limit. */
const OLD_SPACE_FLAG = /(?:^|\s)--max[-_](?:old[-_]space|heap)[-_]size(?:[=\s]|$)/;

/**
 * The argv to re-exec with, or undefined when this process should keep running as it is: not
 * `serve`; the user set both flags (in NODE_OPTIONS or on node's command line; `=0` restores
 * Node's own sizing) or set one and Node's heap limit is already at most {@link OLD_SPACE_MIB}; a
 * cluster worker (it inherits the primary's flags, and must keep its IPC channel); a child with
 * an IPC channel to its parent; no `process.execve` (Windows). `heapLimitMiB` is this process's V8
 * heap limit.
 */
export function semiSpaceArgv(
  proc: Pick<NodeJS.Process, 'argv' | 'execArgv' | 'execPath' | 'env' | 'platform'> & { execve?: unknown },
  heapLimitMiB: number,
): string[] | undefined {
  const [, script, command, ...rest] = proc.argv;
  if (command !== 'serve' || script === undefined) return undefined;
  if (rest.includes('--help') || rest.includes('-h')) return undefined;
  if (typeof proc.execve !== 'function' || proc.platform === 'win32') return undefined;
  if (proc.env.NODE_UNIQUE_ID !== undefined || proc.env.NODE_CHANNEL_FD !== undefined) return undefined;
  const userSet = (flag: RegExp): boolean => flag.test(proc.env.NODE_OPTIONS ?? '') || proc.execArgv.some((a) => flag.test(a));
  const flags: string[] = [];
  if (!userSet(SEMI_SPACE_FLAG)) flags.push(`--max-semi-space-size=${SEMI_SPACE_MIB}`);
  // The heap limit counts the young generation too; only a larger limit than ours is lowered.
  if (!userSet(OLD_SPACE_FLAG) && heapLimitMiB > OLD_SPACE_MIB + 3 * SEMI_SPACE_MIB) flags.push(`--max-old-space-size=${OLD_SPACE_MIB}`);
  if (flags.length === 0) return undefined;
  return [proc.execPath, ...flags, ...proc.execArgv, script, command, ...rest];
}

const argv = semiSpaceArgv(process, process.getBuiltinModule('node:v8').getHeapStatistics().heap_size_limit / 2 ** 20);
if (argv) {
  try {
    // Does not return. Node's ExperimentalWarning for execve is queued for the next tick, which
    // this process image never reaches, so stderr stays clean.
    process.execve!(process.execPath, argv, process.env);
  } catch {
    // The exec itself failed (e.g. a seccomp policy): run on with Node's default sizing. The
    // queued warning is printed then, which is the right thing to see.
  }
}
