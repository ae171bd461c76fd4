import type { IncomingMessage, ServerResponse } from 'node:http';
import type * as promClient from 'prom-client';
import type { Registry } from 'prom-client';
import { requireDependency } from './lazy.js';
import type { RedirectObserver } from './types.js';

export type { AuthorizeOutcome, CacheResult, DecisionAction, FallbackReason, RedirectObserver } from './types.js';

/** An observer with every method present (the middleware's internal form). */
export type CompleteObserver = Required<RedirectObserver>;

const noop = (): void => {};

/** Fills the methods an observer leaves out with no-ops, keeping `this` for the ones it has. */
export function completeObserver(observer: RedirectObserver | undefined): CompleteObserver {
  const o = observer ?? {};
  const bind = <K extends keyof RedirectObserver>(k: K): CompleteObserver[K] => (o[k] ? (o[k].bind(o) as CompleteObserver[K]) : (noop as CompleteObserver[K]));
  return {
    decision: bind('decision'),
    signed: bind('signed'),
    authorized: bind('authorized'),
    fallback: bind('fallback'),
    bytes: bind('bytes'),
    signerHealth: bind('signerHealth'),
    probe: bind('probe'),
    cacheResult: bind('cacheResult'),
    origin: bind('origin'),
    upload: bind('upload'),
  };
}

/** Options of {@link prometheusMetrics}. */
export interface PrometheusMetricsOptions {
  /** Registry to register on. Default: a new `Registry` (not prom-client's global one). */
  registry?: Registry;
  /** Also collect prom-client's default process metrics (CPU, memory, event loop lag). Default `false`. */
  defaultMetrics?: boolean;
}

/** The Prometheus observer plus what a `/metrics` endpoint needs. */
export interface PrometheusMetrics extends CompleteObserver {
  readonly registry: Registry;
  /** `Content-Type` of {@link render}'s output. */
  readonly contentType: string;
  /** The exposition text. */
  render(): Promise<string>;
  /** Count a configuration reload (server). */
  reloaded(ok: boolean): void;
  /** Drop `signer_healthy` series of signers no longer configured (after a reload). */
  retainSigners(names: readonly string[]): void;
  /** `GET`/`HEAD` handler serving {@link render}. */
  handler(req: IncomingMessage, res: ServerResponse): void;
}

const SIGN_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const AUTHORIZE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Prometheus metrics (prom-client) for the middleware and the server. Pass it as the `metrics`
 * option and serve `handler` (the server does that on `metrics.listen`).
 *
 * @example
 * ```ts
 * const metrics = prometheusMetrics();
 * app.use(registryRedirect({ upstream, signer, metrics }));
 * app.get('/metrics', metrics.handler);
 * ```
 */
