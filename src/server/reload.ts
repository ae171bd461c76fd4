import { createHash } from 'node:crypto';
import { watch, readFileSync, type FSWatcher } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname } from 'node:path';
import { errorForLog } from '../log.js';
import type { PrometheusMetrics } from '../metrics.js';
import type { Logger, RegistryRedirectMiddleware } from '../types.js';
import { isOriginSigner } from '../signers/origin.js';
import { loadConfig, type ServerConfig } from './config.js';
import { assertWriteEndpoint } from './push-config.js';
import { onResponseClose } from './response.js';

/** One configuration in service: its middleware and how many requests it is still answering. */
interface Generation {
  readonly config: ServerConfig;
  readonly middleware: RegistryRedirectMiddleware;
  inflight: number;
  retired: boolean;
  closed?: Promise<void>;
}

/** A handler whose configuration can be replaced while it serves. */
export interface HotMiddleware {
  /** Serves a request with the configuration current when it arrived, start to end. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** The configuration and middleware serving new requests. */
  current(): { readonly config: ServerConfig; readonly middleware: RegistryRedirectMiddleware };
  /**
   * Builds a middleware for `config` (throws if it is invalid: the current one keeps serving), then
   * makes it current in one assignment. The previous one stops probing at once and is closed when
   * its last in-flight request ends (a long proxied blob download is never cut).
   */
  swap(config: ServerConfig): void;
  /** Closes every generation (after the server stopped accepting requests). */
  close(): Promise<void>;
}

function closeSigners(config: ServerConfig): void {
  for (const signer of new Set([config.signer, ...Object.values(config.signers)])) void signer.close?.();
}

/** Creates the swappable handler; `build` turns a validated config into a middleware. */
export function createHotMiddleware(build: (config: ServerConfig) => RegistryRedirectMiddleware, initial: ServerConfig, logger: Logger): HotMiddleware {
  let current: Generation = { config: initial, middleware: build(initial), inflight: 0, retired: false };
  const retiring = new Set<Generation>();

  const finish = (g: Generation): Promise<void> => {
    g.closed ??= g.middleware.close().catch((err: unknown) => logger.warn({ error: errorForLog(err) }, 'closing the previous configuration failed'));
    void g.closed.finally(() => retiring.delete(g));
    return g.closed;
  };

  return {
    handle(req, res) {
      const g = current;
      g.inflight++;
      onResponseClose(res, () => {
        g.inflight--;
        if (g.retired && g.inflight === 0) void finish(g);
      });
      g.middleware(req, res);
    },
    current: () => current,
    swap(config) {
      let middleware: RegistryRedirectMiddleware;
      try {
        middleware = build(config);
      } catch (err) {
        closeSigners(config);
        throw err;
      }
      const old = current;
      current = { config, middleware, inflight: 0, retired: false };
      old.retired = true;
      old.middleware.health.close();
      retiring.add(old);
      if (old.inflight === 0) void finish(old);
    },
    async close() {
      current.retired = true;
      await Promise.all([finish(current), ...[...retiring].map(finish)]);
    },
  };
}

/**
 * What a reload did: applied (`changed`: the file differs from the last one read; an unchanged
 * file is applied anyway, e.g. to rebuild signers) or rejected with the validation error.
 */
export type ReloadResult = { ok: true; changed: boolean } | { ok: false; error: string };

/**
 * Where each origin listens: its own listener, or the main one. A reload cannot move them (the
 * listeners stay), and new URLs pointing at a listener that does not exist would break every pull,
 * so such a reload is rejected as a whole rather than applied in part.
 */
function originPlacement(c: ServerConfig): string {
  return JSON.stringify([c.signer, ...Object.values(c.signers ?? {})].filter(isOriginSigner).map((s) => s.origin.listen ?? c.listen));
}

/** Settings a running process cannot change; a reload that changes them warns and keeps them. */
function restartOnly(a: ServerConfig, b: ServerConfig): string[] {
  const out: string[] = [];
  if (a.listen.host !== b.listen.host || a.listen.port !== b.listen.port) out.push('listen');
  if (a.listenBacklog !== b.listenBacklog) out.push('listenBacklog');
  // The files' contents reload (see tls.ts); which files, and the listener's protocol, do not.
  if (JSON.stringify(a.tls) !== JSON.stringify(b.tls)) out.push('tls');
  if (JSON.stringify(a.metrics) !== JSON.stringify(b.metrics)) out.push('metrics');
  if (a.log.level !== b.log.level || a.log.requests !== b.log.requests || a.log.format !== b.log.format) out.push('log');
  if (a.timeouts.headers !== b.timeouts.headers) out.push('timeouts.headers');
  if (a.timeouts.shutdown !== b.timeouts.shutdown) out.push('timeouts.shutdown');
  if (a.timeouts.keepAlive !== b.timeouts.keepAlive) out.push('timeouts.keepAlive');
  if (a.limits.maxConnections !== b.limits.maxConnections) out.push('limits.maxConnections');
  if (a.reload.watch !== b.reload.watch) out.push('reload.watch');
  return out;
}

