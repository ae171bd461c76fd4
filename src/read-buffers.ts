/**
 * Node reads every request body into a new 64 KiB buffer per socket read, and a buffer is freed
 * only when a GC finds it dead. V8 counts these buffers as external memory and starts a GC for
 * them only near its 64 MiB external-memory limit, so during a large upload the dead read buffers
 * of the last ~64 MiB of body pile up: one 256 MiB upload grew `serve` by 49-74 MiB of RSS (bench
 * rows 4d and 4i; glibc keeps the freed pages for the next upload). The valve below collects them
 * earlier: every `checkEvery` bytes of request body, when the process's ArrayBuffers hold more
 * than `above` bytes, a minor GC. The buffers are young (little else is allocated while a body
 * streams), so a scavenge frees them. A scavenge alone takes about half a millisecond, but one
 * that lands during V8's incremental marking finishes the whole mark-compact (6-17 ms): uploads
 * lose 3-8% of their throughput for the bound (docs/performance.md, "The read-buffer valve").
 *
 * Only `serve` installs it ({@link installReadBufferValve}): a GC is the whole process's business,
 * and an application embedding the middleware keeps V8's own timing.
 */

/** Bytes of request body between two checks. */
export const CHECK_EVERY_BYTES = 4 * 2 ** 20;
/** ArrayBuffer bytes above which a check collects: what the valve lets a process hold. */
export const COLLECT_ABOVE_BYTES = 28 * 2 ** 20;

export interface ReadBufferValveOptions {
  /** Runs a minor GC. */
  collect: () => void;
  /** The process's ArrayBuffer bytes (live and not yet collected). */
  arrayBuffers?: () => number;
  checkEvery?: number;
  above?: number;
}

/** A `'data'` listener for request bodies: counts their bytes and collects when due. */
export type ReadBufferValve = (chunk: { length: number }) => void;

export function createReadBufferValve(options: ReadBufferValveOptions): ReadBufferValve {
  const { collect } = options;
  const arrayBuffers = options.arrayBuffers ?? (() => process.memoryUsage().arrayBuffers);
  const checkEvery = options.checkEvery ?? CHECK_EVERY_BYTES;
  const above = options.above ?? COLLECT_ABOVE_BYTES;
  let since = 0;
  return (chunk) => {
    since += chunk.length;
    if (since < checkEvery) return;
    since = 0;
    if (arrayBuffers() > above) collect();
  };
}

let installed: ReadBufferValve | undefined;

/** The valve request bodies are counted by, when `serve` installed one. */
export function readBufferValve(): ReadBufferValve | undefined {
  return installed;
}

/** Sets (or, with `undefined`, removes) the process's valve. */
export function setReadBufferValve(valve: ReadBufferValve | undefined): void {
  installed = valve;
}

/**
 * Installs the valve for this process (idempotent). The GC function comes from a context of its
 * own (`--expose-gc` is set only while that context is made), so no `gc` global appears in the
 * process's own context. Returns false when V8 refuses, and request bodies then stream as before.
 */
export function installReadBufferValve(): boolean {
  if (installed) return true;
  let gc: unknown = (globalThis as { gc?: unknown }).gc;
  if (typeof gc !== 'function') {
    // The process was not started with --expose-gc: expose it for one new context only.
    const v8 = process.getBuiltinModule('node:v8');
    const vm = process.getBuiltinModule('node:vm');
    try {
      v8.setFlagsFromString('--expose-gc');
      gc = vm.runInNewContext('typeof gc === "function" ? gc : undefined');
    } catch {
      gc = undefined;
    } finally {
      v8.setFlagsFromString('--no-expose-gc');
    }
  }
  if (typeof gc !== 'function') return false;
  const minor = { type: 'minor' };
  installed = createReadBufferValve({ collect: () => (gc as (options: object) => void)(minor) });
  return true;
}
