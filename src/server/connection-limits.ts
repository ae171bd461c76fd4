import { readFileSync } from 'node:fs';
import type { Server } from 'node:net';
import type { Logger } from '../types.js';

/** File descriptors kept back for upstream connections, log files, config reloads, the listener. */
const RESERVED_DESCRIPTORS = 128;

/**
 * The default `limits.maxConnections`: half of what the open-file limit leaves after a reserve,
 * because a client connection that streams through uses a second descriptor upstream. With
 * `ulimit -n 1024` that is 448; Node raises the soft limit to the hard one at startup, so this
 * reads the limit the process really has. `undefined` (no limit) where it cannot be read (not
 * Linux) or is unlimited.
 */
export function defaultMaxConnections(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return undefined;
    }
  }
  const m = /^Max open files\s+(\d+)\s/m.exec(text);
  if (!m) return undefined;
  const soft = Number(m[1]);
  return Math.max(64, Math.floor((soft - RESERVED_DESCRIPTORS) / 2));
}

/**
 * Applies `limits.maxConnections` (0: none; undefined: {@link defaultMaxConnections}). Node closes a
 * connection over the limit as soon as it is accepted; that is logged at most every 10 s, with a count.
 */
export function applyMaxConnections(server: Server, configured: number | undefined, logger: Logger): number | undefined {
  const max = configured === undefined ? defaultMaxConnections() : configured === 0 ? undefined : configured;
  if (max === undefined) return undefined;
  server.maxConnections = max;
  let dropped = 0;
  let lastLog = 0;
  server.on('drop', () => {
    dropped++;
    const now = Date.now();
    if (now - lastLog < 10_000) return;
    lastLog = now;
    logger.warn({ maxConnections: max, dropped }, 'connection limit reached: new connections are closed (limits.maxConnections)');
    dropped = 0;
  });
  return max;
}
