/**
 * Supervised child processes for real test servers (registry, Azurite).
 *
 * Keeps the tail of stdout/stderr for error messages, stops with SIGTERM then
 * SIGKILL, and kills anything still running when the test process exits so no
 * server outlives a crashed test worker.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

/** A running child with captured output tails. */
export interface Supervised {
  readonly child: ChildProcess;
  /** Last ~64 KiB of stdout+stderr, for error messages. */
  output(): string;
  /** Resolves with the exit code (or signal name) once the child has exited. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the child is gone. */
  stop(graceMs?: number): Promise<void>;
}

const MAX_TAIL = 64 * 1024;

/**
 * Spawn `cmd args` with stdin closed and stdout/stderr captured (tail only).
 */
export function supervise(cmd: string, args: string[], opts: SpawnOptions = {}): Supervised {
  installExitHook();
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let tail = '';
  const append = (c: Buffer): void => {
    tail += c.toString('utf8');
    if (tail.length > MAX_TAIL) tail = tail.slice(-MAX_TAIL);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exited = new Promise<number | string>((resolve) => {
    child.once('error', (err) => {
      append(Buffer.from(`\n[spawn error] ${err.message}\n`));
      live.delete(child);
      resolve(`error: ${err.message}`);
    });
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve(code ?? signal ?? 'unknown');
    });
  });
  return {
    child,
    exited,
    output: () => tail,
    async stop(graceMs = 3_000): Promise<void> {
      if (child.exitCode !== null || child.signalCode !== null || !live.has(child)) {
        await exited;
        return;
      }
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Live direct children of `pid` (e.g. cluster workers), from /proc (Linux). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}
