import type http from 'node:http';
import type http2 from 'node:http2';
import { prometheusMetrics, type PrometheusMetrics } from '../metrics.js';
import { createOriginHandler, sharedHostWarning, type OriginHandler } from '../origin/server.js';
import { isOriginSigner } from '../signers/origin.js';
import { registryRedirect } from '../middleware.js';
import { installReadBufferValve } from '../read-buffers.js';
import type { Logger, Signer } from '../types.js';
import { assertCachesFitHeap, withCache } from './cache-config.js';
import { answerClientError, connectionsCheckInterval } from './client-errors.js';
import { applyMaxConnections } from './connection-limits.js';
import type { ServerConfig } from './config.js';
import { accessLog, listenOn, startMetricsServer } from './observability.js';
import { runPreflight, type PreflightTracker } from './preflight.js';
import { PROBE_HEADER, assertWriteEndpoint } from './push-config.js';
import { createReadinessHandler } from './readiness.js';
import { ServedResponse } from './response.js';
import { createConfigReloader, createHotMiddleware, type ReloadResult } from './reload.js';
import { createListener, createTlsReloader, type TlsReloadResult } from './tls.js';
import { createServer } from './node-http.js';

const HEALTH_BODY = '{"status":"ok"}';

export interface RunningServer {
  /** The listener: `http.Server`, or with `tls:` an HTTP/2 secure server that also speaks HTTP/1.1. */
  readonly server: http.Server | http2.Http2SecureServer;
  /** `http://host:port` (`https://` with `tls:`) the server listens on. */
  readonly url: string;
  /** Stop accepting, let in-flight requests finish (bounded by `timeouts.shutdown`), then close. */
  close(): Promise<void>;
  /** `http://host:port` of the separate metrics listener (`metrics.listen`), if any. */
  readonly metricsUrl?: string | undefined;
  /** `http://host:port` of each separate origin listener (`signer.origin.listen`). */
  readonly originUrls: readonly string[];
  /** The separate origin listeners, in the order of {@link originUrls}. */
  readonly originServers: readonly http.Server[];
  /** The Prometheus metrics, when `metrics:` is configured. */
  readonly metrics?: PrometheusMetrics | undefined;
  /**
   * What SIGHUP does: reads the config file again and applies it (rejected if invalid or no file),
   * and with `tls:` reads the certificate files again (`tls` says how that went, independently:
   * a bad certificate never blocks a config change, nor the other way round).
   */
  reload(trigger?: string): Promise<ReloadResult & { tls?: TlsReloadResult }>;
  /** What the start's storage preflight found per signer (`preflight: off`: undefined). */
  readonly preflight?: PreflightTracker | undefined;
}

/** Options of {@link startServer}. */
export interface StartServerOptions {
  /** The file `config` came from: enables `reload()` and, with `reload.watch`, reloading on change. */
  configPath?: string;
  /** Environment for `${VAR}` in reloaded files. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Start the `metrics.listen` listener. Default true; `serve --workers` workers leave it to the primary. */
  metricsListener?: boolean;
  /** How often a signer whose storage did not answer at start is asked again, milliseconds. Default 10 000. */
  preflightRetryMs?: number;
}

/**
 * The standalone reverse proxy: a bare `node:http` server (no router: the middleware is the whole
 * app) with `/healthz` answered locally, never touching the upstream.
 */
