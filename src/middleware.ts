import type { IncomingMessage, ServerResponse } from 'node:http';
import { createEmbeddedAuthorizer } from './authorize/embedded.js';
import { createProxyAuthorizer } from './authorize/proxy.js';
import type { AuthOutcome, Authorizer, Grant } from './authorize/types.js';
import { createClientIpResolver, parseCidrList, parseIp } from './client-ip.js';
import { RegistryRedirectError, sendOciError } from './errors.js';
import { createForwardedHeaders, requestHost } from './forwarded.js';
import { createUploadLimiter, createUpstreamPools, isUpload, resolveLimits } from './limits.js';
import { errorForLog, silentLogger } from './log.js';
import { countProxiedBytes, type FallbackReason } from './metrics.js';
import { createPassThrough, pathForLog } from './proxy.js';
import { compilePush } from './push.js';
import { NO_SIGNER, type RolloutDecision } from './rollout.js';
import { isPromiseLike } from './promise.js';
import { parseBlobPath, parseManifestPath } from './routes.js';
import { createRouting } from './routing.js';
import { isSameHostOrSubdomain } from './same-host.js';
import { upstreamAgentOptions, validateUpstreamTls } from './upstream-tls.js';
import type {
  BlobTarget,
  Logger,
  RegistryRedirectMiddleware,
  RegistryRedirectOptions,
  SignedUrl,
  Signer,
} from './types.js';

export const DEFAULT_TIMEOUTS = { authorize: 10_000, upstream: 60_000, signer: 5_000 } as const;

type Next = (err?: unknown) => void;

/**
 * Every option of {@link registryRedirect}, for the unknown-option check. `satisfies` makes
 * TypeScript reject this object when an option is added to (or removed from) `RegistryRedirectOptions`
 * without it.
 */
const OPTION_KEYS = {
  upstream: true,
  signer: true,
  authorize: true,
  tokenAuth: true,
  decisionCache: true,
  onSignerError: true,
  timeouts: true,
  logger: true,
  signers: true,
  rollout: true,
  trustedProxies: true,
  metrics: true,
  health: true,
  acceptUpstreamRedirect: true,
  allowRedirectToRegistryHost: true,
  push: true,
  limits: true,
  upstreamTLS: true,
} as const satisfies Record<keyof RegistryRedirectOptions, true>;
const KNOWN_OPTIONS: ReadonlySet<string> = new Set(Object.keys(OPTION_KEYS));