/** Options of {@link createConfigReloader}. */
export interface ConfigReloaderOptions {
  /** The YAML file to read again. */
  path: string;
  hot: HotMiddleware;
  logger: Logger;
  metrics?: PrometheusMetrics | undefined;
  /** Environment for `${VAR}` expansion. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Also reload when the file changes (fs.watch on its directory, debounced). Default true. */
  watch?: boolean;
  /** Debounce for file events, milliseconds. Default 200. */
  debounceMs?: number;
  /**
   * Runs on the new configuration before it is applied (the storage preflight): a rejection
   * rejects the reload; then `commit` runs once the configuration is current, or `abort` if it
   * could not be applied.
   */
  prepare?(config: ServerConfig): Promise<{ commit(): void; abort(): void }>;
}

/** Reloads the config file on demand (SIGHUP) and, optionally, when it changes. */
export interface ConfigReloader {
  /** Reads, validates and applies the file now. Reloads run one at a time. */
  reload(trigger: string): Promise<ReloadResult>;
  close(): void;
}

/**
 * Live reload: rollout, signers, breaker, timeouts, upstream and `onSignerError` are replaced
 * atomically (new requests see the new config; in-flight ones finish with the old). An invalid
 * file is rejected with an error log and a `registry_redirect_config_reloads_total{result="failure"}`,
 * and the old config keeps serving. Listen addresses, metrics and log settings need a restart.
 */
export function createConfigReloader(opts: ConfigReloaderOptions): ConfigReloader {
  const { path, hot, logger } = opts;
  let chain: Promise<unknown> = Promise.resolve();
  const fileHash = (): string | undefined => {
    try {
      return createHash('sha256').update(readFileSync(path)).digest('hex');
    } catch {
      return undefined;
    }
  };
  let lastHash = fileHash();

  const apply = async (trigger: string): Promise<ReloadResult> => {
    const hash = fileHash();
    let config: ServerConfig;
    try {
      config = await loadConfig(path, opts.env ?? process.env);
      let prepared: { commit(): void; abort(): void } | undefined;
      try {
        prepared = await opts.prepare?.(config);
      } catch (err) {
        for (const signer of new Set([config.signer, ...Object.values(config.signers)])) void signer.close?.();
        throw err;
      }
      const before = hot.current().config;
      if (originPlacement(before) !== originPlacement(config)) {
        closeSigners(config);
        throw new Error('signer.origin: an origin listener (signer.origin.listen, or listen for an origin on the main listener) changed or was added or removed; that needs a restart');
      }
      // A new write endpoint is proved a registry before any upload is steered to it.
      if (config.push && String(config.push.endpoint) !== String(before.push?.endpoint ?? '')) {
        try {
          await assertWriteEndpoint(config.push.endpoint, config.timeouts.authorize);
        } catch (err) {
          for (const signer of new Set([config.signer, ...Object.values(config.signers)])) void signer.close?.();
          throw err;
        }
      }
      const fixed = restartOnly(before, config);
      if (fixed.length) {
        logger.warn({ trigger, settings: fixed }, 'config reload: these settings need a restart; the running values stay');
      }
      try {
        hot.swap({
          ...config,
          listen: before.listen,
          listenBacklog: before.listenBacklog,
          tls: before.tls,
          metrics: before.metrics,
          log: before.log,
          reload: before.reload,
          timeouts: { ...config.timeouts, headers: before.timeouts.headers, shutdown: before.timeouts.shutdown, keepAlive: before.timeouts.keepAlive },
          limits: { ...config.limits, maxConnections: before.limits.maxConnections },
        });
      } catch (err) {
        prepared?.abort();
        throw err;
      }
      prepared?.commit();
    } catch (err) {
      opts.metrics?.reloaded(false);
      const error = errorForLog(err).message;
      logger.error({ trigger, path, error }, 'config reload rejected: the previous configuration keeps serving');
      lastHash = hash;
      return { ok: false, error };
    }
    const changed = hash !== lastHash;
    lastHash = hash;
    opts.metrics?.reloaded(true);
    opts.metrics?.retainSigners(['default', ...Object.keys(config.signers)]);
    hot.current().middleware.health.publish();
    logger.info(
      { trigger, path, signers: ['default', ...Object.keys(config.signers)], rollout: config.rollout ? (config.rollout.mode ?? 'enforce') : 'off' },
      'config reloaded',
    );
    return { ok: true, changed };
  };

  const reload = (trigger: string): Promise<ReloadResult> => {
    const next = chain.then(() => apply(trigger));
    chain = next.catch(() => undefined);
    return next;
  };

  let watcher: FSWatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  if (opts.watch ?? true) {
    // Watch the directory, not the file: editors and Kubernetes ConfigMaps replace the file
    // (rename or symlink swap), which ends a watch on the old inode.
    const name = basename(path);
    try {
      watcher = watch(dirname(path), { persistent: false }, (_event, file) => {
        if (file !== null && file !== name && !String(file).startsWith('..')) return;
        clearTimeout(timer);
        timer = setTimeout(() => {
          // Editors touch files without changing them; only a new content is a reload.
          if (fileHash() === lastHash) return;
          void reload('file changed');
        }, opts.debounceMs ?? 200);
        timer.unref();
      });
      watcher.on('error', (err) => logger.warn({ error: errorForLog(err), path }, 'config watch failed; SIGHUP still reloads'));
    } catch (err) {
      logger.warn({ error: errorForLog(err), path }, 'cannot watch the config file; SIGHUP still reloads');
    }
  }

  return {
    reload,
    close() {
      clearTimeout(timer);
      watcher?.close();
    },
  };
}
