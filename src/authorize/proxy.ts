import type http from 'node:http';
import type { ForwardedHeaders } from '../forwarded.js';
import type { DecisionCacheOptions, Logger, TokenAuthOptions } from '../types.js';
import { NEGATIVE_DECISION_TTL_MS, createDecisionCache, resolveDecisionCacheOptions } from './cache.js';
import { createTokenAuthorizer, createTokenVerifier } from './token.js';
import type { Authorizer } from './types.js';
import { createUpstreamAuthorizer, createUpstreamProbe } from './upstream.js';
import type { UpstreamVerdict } from './upstream.js';

export interface ProxyAuthorizerOptions {
  upstream: URL;
  agent: http.Agent;
  /** The authorizing HEAD must answer within this many milliseconds. */
  timeoutMs: number;
  logger: Logger;
  /** Probes in flight at once; more wait in order within their deadline. */
  maxConcurrent?: number | undefined;
  /** Probes in flight or queued beyond which a blob GET is answered 503 at once. */
  maxPending?: number | undefined;
  tokenAuth?: TokenAuthOptions | undefined;
  decisionCache?: DecisionCacheOptions | false | undefined;
  forwarded: ForwardedHeaders;
  /** Take a 3xx on the authorizing HEAD as a grant (see `acceptUpstreamRedirect`). */
  acceptRedirect?: boolean | undefined;
}

/** The proxy-mode authorizer and a way to drop what its decision cache holds. */
export interface ProxyAuthorization {
  authorize: Authorizer;
  /** Drops cached decisions for `digest` in `repository`, or all of the repository's (see DecisionCache.forget). */
  forget(repository: string, digest?: string): void;
}

/**
 * Picks the proxy-mode authorizer (upstream HEAD, or local token verification + existence HEAD)
 * and wraps its upstream HEAD in the decision cache. Validates `tokenAuth` and `decisionCache`.
 */
export function createProxyAuthorizer(opts: ProxyAuthorizerOptions): ProxyAuthorization {
  const settings = resolveDecisionCacheOptions(opts.decisionCache);
  const probeOptions = {
    upstream: opts.upstream,
    timeoutMs: opts.timeoutMs,
    agent: opts.agent,
    maxConcurrent: opts.maxConcurrent,
    maxPending: opts.maxPending,
    forwarded: opts.forwarded,
    acceptRedirect: opts.acceptRedirect,
  };

  if (opts.tokenAuth === undefined) {
    // Keyed by credential: a 401/403 belongs to that caller, so it may be reused briefly too.
    const cache = createDecisionCache<UpstreamVerdict>({
      ...settings,
      ttlOf: (v, ttl) => (v.allowed ? ttl : v.status === 401 || v.status === 403 || v.status === 404 ? NEGATIVE_DECISION_TTL_MS : 0),
    });
    return { authorize: createUpstreamAuthorizer({ ...probeOptions, logger: opts.logger, cache }), forget: (r, d) => void cache?.forget(r, d) };
  }

  const verifier = createTokenVerifier(opts.tokenAuth);
  // Keyed by (repository, digest) only: just "it exists there" is shared. The caller's 401/403 on
  // the HEAD is about that caller, so it is never cached.
  const cache = createDecisionCache<UpstreamVerdict>({
    ...settings,
    ttlOf: (v, ttl) => (v.allowed ? ttl : v.status === 404 ? NEGATIVE_DECISION_TTL_MS : 0),
  });
  return {
    authorize: createTokenAuthorizer({ verifier, probe: createUpstreamProbe(probeOptions), cache, timeoutMs: opts.timeoutMs, logger: opts.logger }),
    forget: (r, d) => void cache?.forget(r, d),
  };
}
