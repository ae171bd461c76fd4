#!/usr/bin/env node
// First: on an old Node, one line and exit 1 before any dependency is evaluated.
import './require-node.js';
// Second: `serve` re-execs itself with a capped V8 young generation before loading anything.
import './semi-space.js';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { RegistryRedirectError } from '../errors.js';
import { errorForLog } from '../log.js';
import { CONFIG_DOCS } from './docs-links.js';

// Commands import what they need when they run: `--version` and `--help` load nothing else, and
// `serve` loads only the signer modules (and cloud SDKs) its config names.

const USAGE = `registry-redirect: 307 blob redirects to signed storage URLs in front of any OCI registry

Usage:
  registry-redirect serve --config FILE.yaml   run the reverse proxy
  registry-redirect check --config FILE.yaml [--repository R --digest D]
                                               validate the config, sign, and prove storage accepts it
  registry-redirect --version                  print the version
  registry-redirect --help                     this text

Configuration: ${CONFIG_DOCS}`;

const SERVE_USAGE = `Usage: registry-redirect serve --config FILE.yaml [--workers N]

Runs the reverse proxy. SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0.
SIGHUP (or saving the file, unless reload.watch is false): reload the config; an invalid one is rejected and the old one keeps serving.
--workers N: N server processes sharing the port (node:cluster), e.g. one per core; metrics then need metrics.listen.

Configuration: ${CONFIG_DOCS}`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Set by `serve` in a worker process of `serve --workers N`. */
let isClusterWorker = false;

async function serve(args: string[]): Promise<number> {
  const usage = (problem: string): number => {
    console.error(`registry-redirect serve: ${problem}\n\n${SERVE_USAGE}`);
    return 2;
  };
  let values;
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' }, workers: { type: 'string', short: 'w' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) return usage((err as Error).message);
    throw err;
  }
  if (values.help) {
    console.log(SERVE_USAGE);
    return 0;
  }
  if (!values.config) return usage('--config FILE.yaml is required');
  // V8's compiled code of this package and its dependencies, kept on disk between starts (in
  // NODE_COMPILE_CACHE, else the OS temp dir; NODE_DISABLE_COMPILE_CACHE=1 turns it off): ~30-50 ms
  // less to answer /healthz. Where the directory is not writable, Node just compiles as usual.
  process.getBuiltinModule('node:module').enableCompileCache?.();
  const [{ parseWorkers, runPrimary, shareMetricsWithPrimary }, { loadConfig }, { createServerLogger }, { describeSigners }, { startServer }] = await Promise.all([
    import('./cluster.js'),
    import('./config.js'),
    import('./logger.js'),
    import('./preflight.js'),
    import('./server.js'),
  ]);
  let workers: number;
  try {
    workers = parseWorkers(values.workers);
  } catch (err) {
    return usage((err as Error).message);
  }
  // node:cluster loads child_process, net and worker_threads: only `serve` needs it.
  const { default: cluster } = await import('node:cluster');
  isClusterWorker = cluster.isWorker;
  const config = await loadConfig(values.config);
  const logger = await createServerLogger(config.log, { name: 'registry-redirect', ...(cluster.isWorker && { worker: cluster.worker?.id }) });
  if (workers > 1 && cluster.isPrimary) return runPrimary({ workers, config, logger });
  // A worker of `--workers N`: the primary serves the metrics listener, summed over workers.
  const running = await startServer(config, logger, { configPath: values.config, metricsListener: !cluster.isWorker });
  if (cluster.isWorker && running.metrics) shareMetricsWithPrimary(running.metrics);
  // Signal handlers first: a SIGTERM that arrives while the startup line is being put together
  // must still shut down gracefully.
  const onHangup = () => void running.reload('SIGHUP');
  process.on('SIGHUP', onHangup);
  const stopped = new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGHUP', onHangup);
      logger.info({ signal }, 'shutting down');
      running.close().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ error: errorForLog(err) }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  logger.info(
    {
      config: values.config,
      listen: running.url,
      metrics: running.metricsUrl,
      ...(running.originUrls.length ? { origin: running.originUrls } : {}),
      upstream: config.upstream.href,
      signers: await describeSigners(config, running.preflight?.results()),
      authorize: config.authorize.mode,
      preflight: config.preflight,
    },
    'registry-redirect listening',
  );
  return stopped;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'serve':
        return await serve(rest);
      case 'check':
        return await (await import('./check.js')).checkCommand(rest);
      case '--version':
      case '-v':
      case 'version':
        console.log(version());
        return 0;
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        console.log(USAGE);
        return command === undefined ? 2 : 0;
      default:
        console.error(`registry-redirect: unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof RegistryRedirectError && err.code === 'DEPENDENCY_MISSING') {
      console.error(`registry-redirect: ${err.message}`);
      return 1;
    }
    if (err instanceof RegistryRedirectError && err.code === 'CONFIG_INVALID') {
      console.error(`registry-redirect: invalid configuration:\n${err.message}`);
      return 1;
    }
    if (err instanceof TypeError && (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`registry-redirect: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    console.error(`registry-redirect: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  // A worker of `serve --workers`: its IPC channel to the primary would keep it alive.
  if (isClusterWorker) process.disconnect?.();
  // Let pino flush; the server is closed, so the event loop drains and the process exits.
});