function validateOptions(options: RegistryRedirectOptions): void {
  if (options === null || typeof options !== 'object') {
    throw new RegistryRedirectError('CONFIG_INVALID', 'registryRedirect(options): options must be an object');
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw new RegistryRedirectError('CONFIG_INVALID', `registryRedirect: unknown option "${key}"; known options are ${[...KNOWN_OPTIONS].join(', ')}`);
    }
  }
  if (!options.signer || typeof options.signer.sign !== 'function' || typeof options.signer.name !== 'string') {
    throw new RegistryRedirectError('CONFIG_INVALID', 'registryRedirect: `signer` is required: pass a signer such as hmacSigner({ ... }), azureSigner({ ... }) from registry-redirect/azure, or defineSigner({ name, sign })');
  }
  if (options.upstream === undefined && typeof options.authorize !== 'function') {
    throw new RegistryRedirectError(
      'CONFIG_INVALID',
      'registryRedirect: set `upstream` (proxy mode, e.g. "http://127.0.0.1:5000") or `authorize` (embedded mode: (req, {repository, digest}) => ({ size }) | undefined)',
    );
  }
  if (options.upstream !== undefined && options.authorize !== undefined) {
    throw new RegistryRedirectError('CONFIG_INVALID', 'registryRedirect: `upstream` and `authorize` exclude each other: the upstream authorizes in proxy mode');
  }
  if (options.upstream === undefined && (options.tokenAuth !== undefined || options.decisionCache !== undefined)) {
    throw new RegistryRedirectError('CONFIG_INVALID', 'registryRedirect: `tokenAuth` and `decisionCache` need `upstream` (proxy mode): existence is confirmed by the upstream; in embedded mode your `authorize` hook decides');
  }
  if (options.upstream === undefined && options.push !== undefined) {
    throw new RegistryRedirectError('CONFIG_INVALID', 'registryRedirect: `push` needs `upstream` (proxy mode): steering rewrites the upstream\'s upload answer; in embedded mode your registry builds its own upload Location');
  }
  for (const key of ['acceptUpstreamRedirect', 'allowRedirectToRegistryHost'] as const) {
    if (options[key] !== undefined && typeof options[key] !== 'boolean') {
      throw new RegistryRedirectError('CONFIG_INVALID', `registryRedirect: ${key} must be true or false, got ${JSON.stringify(options[key])}`);
    }
  }
  if (options.upstream === undefined && options.acceptUpstreamRedirect !== undefined) {
    throw new RegistryRedirectError('CONFIG_INVALID', 'registryRedirect: `acceptUpstreamRedirect` needs `upstream` (proxy mode): it is about the upstream\'s answer to the authorizing HEAD');
  }
  if (options.onSignerError !== undefined && options.onSignerError !== 'proxy' && options.onSignerError !== 'error') {
    throw new RegistryRedirectError('CONFIG_INVALID', `registryRedirect: onSignerError must be "proxy" or "error", got ${JSON.stringify(options.onSignerError)}`);
  }
  for (const [key, value] of Object.entries(options.timeouts ?? {})) {
    if (!(key in DEFAULT_TIMEOUTS)) {
      throw new RegistryRedirectError('CONFIG_INVALID', `registryRedirect: unknown timeouts.${key}; known: ${Object.keys(DEFAULT_TIMEOUTS).join(', ')}`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new RegistryRedirectError('CONFIG_INVALID', `registryRedirect: timeouts.${key} must be a positive number of milliseconds, got ${JSON.stringify(value)}`);
    }
  }
}

/** Parses and checks the upstream URL once, at construction. */
export function parseUpstream(upstream: string | URL): URL {
  let url: URL;
  try {
    url = new URL(upstream);
  } catch (cause) {
    throw new RegistryRedirectError('CONFIG_INVALID', `upstream: ${JSON.stringify(String(upstream))} is not a URL; write e.g. "http://127.0.0.1:5000"`, { cause });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new RegistryRedirectError('CONFIG_INVALID', `upstream: protocol ${url.protocol} is not supported; write an http:// or https:// URL`);
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new RegistryRedirectError('CONFIG_INVALID', 'upstream: write only scheme, host, port and optional path (no query, fragment or credentials)');
  }
  return url;
}