export function prometheusMetrics(options: PrometheusMetricsOptions = {}): PrometheusMetrics {
  // prom-client is loaded by the first metrics object, not when the package is imported.
  const { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } = requireDependency<typeof promClient>('prom-client');
  const registry = options.registry ?? new Registry();
  const registers = [registry];
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });

  const decisions = new Counter({
    name: 'registry_redirect_decisions_total',
    help: 'Authorized blob GETs by what was done (redirect, proxy, shadow, error), signer and reason (rule or fallback).',
    labelNames: ['action', 'signer', 'reason'] as const,
    registers,
  });
  const signDuration = new Histogram({
    name: 'registry_redirect_sign_duration_seconds',
    help: 'Time to sign a blob URL, by signer and result (ok, error).',
    labelNames: ['signer', 'result'] as const,
    buckets: SIGN_BUCKETS,
    registers,
  });
  const authorizeDuration = new Histogram({
    name: 'registry_redirect_authorize_duration_seconds',
    help: 'Time of the authorizing step (upstream HEAD probe or embedded hook), by outcome (granted, denied, error).',
    labelNames: ['outcome'] as const,
    buckets: AUTHORIZE_BUCKETS,
    registers,
  });
  const fallbacks = new Counter({
    name: 'registry_redirect_fallbacks_total',
    help: 'Redirects replaced by a fallback, by signer and reason (signer_error, signer_timeout, signer_unhealthy: per onSignerError; same_host: proxied because the signed URL is on the registry host or a subdomain).',
    labelNames: ['signer', 'reason'] as const,
    registers,
  });
  const bytes = new Counter({
    name: 'registry_redirect_blob_bytes_total',
    help: 'Blob bytes by delivery: redirected (sent by storage/CDN) or proxied (sent by this server), from Content-Length.',
    labelNames: ['delivery'] as const,
    registers,
  });
  const healthy = new Gauge({
    name: 'registry_redirect_signer_healthy',
    help: '1 when the signer circuit breaker is closed (traffic redirected), 0 when open (traffic falls back).',
    labelNames: ['signer'] as const,
    registers,
    // serve --workers sums workers' metrics; a signer is healthy only if it is in every worker.
    aggregator: 'min',
  });
  const probes = new Counter({
    name: 'registry_redirect_signer_probes_total',
    help: 'Storage probes through a fresh signed URL, by signer and result (ok, error).',
    labelNames: ['signer', 'result'] as const,
    registers,
  });
  const cache = new Counter({
    name: 'registry_redirect_signed_url_cache_total',
    help: 'Signed-URL cache lookups by signer and result (hit, miss, refresh).',
    labelNames: ['signer', 'result'] as const,
    registers,
  });
  const originResponses = new Counter({
    name: 'registry_redirect_origin_responses_total',
    help: 'Origin mode: requests the origin answered, by status (200, 206, 304, 403, 404, 405, 416).',
    labelNames: ['status'] as const,
    registers,
  });
  const originBytes = new Counter({
    name: 'registry_redirect_origin_bytes_total',
    help: 'Origin mode: blob body bytes the origin sent (200 and 206 responses that finished).',
    registers,
  });
  const uploads = new Counter({
    name: 'registry_redirect_upload_decisions_total',
    help: 'Upload-start POSTs with push steering configured, by action (steer, redirect, proxy, shadow) and reason (rule, default, mount, monolithic, not_accepted, unexpected_location).',
    labelNames: ['action', 'reason'] as const,
    registers,
  });
  const reloads = new Counter({
    name: 'registry_redirect_config_reloads_total',
    help: 'Configuration reloads by result (success, failure).',
    labelNames: ['result'] as const,
    registers,
  });
  const lastReload = new Gauge({
    name: 'registry_redirect_config_last_reload_success_timestamp_seconds',
    help: 'Unix time of the last configuration load that was applied.',
    registers,
    aggregator: 'max',
  });
  lastReload.set(Date.now() / 1_000);
  const known = new Set<string>();

  const render = () => registry.metrics();
  return {
    registry,
    contentType: registry.contentType,
    render,
    decision: (action, signer, reason) => decisions.inc({ action, signer, reason }),
    signed: (signer, seconds, ok) => signDuration.observe({ signer, result: ok ? 'ok' : 'error' }, seconds),
    authorized: (seconds, outcome) => authorizeDuration.observe({ outcome }, seconds),
    fallback: (signer, reason) => fallbacks.inc({ signer, reason }),
    bytes: (delivery, n) => {
      if (Number.isFinite(n) && n > 0) bytes.inc({ delivery }, n);
    },
    signerHealth: (signer, ok) => {
      known.add(signer);
      healthy.set({ signer }, ok ? 1 : 0);
    },
    probe: (signer, ok) => probes.inc({ signer, result: ok ? 'ok' : 'error' }),
    cacheResult: (signer, result) => cache.inc({ signer, result }),
    origin: (status, n) => {
      originResponses.inc({ status: String(status) });
      if (Number.isFinite(n) && n > 0) originBytes.inc(n);
    },
    upload: (action, reason) => uploads.inc({ action, reason }),
    reloaded: (ok) => {
      reloads.inc({ result: ok ? 'success' : 'failure' });
      if (ok) lastReload.set(Date.now() / 1_000);
    },
    retainSigners: (names) => {
      for (const name of known) {
        if (!names.includes(name)) {
          healthy.remove({ signer: name });
          known.delete(name);
        }
      }
    },
    handler(req, res) {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Length': '0' });
        res.end();
        return;
      }
      render().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': registry.contentType, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
          res.end(req.method === 'HEAD' ? undefined : text);
        },
        () => {
          res.writeHead(500, { 'Content-Length': '0' });
          res.end();
        },
      );
    },
  };
}

/**
 * Counts the bytes of a blob response this server streams itself (fallback, `proxy` decision,
 * shadow mode): the `Content-Length` of a 200/206 once the response finished.
 */
export function countProxiedBytes(res: ServerResponse, observer: CompleteObserver): void {
  res.once('finish', () => {
    if (res.statusCode !== 200 && res.statusCode !== 206) return;
    const length = Number(res.getHeader('content-length'));
    if (Number.isSafeInteger(length) && length > 0) observer.bytes('proxied', length);
  });
}