export async function startServer(config: ServerConfig, logger: Logger, options: StartServerOptions = {}): Promise<RunningServer> {
  // Upload bodies' dead read buffers are collected every few MiB instead of near V8's 64 MiB
  // external-memory limit (see read-buffers.ts).
  if (!installReadBufferValve()) logger.debug({}, 'V8 refused --expose-gc: upload read buffers are collected at V8\'s own pace');
  const metrics = config.metrics ? prometheusMetrics({ defaultMetrics: config.metrics.defaultMetrics }) : undefined;
  // Credentials from default chains (AWS, Google ADC) resolve now: a missing one stops startup.
  await Promise.all([config.signer, ...Object.values(config.signers ?? {})].map((s) => s.ready?.()));
  // One signed GET per signer for an object that cannot exist: a wrong key fails here, not on every
  // pull. A reload is proven the same way before it is applied (see `prepare` below).
  const prove = (c: ServerConfig): Promise<PreflightTracker | undefined> =>
    c.preflight === 'off'
      ? Promise.resolve(undefined)
      : runPreflight([{ label: 'signer', signer: c.signer }, ...Object.entries(c.signers ?? {}).map(([name, signer]) => ({ label: `signers.${name}`, signer }))], {
          mode: c.preflight,
          logger,
          timeoutMs: c.timeouts.signer,
          ...(options.preflightRetryMs !== undefined ? { retryMs: options.preflightRetryMs } : {}),
        });
  let preflight = await prove(config);
  // Signed-URL cache per signer (per configuration: a reload starts fresh), counted per configured name.
  const cached = (name: string, signer: Signer, c: ServerConfig) =>
    withCache(signer, c.cache, metrics ? (result) => metrics.cacheResult(name, result) : undefined);
  // One middleware per configuration; a reload swaps it (see reload.ts).
  const hot = createHotMiddleware(
    (c) => {
      assertCachesFitHeap(c);
      return registryRedirect({
        upstream: c.upstream,
        signer: cached('default', c.signer, c),
        signers: c.signers && Object.fromEntries(Object.entries(c.signers).map(([name, s]) => [name, cached(name, s, c)])),
        rollout: c.rollout,
        trustedProxies: c.trustedProxies,
        health: c.health,
        metrics,
        onSignerError: c.onSignerError,
        tokenAuth: c.authorize.tokenAuth,
        decisionCache: c.authorize.cache,
        acceptUpstreamRedirect: c.authorize.acceptUpstreamRedirect,
        allowRedirectToRegistryHost: c.allowRedirectToRegistryHost,
        upstreamTLS: c.upstreamTLS,
        timeouts: { authorize: c.timeouts.authorize, upstream: c.timeouts.upstream, signer: c.timeouts.signer },
        limits: { maxPendingAuthorizations: c.limits.maxPendingAuthorizations, maxUploadsPerClient: c.limits.maxUploadsPerClient, upstreamSockets: c.limits.upstreamSockets },
        push: c.push,
        logger,
      });
    },
    config,
    logger,
  );
  // Origin mode: the handlers of a configuration are built once, on its first request.
  const originHandlers = new WeakMap<ServerConfig, { listen: string | undefined; handle: OriginHandler }[]>();
  const originsOf = (c: ServerConfig) => {
    let handlers = originHandlers.get(c);
    if (!handlers) {
      handlers = [c.signer, ...Object.values(c.signers ?? {})].filter(isOriginSigner).map((s) => ({
        listen: s.origin.listen && `${s.origin.listen.host}:${s.origin.listen.port}`,
        handle: createOriginHandler(s.origin, { metrics, logger }),
      }));
      originHandlers.set(c, handlers);
    }
    return handlers;
  };
  for (const s of [config.signer, ...Object.values(config.signers ?? {})].filter(isOriginSigner)) {
    const warning = sharedHostWarning(s.origin, config.listen);
    if (warning) logger.warn({ origin: s.origin.baseUrl }, warning);
  }
  const readyz = createReadinessHandler({
    current: () => ({ upstream: hot.current().config.upstream, health: hot.current().middleware.health, upstreamTLS: hot.current().config.upstreamTLS }),
    storage: () => preflight?.results(),
    logger,
  });
  const metricsPath = config.metrics && !config.metrics.listen ? config.metrics.path : undefined;
  // Every response the listeners create writes its access line (see observability.ts).
  const logged = config.log.requests ? accessLog(logger) : undefined;
  const responseClass = { ServerResponse: logged ? logged.ServerResponse : (ServedResponse as typeof http.ServerResponse) };
  // The TLS listener also speaks HTTP/2, whose responses are not of that class: a hook per request.
  const logRequest = config.tls ? logged?.logRequest : undefined;

  const { server, connections, tls } = createListener(
    config.tls,
    {
      // Slow clients are bounded while sending headers (Node counts from the connection's accept,
      // and from the first byte of each later request); bodies (multi-GiB layer uploads) are not.
      headersTimeout: config.timeouts.headers,
      requestTimeout: 0,
      connectionsCheckingInterval: connectionsCheckInterval(config.timeouts.headers),
      keepAliveTimeout: config.timeouts.keepAlive,
      ...(config.tls ? {} : responseClass),
    },
    (req, res) => {
      logRequest?.(req, res);
      // Lets the push endpoint check recognise this server (see push-config.ts).
      if (req.headers[PROBE_HEADER] !== undefined) res.setHeader(PROBE_HEADER, 'registry-redirect');
      if (req.url === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': HEALTH_BODY.length, 'Cache-Control': 'no-store' });
        res.end(req.method === 'GET' ? HEALTH_BODY : undefined);
        return;
      }
      if (req.url === '/readyz' && (req.method === 'GET' || req.method === 'HEAD')) {
        readyz(req, res);
        return;
      }
      if (metricsPath !== undefined && metrics && req.url === metricsPath) {
        metrics.handler(req, res);
        return;
      }
      for (const origin of originsOf(hot.current().config)) if (origin.listen === undefined && origin.handle(req, res)) return;
      hot.handle(req, res);
    },
  );
  if (config.tls && tls) {
    logger.info({ certificate: tls.material.summary, clientCA: config.tls.clientCA !== undefined, minVersion: config.tls.minVersion }, 'serving HTTPS (HTTP/2 and HTTP/1.1)');
  }
  server.on('clientError', answerClientError);
  applyMaxConnections(server, config.limits.maxConnections, logger);

  // Separate origin listeners (signer.origin.listen): fixed at startup like the main one; a reload
  // changes what they serve, not where.
  const originListens = [...new Set(originsOf(config).flatMap((o) => (o.listen === undefined ? [] : [o.listen])))];
  const originServers = originListens.map((listen) => {
    const s = createServer(
      {
        headersTimeout: config.timeouts.headers,
        requestTimeout: 0,
        connectionsCheckingInterval: connectionsCheckInterval(config.timeouts.headers),
        keepAliveTimeout: config.timeouts.keepAlive,
        ...responseClass,
      },
      (req, res) => {
        const origin = originsOf(hot.current().config).find((o) => o.listen === listen);
        if (origin?.handle(req, res)) return;
        const body = '{"errors":[{"code":"BLOB_UNKNOWN","message":"not a blob this origin serves","detail":null}]}';
        res.writeHead(404, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
        res.end(body);
      },
    );
    s.on('clientError', answerClientError);
    applyMaxConnections(s, config.limits.maxConnections, logger);
    return { listen, server: s };
  });

  const listened = await listenOn(server, config.listen, config.listenBacklog);
  const url = tls ? listened.replace(/^http:/, 'https:') : listened;
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  const originUrls: string[] = [];
  try {
    for (const o of originServers) {
      const [, host = '', port = '0'] = /^(.*):(\d+)$/.exec(o.listen) ?? [];
      originUrls.push(await listenOn(o.server, { host, port: Number(port) }, config.listenBacklog));
    }
    metricsServer = metrics && config.metrics?.listen && options.metricsListener !== false ? await startMetricsServer(metrics, config.metrics.listen, config.metrics.path) : undefined;
  } catch (err) {
    await new Promise((resolve) => server.close(resolve));
    for (const o of originServers) if (o.server.listening) await new Promise((resolve) => o.server.close(resolve));
    await hot.close();
    preflight?.close();
    throw err;
  }
  // Only now, with this server listening, can an endpoint that is this very proxy be recognised.
  if (config.push) {
    try {
      await assertWriteEndpoint(config.push.endpoint, config.timeouts.authorize);
    } catch (err) {
      connections.closeAll();
      await new Promise((resolve) => server.close(resolve));
      for (const o of originServers) await new Promise((resolve) => o.server.close(resolve));
      await metricsServer?.close();
      await hot.close();
      throw err;
    }
  }
  const reloader = options.configPath
    ? createConfigReloader({
        path: options.configPath,
        hot,
        logger,
        metrics,
        env: options.env,
        watch: config.reload.watch,
        async prepare(next) {
          const proven = await prove(next);
          return {
            commit() {
              preflight?.close();
              preflight = proven;
            },
            abort: () => proven?.close(),
          };
        },
      })
    : undefined;
  const tlsReloader =
    config.tls && tls ? createTlsReloader({ server: tls.server, config: config.tls, initial: tls.material, logger, watch: config.reload.watch }) : undefined;

  let closing: Promise<void> | undefined;
  return {
    server,
    url,
    metricsUrl: metricsServer?.url,
    originUrls,
    originServers: originServers.map((o) => o.server),
    metrics,
    get preflight() {
      return preflight;
    },
    async reload(trigger = 'manual') {
      const certificates = tlsReloader?.reload(trigger);
      const result: ReloadResult = reloader ? await reloader.reload(trigger) : { ok: false, error: 'no config file to reload' };
      return certificates ? { ...result, tls: certificates } : result;
    },
    close() {
      closing ??= (async () => {
        const closed = Promise.all([server, ...originServers.map((o) => o.server)].map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined);
        connections.closeIdle();
        for (const o of originServers) o.server.closeIdleConnections();
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), config.timeouts.shutdown);
        });
        if ((await Promise.race([closed, deadline])) === 'timeout') {
          logger.warn({ timeoutMs: config.timeouts.shutdown }, 'shutdown timeout: closing remaining connections');
          connections.closeAll();
          for (const o of originServers) o.server.closeAllConnections();
          await closed;
        }
        clearTimeout(timer);
        reloader?.close();
        tlsReloader?.close();
        preflight?.close();
        await metricsServer?.close();
        await hot.close();
      })();
      return closing;
    },
  };
}
