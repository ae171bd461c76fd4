import { pino, type DestinationStream, type Logger as PinoLogger, type LoggerOptions } from 'pino';
import type { ServerConfig } from './config.js';
import type PinoPretty from 'pino-pretty';

/** pino-pretty's factory (an optional peer, imported only for `log.format: pretty`). */
type PrettyFactory = typeof PinoPretty;

const importPretty = async (): Promise<PrettyFactory> => (await import('pino-pretty')).default;

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
  options: { destination?: DestinationStream; stdout?: { isTTY?: boolean }; importPretty?: () => Promise<PrettyFactory> } = {},
): Promise<PinoLogger> {
  const settings: LoggerOptions = { level: log.level, base };
  // Synchronous writes to stdout, as Node's own process.stdout does for files and pipes on Linux:
  // pino's default asynchronous stdout hands lines to the thread pool, and what it is handed in
  // an `exit` handler (the access log's last lines) never reaches the file. The access log joins
  // its lines into one write per 20 ms, so waiting for the write costs nothing measurable.
  const json = (): PinoLogger => pino(settings, options.destination ?? pino.destination({ dest: 1, sync: true }));
  if (logFormat(log, options.stdout) === 'json') return json();
  let pretty: PrettyFactory;
  try {
    pretty = await (options.importPretty ?? importPretty)();
  } catch (err) {
    // pino-pretty is an optional peer: an install without it still runs, with JSON lines.
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND' || !String((err as Error).message).includes('pino-pretty')) throw err;
    const logger = json();
    logger.warn({ format: 'pretty' }, 'log.format pretty needs the pino-pretty package (npm install pino-pretty); writing JSON lines');
    return logger;
  }
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
