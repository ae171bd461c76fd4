/**
 * Imported by the CLI right after the Node version check, before any dependency: `serve` replaces
 * its own process image (`process.execve`, same pid, same stdio and signals) with one started with
 * `--max-semi-space-size`, unless the user chose a value.
 *
 * Why: Node sizes V8's young generation from the host's memory (two 64 MiB semi-spaces on a 16+ GiB
 * host), and a proxy answering many distinct blobs grows into it and keeps the pages: RSS ends far
 * above the caches' bound. The flag only works on the command line (`v8.setFlagsFromString` does
 * not shrink a young generation V8 has already configured), and a shebang cannot pass it portably
 * (`env -S` is missing from BusyBox). So the CLI restarts itself once, before it has loaded
 * anything, which costs one Node start (tens of milliseconds) on the way to listening.
 */

/** MiB per semi-space `serve` runs with; docs/performance.md (memory) has the measurements. */
export const SEMI_SPACE_MIB = 16;

/** V8 accepts either spelling. */
const SEMI_SPACE_FLAG = /(?:^|\s)--max[-_]semi[-_]space[-_]size(?:[=\s]|$)/;

/**
 * The argv to re-exec with, or undefined when this process should keep running as it is: not
 * `serve`; the user set the flag (in NODE_OPTIONS or on node's command line; `=0` restores
 * Node's own sizing); a cluster worker (it inherits the primary's flags, and must keep its IPC
 * channel); a child with an IPC channel to its parent; no `process.execve` (Windows).
 */
export function semiSpaceArgv(proc: Pick<NodeJS.Process, 'argv' | 'execArgv' | 'execPath' | 'env' | 'platform'> & { execve?: unknown }): string[] | undefined {
  const [, script, command, ...rest] = proc.argv;
  if (command !== 'serve' || script === undefined) return undefined;
  if (rest.includes('--help') || rest.includes('-h')) return undefined;
  if (typeof proc.execve !== 'function' || proc.platform === 'win32') return undefined;
  if (proc.env.NODE_UNIQUE_ID !== undefined || proc.env.NODE_CHANNEL_FD !== undefined) return undefined;
  if (SEMI_SPACE_FLAG.test(proc.env.NODE_OPTIONS ?? '') || proc.execArgv.some((a) => SEMI_SPACE_FLAG.test(a))) return undefined;
  return [proc.execPath, `--max-semi-space-size=${SEMI_SPACE_MIB}`, ...proc.execArgv, script, command, ...rest];
}

const argv = semiSpaceArgv(process);
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