/** Races an asynchronous signature against a timer (synchronous signers never get here). */
function withSignerTimeout(result: Promise<SignedUrl>, ms: number): Promise<SignedUrl> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RegistryRedirectError('SIGNER_TIMEOUT', `signer did not answer within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([result, timeout]).finally(() => clearTimeout(timer));
}

/**
 * After the upstream accepted a DELETE of a blob or a manifest, drops the cached grants it makes
 * stale, before the upstream's answer reaches the client (so the client's next GET sees it).
 * A blob delete drops that blob in that repository, for every caller. A manifest delete drops the
 * whole repository: which blobs it referenced (and which of them a garbage collection will then
 * remove) is not known here without reading the manifest, and dropping more is only a few more
 * HEADs. Both cost one scan of the cache; deletes are rare.
 */
function forgetOnDelete(forget: (repository: string, digest?: string) => void): (req: IncomingMessage, status: number) => void {
  return (req, status) => {
    if (req.method !== 'DELETE' || status < 200 || status >= 300 || !req.url) return;
    const blob = parseBlobPath(req.url);
    if (blob) {
      forget(blob.repository, blob.digest);
      return;
    }
    const manifest = parseManifestPath(req.url);
    if (manifest) forget(manifest.repository);
  };
}

/** Writes the redirect. `writeHead` with a fixed header set: no Express `res.redirect`. */
function sendRedirect(res: ServerResponse, location: string, digest: string): void {
  res.writeHead(307, {
    Location: location,
    'Docker-Content-Digest': digest,
    'Docker-Distribution-API-Version': 'registry/2.0',
    'Content-Length': '0',
    'Cache-Control': 'no-store',
  });
  res.end();
}

const LINE_BREAK = /[\r\n]/;

function isValidLocation(url: unknown): url is string {
  return typeof url === 'string' && (url.startsWith('https://') || url.startsWith('http://')) && !LINE_BREAK.test(url);
}

/**
 * Creates the blob-redirect middleware.
 *
 * Proxy mode (`upstream` set): `GET /v2/<name>/blobs/<digest>` is authorized by a HEAD to the
 * upstream with the caller's credentials and answered with a 307 to a signed URL; every other
 * request is streamed to the upstream. Embedded mode (`authorize` set): the host registry's hook
 * authorizes, and everything not redirected goes to `next()`.
 *
 * @example
 * ```ts
 * app.use(registryRedirect({ upstream: 'http://127.0.0.1:5000', signer: azureSigner({ account, accountKey, container: 'registry' }) }));
 * ```
 */
export function registryRedirect(options: RegistryRedirectOptions): RegistryRedirectMiddleware {
  validateOptions(options);
  const logger: Logger = options.logger ?? silentLogger;
  const onSignerError = options.onSignerError ?? 'proxy';
  const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  // Decide step: policy, named signers and their breakers. Validated here, before any agent exists.
  const routing = createRouting(options, logger);
  const observer = routing.observer;
  // Durations are measured only for an observer that records them (a clock read is ~30 ns, four per redirect).
  const clock = options.metrics === undefined ? () => 0 : () => performance.now();

  const limits = resolveLimits(options.limits);
  // Upload sessions steered to the write endpoint (proxy mode); the rules run on the rollout engine.
  const push =
    options.push === undefined ? undefined : compilePush(options.push, { clientIp: createClientIpResolver(options.trustedProxies ?? []), observer, logger });

  const upstream = options.upstream === undefined ? undefined : parseUpstream(options.upstream);
  validateUpstreamTls(options.upstreamTLS, upstream);
  if (options.upstreamTLS?.rejectUnauthorized === false) {
    logger.warn({ upstream: upstream?.origin }, 'upstream TLS certificate verification is OFF: anyone on the path to the upstream can answer the authorizing HEAD and read callers\' credentials');
  }
  // Separate pools: uploads trickling in cannot take the connections that reads and the
  // authorizing HEADs need, and a hung upstream fills only the probe pool's bounded queue.
  const pools = upstream ? createUpstreamPools(upstream, limits, upstreamAgentOptions(options.upstreamTLS)) : undefined;
  const trusted = parseCidrList(options.trustedProxies ?? [], 'trustedProxies');
  const forwarded = createForwardedHeaders(trusted);
  const allowRegistryHost = options.allowRedirectToRegistryHost === true;
  const proxyAuthorization =
    upstream && pools
      ? createProxyAuthorizer({
          upstream,
          agent: pools.authorize,
          timeoutMs: timeouts.authorize,
          maxConcurrent: limits.upstreamSockets.authorize,
          maxPending: limits.maxPendingAuthorizations,
          logger,
          tokenAuth: options.tokenAuth,
          decisionCache: options.decisionCache,
          forwarded,
          acceptRedirect: options.acceptUpstreamRedirect,
        })
      : undefined;
  const authorize: Authorizer = proxyAuthorization ? proxyAuthorization.authorize : createEmbeddedAuthorizer(options.authorize!);
  const onUpstreamResponse = proxyAuthorization && forgetOnDelete(proxyAuthorization.forget);
  const passThrough =
    upstream && pools
      ? createPassThrough({ upstream, timeoutMs: timeouts.upstream, agent: pools.passThrough, maxConcurrent: limits.upstreamSockets.passThrough, logger, forwarded, onUpstreamResponse })
      : undefined;
  const uploadThrough =
    upstream && pools
      ? createPassThrough({ upstream, timeoutMs: timeouts.upstream, agent: pools.uploads, maxConcurrent: limits.upstreamSockets.uploads, logger, forwarded, onUpstreamResponse })
      : undefined;
  const admitUpload = limits.maxUploadsPerClient > 0 ? createUploadLimiter(limits.maxUploadsPerClient, createClientIpResolver(options.trustedProxies)) : undefined;
  // Signers whose URLs were refused for pointing at the registry's host: warned about once each.
  const warnedSameHost = new Set<string>();

  /**
   * Whether the client would send its registry credentials along to `url` (same host name or a
   * subdomain of the one it asked). A trusted front's `X-Forwarded-Host` names that host too.
   */
  function targetsRegistryHost(url: string, req: IncomingMessage): boolean {
    if (isSameHostOrSubdomain(url, requestHost(req))) return true;
    const forwardedHost = req.headers['x-forwarded-host'];
    if (typeof forwardedHost !== 'string' || trusted.size === 0) return false;
    const peer = req.socket?.remoteAddress;
    if (!peer || !trusted.has(parseIp(peer))) return false;
    const comma = forwardedHost.indexOf(',');
    return isSameHostOrSubdomain(url, (comma < 0 ? forwardedHost : forwardedHost.slice(0, comma)).trim());
  }

  /** An upload (POST/PATCH/PUT) to the upstream, through the per-client cap and the upload pool. */
  function forwardUpload(req: IncomingMessage, res: ServerResponse, onResponse?: (upstreamRes: IncomingMessage) => void): void {
    if (uploadThrough && (!admitUpload || admitUpload(req, res))) uploadThrough(req, res, onResponse);
  }

  /** Hand the request on unchanged: to the upstream (proxy mode) or the host app (embedded). */
  function forward(req: IncomingMessage, res: ServerResponse, next: Next | undefined): void {
    if (passThrough && uploadThrough) {
      if (!isUpload(req.method)) passThrough(req, res);
      else forwardUpload(req, res);
    } else if (next) {
      if (!isUpload(req.method) || !admitUpload || admitUpload(req, res)) next();
    } else sendOciError(res, 404, 'DENIED', 'not handled');
  }

  /**
   * authorize -> decide -> sign -> respond. Runs synchronously end to end when the authorizer and
   * the signer answer synchronously (a cached decision, a cached URL): no promise on the hot path.
   */
  function handleBlobGet(req: IncomingMessage, res: ServerResponse, next: Next | undefined, target: BlobTarget): void | Promise<void> {
    const started = clock();
    const outcome = authorize(req, res, target, pathForLog(req.url));
    return isPromiseLike(outcome)
      ? Promise.resolve(outcome).then((grant) => afterAuthorize(grant, started, req, res, next, target))
      : afterAuthorize(outcome, started, req, res, next, target);
  }

  function afterAuthorize(grant: AuthOutcome, started: number, req: IncomingMessage, res: ServerResponse, next: Next | undefined, target: BlobTarget): void | Promise<void> {
    observer.authorized((clock() - started) / 1_000, grant === 'answered' ? 'error' : grant === 'deny' ? 'denied' : 'granted');
    if (grant === 'answered') return;
    if (grant === 'deny') {
      // Not a yes: the upstream (or host registry) answers the real GET itself, unchanged.
      forward(req, res, next);
      return;
    }
    // Decide: rollout policy (percent, repositories, networks, user agents, size, Range).
    const decision = routing.decide(req, target.repository, grant.size);
    if (decision.action === 'proxy') {
      observer.decision('proxy', NO_SIGNER, decision.reason);
      logger.debug({ repository: target.repository, digest: grant.digest, reason: decision.reason }, 'proxied by policy');
      forwardBlob(req, res, next);
      return;
    }
    return redirectWith(decision, req, res, next, target, grant);
  }

  /** Forwards an authorized blob GET and counts the bytes this server then streams. */
  function forwardBlob(req: IncomingMessage, res: ServerResponse, next: Next | undefined): void {
    countProxiedBytes(res, observer);
    forward(req, res, next);
  }

  /** Falls back per `onSignerError` instead of redirecting. */
  function fallBack(decision: RolloutDecision, reason: FallbackReason, req: IncomingMessage, res: ServerResponse, next: Next | undefined): void {
    observer.fallback(decision.signer, reason);
    observer.decision(onSignerError === 'error' ? 'error' : 'proxy', decision.signer, reason);
    if (onSignerError === 'error') sendOciError(res, 503, 'UNAVAILABLE', 'blob storage signer unavailable');
    else forwardBlob(req, res, next);
  }

  /** Signs and answers 307; a signer failure (or an open breaker) falls back per `onSignerError`. */
  function redirectWith(decision: RolloutDecision, req: IncomingMessage, res: ServerResponse, next: Next | undefined, target: BlobTarget, grant: Grant): void | Promise<void> {
    const name = decision.signer;
    if (!routing.health.available(name)) {
      fallBack(decision, 'signer_unhealthy', req, res, next);
      return;
    }
    const signer: Signer = routing.signer(name);
    const started = clock();

    const failed = (err: unknown): void => {
      observer.signed(name, (clock() - started) / 1_000, false);
      routing.health.failure(name, err);
      logger.warn(
        { error: errorForLog(err), signer: name, repository: target.repository, digest: target.digest, fallback: onSignerError },
        'signer failed',
      );
      fallBack(decision, err instanceof RegistryRedirectError && err.code === 'SIGNER_TIMEOUT' ? 'signer_timeout' : 'signer_error', req, res, next);
    };

    const signed = (result: SignedUrl): void => {
      if (!isValidLocation(result?.url)) {
        failed(new RegistryRedirectError('SIGNER_FAILED', `signer "${signer.name}" returned no absolute http(s) URL`));
        return;
      }
      observer.signed(name, (clock() - started) / 1_000, true);
      routing.health.success(name);
      if (!allowRegistryHost && targetsRegistryHost(result.url, req)) {
        // Go clients would send the registry's Authorization to this URL: serve the bytes instead.
        if (!warnedSameHost.has(name)) {
          warnedSameHost.add(name);
          logger.warn(
            { signer: name, storageHost: new URL(result.url).host, host: requestHost(req) },
            'signed URL host is the registry host or a subdomain of it; clients would send their registry credentials there, so blobs are proxied (set allowRedirectToRegistryHost to redirect anyway)',
          );
        }
        observer.fallback(name, 'same_host');
        observer.decision('proxy', name, 'same_host');
        forwardBlob(req, res, next);
        return;
      }
      if (routing.shadow) {
        // Shadow mode: everything up to the redirect happened (decision, signature); serve the bytes anyway.
        observer.decision('shadow', name, decision.reason);
        logger.info({ repository: target.repository, digest: grant.digest, signer: name, reason: decision.reason }, 'shadow: would redirect');
        forwardBlob(req, res, next);
        return;
      }
      sendRedirect(res, result.url, grant.digest);
      observer.decision('redirect', name, decision.reason);
      if (grant.size !== undefined) observer.bytes('redirected', grant.size);
      logger.debug({ repository: target.repository, digest: grant.digest, signer: name, reason: decision.reason }, 'redirected');
    };

    let result: SignedUrl | PromiseLike<SignedUrl>;
    try {
      result = signer.sign({ repository: target.repository, digest: grant.digest, method: 'GET', size: grant.size });
    } catch (err) {
      failed(err);
      return;
    }
    if (isPromiseLike(result)) return withSignerTimeout(Promise.resolve(result), timeouts.signer).then(signed, failed);
    signed(result);
  }

  /** The last line of defence: an unexpected error never crashes the app or leaves a client hanging. */
  function unexpected(err: unknown, req: IncomingMessage, res: ServerResponse, next: Next | undefined, target: BlobTarget): void {
    logger.error({ error: errorForLog(err), repository: target.repository }, 'blob redirect failed');
    if (!res.headersSent) forward(req, res, next);
    else res.destroy();
  }

  const middleware = (req: IncomingMessage, res: ServerResponse, next?: Next): void => {
    const target = req.method === 'GET' && req.url ? parseBlobPath(req.url) : undefined;
    if (!target) {
      if (push && uploadThrough && req.method === 'POST' && push.handle(req, res, forwardUpload)) return;
      forward(req, res, next);
      return;
    }
    let pending: void | Promise<void>;
    try {
      pending = handleBlobGet(req, res, next, target);
    } catch (err) {
      unexpected(err, req, res, next, target);
      return;
    }
    if (pending) pending.catch((err: unknown) => unexpected(err, req, res, next, target));
  };

  return Object.assign(middleware, {
    async close(): Promise<void> {
      pools?.destroy();
      await routing.close();
    },
    health: routing.health,
  });
}
