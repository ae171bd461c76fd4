import type { IncomingMessage, ServerResponse } from 'node:http';
import { httpStatus, type SignerHealth } from '../health.js';
import type { Logger, UpstreamTlsOptions } from '../types.js';
import type { PreflightOutcome, PreflightResult } from './preflight.js';

/** What `/readyz` reports. */
export interface Readiness {
  readonly ready: boolean;
  /** `reachable`: `GET /v2/` got an answer below 500 (401 counts: the registry is up). */
  readonly upstream: 'reachable' | 'unreachable';
  /** Per signer: `healthy` or `unhealthy` (circuit breaker). */
  readonly signers: Record<string, 'healthy' | 'unhealthy'>;
  /**
   * Per signer config key (`signer`, `signers.<name>`), what the start's storage preflight found;
   * absent with `preflight: off`. `unreachable` and `refused` make the server not ready.
   */
  readonly storage?: Record<string, PreflightOutcome>;
}

/** Options of {@link createReadinessHandler}. */
export interface ReadinessOptions {
  /** The upstream and the breakers of the configuration currently serving (changes on reload). */
  current(): { upstream: URL; health: SignerHealth; upstreamTLS?: UpstreamTlsOptions | undefined };
  /** The storage preflight's results of the configuration serving; undefined with `preflight: off`. */
  storage?(): readonly PreflightResult[] | undefined;
  /** Logs each change of readiness once (not every probe). */
  logger?: Logger;
  /** Upstream check timeout, milliseconds. Default 2 000. */
  timeoutMs?: number;
  /** Reuse an upstream check this long, milliseconds (load balancers probe often). Default 1 000. */
  cacheMs?: number;
}

/**
 * `/readyz`: 200 when the upstream answers `GET /v2/`, at least one signer is healthy and no
 * signer's storage was unreachable or refused its signature at start (see preflight.ts), else 503.
 * The body says which part failed. Concurrent probes share one upstream check.
 */
export function createReadinessHandler(opts: ReadinessOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const timeoutMs = opts.timeoutMs ?? 2_000;
  const cacheMs = opts.cacheMs ?? 1_000;
  let cached: { href: string; at: number; ok: boolean } | undefined;
  let pending: { href: string; promise: Promise<boolean> } | undefined;

  const upstreamReachable = (upstream: URL, tls: UpstreamTlsOptions | undefined): Promise<boolean> => {
    const href = new URL('v2/', upstream.href.endsWith('/') ? upstream.href : `${upstream.href}/`).href;
    if (cached && cached.href === href && Date.now() - cached.at < cacheMs) return Promise.resolve(cached.ok);
    if (pending && pending.href === href) return pending.promise;
    const promise = httpStatus(href, { timeoutMs, tls })
      .then((status) => status < 500)
      .catch(() => false)
      .then((ok) => {
        cached = { href, at: Date.now(), ok };
        pending = undefined;
        return ok;
      });
    pending = { href, promise };
    return promise;
  };

  // What the last probe answered: a change is logged once, however often load balancers probe.
  let last: string | undefined;
  const logChange = (body: Readiness): void => {
    const why: string[] = [];
    if (body.upstream !== 'reachable') why.push('upstream unreachable');
    if (!Object.values(body.signers).includes('healthy')) why.push('no healthy signer');
    for (const [label, outcome] of Object.entries(body.storage ?? {})) if (outcome === 'unreachable' || outcome === 'refused') why.push(`${label}: storage ${outcome}`);
    const state = body.ready ? 'ready' : why.join(', ');
    if (state === last) return;
    const first = last === undefined;
    last = state;
    if (body.ready) {
      if (!first) opts.logger?.info({ readiness: body }, 'ready again');
    } else {
      opts.logger?.warn({ readiness: body }, `not ready: ${state}`);
    }
  };

  return (req, res) => {
    const { upstream, health, upstreamTLS } = opts.current();
    void upstreamReachable(upstream, upstreamTLS).then((reachable) => {
      const signers: Record<string, 'healthy' | 'unhealthy'> = {};
      for (const [name, s] of Object.entries(health.status())) signers[name] = s.healthy ? 'healthy' : 'unhealthy';
      const preflight = opts.storage?.();
      const storage = preflight && Object.fromEntries(preflight.map((r) => [r.label, r.outcome]));
      const storageReady = !preflight || preflight.every((r) => r.outcome !== 'unreachable' && r.outcome !== 'refused');
      const ready = reachable && health.anyHealthy() && storageReady;
      const body: Readiness = { ready, upstream: reachable ? 'reachable' : 'unreachable', signers, ...(storage ? { storage } : {}) };
      logChange(body);
      const text = JSON.stringify(body);
      res.writeHead(ready ? 200 : 503, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : text);
    });
  };
}
