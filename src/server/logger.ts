import { pino, type DestinationStream, type Logger as PinoLogger, type LoggerOptions } from 'pino';
import type { ServerConfig } from './config.js';

/** `log.format` as the server applies it: what was configured, else pretty on a terminal only. */
export function logFormat(log: ServerConfig['log'], stdout: { isTTY?: boolean } = process.stdout): 'json' | 'pretty' {
  return log.format ?? (stdout.isTTY ? 'pretty' : 'json');
}

/**
 * The server's pino logger: JSON lines (for collectors), or pino-pretty's colored lines for a
 * person at a terminal. pino-pretty is imported only then: JSON is the hot path and needs nothing.
 * `destination` is for tests; default stdout.
 */
export async function createServerLogger(
  log: ServerConfig['log'],
  base: Record<string, unknown>,
  options: { destination?: DestinationStream; stdout?: { isTTY?: boolean } } = {},
): Promise<PinoLogger> {
  const settings: LoggerOptions = { level: log.level, base };
  if (logFormat(log, options.stdout) === 'json') return options.destination ? pino(settings, options.destination) : pino(settings);
  const { default: pretty } = await import('pino-pretty');
  return pino(
    settings,
    pretty({
      // In-process and synchronous, like the JSON logger: no worker thread, nothing lost on exit.
      sync: true,
      colorize: options.destination ? false : (options.stdout ?? process.stdout).isTTY === true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,name',
      singleLine: true,
      ...(options.destination ? { destination: options.destination } : {}),
    }),
  );
}
