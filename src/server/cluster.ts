import cluster, { type Worker } from 'node:cluster';
import type http from 'node:http';
import type * as promClient from 'prom-client';
import { RegistryRedirectError } from '../errors.js';
import { requireDependency } from '../lazy.js';
import { errorForLog } from '../log.js';
import type { PrometheusMetrics } from '../metrics.js';
import type { Logger } from '../types.js';
import type { ServerConfig } from './config.js';
import { listenOn } from './observability.js';
import { createServer } from './node-http.js';

/** Most workers `serve --workers` starts. */
export const MAX_WORKERS = 64;
/** A worker that dies more often than this within {@link RESTART_WINDOW_MS} stops the whole server. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;

/**
 * prom-client, loaded only when metrics are configured: the CLI imports this module for every
 * `serve`, and prom-client alone costs ~30 ms of start-up.
 */
const aggregatorModule = () => requireDependency<typeof promClient>('prom-client');

/** Parses `--workers N` (default 1). */
export function parseWorkers(text: string | undefined): number {
  if (text === undefined) return 1;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_WORKERS) {
    throw new RegistryRedirectError('CONFIG_INVALID', `--workers: ${JSON.stringify(text)} is not a number of processes; write a whole number from 1 to ${MAX_WORKERS}, e.g. --workers 2 (one per CPU core)`);
  }
  return n;
}

/** Checks that `config` can run in several processes; throws CONFIG_INVALID naming the fix. */
export function validateForWorkers(config: ServerConfig): void {
  if (config.metrics && !config.metrics.listen) {
    throw new RegistryRedirectError(
      'CONFIG_INVALID',
      'metrics.listen: with --workers, metrics need their own listener (e.g. "metrics: { listen: 127.0.0.1:9090 }"): the primary process serves the sum of every worker there; on the main port a scrape would reach one worker only',
    );
  }
}

/** In a worker: answer the primary's metrics requests with this worker's registry. */
export function shareMetricsWithPrimary(metrics: PrometheusMetrics): void {
  const { AggregatorRegistry } = aggregatorModule();
  AggregatorRegistry.setRegistries([metrics.registry]);
  // Constructing one installs the worker's IPC listener for the primary's requests.
  new AggregatorRegistry();
}

/**
 * The primary of `serve --workers N`: forks N workers running the same command line (each one a
 * complete server: node:cluster hands them the listening socket, round-robin), serves the summed
 * metrics of all of them on `metrics.listen`, forwards SIGHUP (reload) and SIGTERM/SIGINT
 * (graceful shutdown) to every worker, and replaces a worker that dies (at most 5 times a minute,
 * then it stops). Resolves with the exit code.
 */
export async function runPrimary(opts: { workers: number; config: ServerConfig; logger: Logger }): Promise<number> {
  const { workers, config, logger } = opts;
  validateForWorkers(config);
  // The workers build their own signers; the primary's copies (from validating the file) go.
  for (const signer of new Set([config.signer, ...Object.values(config.signers ?? {})])) void signer.close?.();
  let stopping = false;
  let exitCode = 0;
  const restarts: number[] = [];
  const listening = new Set<number>();

  const aggregator = config.metrics?.listen ? new (aggregatorModule().AggregatorRegistry)() : undefined;
  let metricsServer: http.Server | undefined;

  const fork = (): Worker => {
    const worker = cluster.fork();
    worker.once('listening', () => listening.add(worker.id));
    return worker;
  };

  const stopWorkers = async (signal: NodeJS.Signals): Promise<void> => {
    const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead());
    await Promise.all(
      alive.map(
        (w) =>
          new Promise<void>((resolve) => {
            w.once('exit', () => resolve());
            w.process.kill(signal);
          }),
      ),
    );
  };

  return new Promise<number>((resolve) => {
    const finish = (code: number) => {
      process.off('SIGHUP', onHangup);
      void (async () => {
        await stopWorkers('SIGTERM');
        await new Promise<void>((r) => (metricsServer ? metricsServer.close(() => r()) : r()));
        resolve(Math.max(code, exitCode));
      })();
    };

    cluster.on('exit', (worker, code, signal) => {
      if (stopping) {
        if (code !== 0 && code !== null) exitCode = 1;
        return;
      }
      const everListened = listening.delete(worker.id);
      if (!everListened) {
        // It never got as far as listening: the next one would fail the same way.
        logger.error({ worker: worker.id, code, signal }, 'worker failed to start; stopping');
        stopping = true;
        finish(1);
        return;
      }
      const now = Date.now();
      restarts.push(now);
      while (restarts.length && now - restarts[0]! > RESTART_WINDOW_MS) restarts.shift();
      if (restarts.length > MAX_RESTARTS) {
        logger.error({ worker: worker.id, code, signal, restarts: restarts.length }, 'workers keep dying; stopping');
        stopping = true;
        finish(1);
        return;
      }
      logger.error({ worker: worker.id, code, signal }, 'worker died; starting another');
      fork();
    });

    const onHangup = () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
    };
    process.on('SIGHUP', onHangup);
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal, workers }, 'shutting down');
      finish(exitCode);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);

    for (let i = 0; i < workers; i++) fork();

    if (aggregator && config.metrics?.listen) {
      const path = config.metrics.path;
      metricsServer = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
        if (req.url !== path || (req.method !== 'GET' && req.method !== 'HEAD')) {
          res.writeHead(req.url === path ? 405 : 404, { 'Content-Type': 'text/plain' });
          res.end();
          return;
        }
        aggregator.clusterMetrics().then(
          (text) => {
            res.writeHead(200, { 'Content-Type': aggregator.contentType, 'Content-Length': Buffer.byteLength(text) });
            res.end(req.method === 'HEAD' ? undefined : text);
          },
          (err: unknown) => {
            logger.warn({ error: errorForLog(err) }, 'collecting worker metrics failed');
            res.writeHead(503, { 'Content-Type': 'text/plain' });
            res.end('metrics unavailable\n');
          },
        );
      });
      listenOn(metricsServer, config.metrics.listen).then(
        (url) => logger.info({ metrics: url, workers }, 'metrics of all workers listening'),
        (err: unknown) => {
          logger.error({ error: errorForLog(err) }, 'metrics listener failed');
          metricsServer = undefined;
          stopping = true;
          finish(1);
        },
      );
    }
  });
}
