import type http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { RegistryRedirectError, sendOciError } from '../errors.js';
import { createSlotQueue, withSlot } from '../limits.js';
import { applyForwardedFields, type ForwardedHeaders } from '../forwarded.js';
import { upstreamFailureDetail } from '../upstream-tls.js';
import { errorForLog } from '../log.js';
import { isValidDigest } from '../routes.js';
import type { BlobTarget, Logger } from '../types.js';
import { connectionCredentialDigest, decisionKey } from './cache.js';
import type { DecisionCache } from './cache.js';
import type { AuthOutcome, Authorizer } from './types.js';

/** The upstream's answer to the authorizing HEAD. */
export type UpstreamVerdict =
  /** 2xx (a 3xx only with `acceptRedirect`): the caller may read the blob and it exists there. */
  | { readonly allowed: true; readonly size: number | undefined; readonly digest: string }
  /** Anything else (3xx, 401/403/404, 5xx): not a yes. The real GET goes upstream and is relayed. */
  | { readonly allowed: false; readonly status: number };

// Headers never forwarded on the probe. Hop-by-hop headers are per connection. Range and the
// conditional headers change the answer: distribution answers a ranged HEAD with 206/416 and a
// conditional one with 304, so forwarding them would make resumes never look like a yes.
const NOT_FORWARDED = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'expect',
  'range',
  'if-range',
  'if-none-match',
  'if-match',
  'if-modified-since',
  'if-unmodified-since',
]);

function probeHeaders(req: IncomingMessage, forwarded: ForwardedHeaders): OutgoingHttpHeaders {
  const incoming: IncomingHttpHeaders = req.headers;
  const out: OutgoingHttpHeaders = {};
  for (const name in incoming) {
    // HTTP/2 pseudo-headers (`:method`, `:path`, `:authority`, ...) are not headers of an
    // HTTP/1.1 request; `:authority` becomes its `Host`.
    if (name.charCodeAt(0) === 0x3a /* : */) continue;
    if (!NOT_FORWARDED.has(name)) out[name] = incoming[name];
  }
  const authority = incoming[':authority'];
  if (typeof authority === 'string' && authority !== '') out.host = authority;
  // The probe asks with the caller's identity, and an upstream that allow-lists by address must
  // see the caller's real one, exactly as on pass-through.
  applyForwardedFields(out, forwarded(req));
  return out;
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

export interface UpstreamAuthorizerOptions {
  upstream: URL;
  /** No response headers within this many milliseconds of the probe being issued (waiting for a socket included) -> UPSTREAM_TIMEOUT. */
  timeoutMs: number;
  agent: http.Agent;
  /** Probes in flight at once; more wait in order (within their deadline). Default: no bound. */
  maxConcurrent?: number | undefined;
  /** Probes in flight or waiting beyond which a new one fails at once with AUTHORIZE_QUEUE_FULL. Default: no bound. */
  maxPending?: number | undefined;
  /** The `X-Forwarded-*` headers sent instead of the client's (see forwarded.ts). */
  forwarded: ForwardedHeaders;
  /**
   * Take a 3xx on the probe as a grant. Off by default: fronts answer anonymous requests with
   * `302 /login` or `301 https://...`, which say nothing about the caller's rights. Only for an
   * upstream that redirects its own blob GETs to storage and answers HEAD the same way.
   */
  acceptRedirect?: boolean | undefined;
}

/**
 * Asks the upstream, with the caller's own credentials, whether the caller may read this blob in
 * this repository: `HEAD /v2/<name>/blobs/<digest>`. Only the upstream's positive answer for the
 * same repository path counts; storage being global, a digest alone never proves anything.
 */
export type UpstreamProbe = (req: IncomingMessage, target: BlobTarget, path: string) => Promise<UpstreamVerdict>;

export function createUpstreamProbe(opts: UpstreamAuthorizerOptions): UpstreamProbe {
  // getBuiltinModule: node:https costs more to load than the rest of the package; only proxy mode needs it.
  const request = opts.upstream.protocol === 'https:' ? process.getBuiltinModule('node:https').request : process.getBuiltinModule('node:http').request;
  const hostname = opts.upstream.hostname.replace(/^\[|\]$/g, '');
  const port = opts.upstream.port || (opts.upstream.protocol === 'https:' ? 443 : 80);
  const basePath = opts.upstream.pathname.replace(/\/+$/, '');
  const acceptRedirect = opts.acceptRedirect === true;

  const maxPending = opts.maxPending ?? Number.POSITIVE_INFINITY;
  const slots = opts.maxConcurrent === undefined ? undefined : createSlotQueue(opts.maxConcurrent);
  let pending = 0;
  const timedOut = (): RegistryRedirectError =>
    new RegistryRedirectError('UPSTREAM_TIMEOUT', `upstream did not answer the authorizing HEAD within ${opts.timeoutMs} ms`);

  function send(req: IncomingMessage, target: BlobTarget, path: string, timeoutMs: number): Promise<UpstreamVerdict> {
    return new Promise<UpstreamVerdict>((resolve, reject) => {
      let settled = false;
      // A timer of its own, not the request's socket timeout: that one starts only once the socket
      // is connected, so a connection that never completes would not be bounded.
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        probe.destroy();
        reject(timedOut());
      }, timeoutMs);
      const probe = request({
        hostname,
        port,
        method: 'HEAD',
        path: basePath + path,
        headers: probeHeaders(req, opts.forwarded),
        agent: opts.agent,
      });
      probe.on('error', (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new RegistryRedirectError('UPSTREAM_UNREACHABLE', 'upstream registry unreachable', { cause: err }));
      });
      probe.on('response', (res) => {
        res.resume();
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const status = res.statusCode ?? 0;
        if ((status >= 200 && status < 300) || (acceptRedirect && isRedirect(status))) {
          const stored = res.headers['docker-content-digest'];
          const digest = typeof stored === 'string' && isValidDigest(stored) ? stored : target.digest;
          const length = status < 300 ? Number(res.headers['content-length']) : Number.NaN;
          resolve({ allowed: true, size: Number.isSafeInteger(length) && length >= 0 ? length : undefined, digest });
        } else {
          resolve({ allowed: false, status });
        }
      });
      probe.end();
    });
  }

  return function authorizeViaUpstream(req: IncomingMessage, target: BlobTarget, path: string): Promise<UpstreamVerdict> {
    if (pending >= maxPending) {
      return Promise.reject(new RegistryRedirectError('AUTHORIZE_QUEUE_FULL', `${pending} authorizing HEADs are already pending (limits.maxPendingAuthorizations)`));
    }
    pending++;
    // Queued here rather than in the agent: a probe withdrawn at its deadline then never opens a
    // connection, and the deadline counts from now, the wait for a connection included.
    const verdict = slots ? withSlot(slots, opts.timeoutMs, (ms) => send(req, target, path, ms), timedOut) : send(req, target, path, opts.timeoutMs);
    return verdict.finally(() => {
      pending--;
    });
  };
}

/** Fails closed when the probe got no answer at all: 504 on timeout, 502 when unreachable, 503 when too many are pending. */
export function answerProbeFailure(res: ServerResponse, err: unknown, timeoutMs: number): void {
  if (err instanceof RegistryRedirectError && err.code === 'AUTHORIZE_QUEUE_FULL') {
    // The queue drains within one authorize timeout at worst.
    sendOciError(res, 503, 'UNAVAILABLE', 'too many blob requests are waiting for authorization; retry later', null, { 'Retry-After': String(Math.max(1, Math.ceil(timeoutMs / 1_000))) });
  } else if (err instanceof RegistryRedirectError && err.code === 'UPSTREAM_TIMEOUT') {
    sendOciError(res, 504, 'UNAVAILABLE', 'upstream registry did not answer in time', { timeoutMs });
  } else {
    sendOciError(res, 502, 'UNAVAILABLE', 'upstream registry unreachable', upstreamFailureDetail(err));
  }
}

/**
 * Upstream mode: a 2xx on the HEAD probe is a grant (a 3xx only with `acceptRedirect`); any other
 * status is `deny`, so the real GET goes upstream and its answer is relayed. No answer at all
 * fails closed with an OCI error: 504 on timeout, 502 when unreachable. With a decision `cache`,
 * answers are reused per (SHA-256 of the caller's credentials, repository, digest).
 */
export function createUpstreamAuthorizer(opts: UpstreamAuthorizerOptions & { logger: Logger; cache?: DecisionCache<UpstreamVerdict> | undefined }): Authorizer {
  const probe = createUpstreamProbe(opts);
  const cache = opts.cache;
  const outcome = (verdict: UpstreamVerdict): AuthOutcome => (verdict.allowed ? verdict : 'deny');
  const failed = (err: unknown, res: ServerResponse, target: BlobTarget): AuthOutcome => {
    opts.logger.warn({ error: errorForLog(err), repository: target.repository, digest: target.digest }, 'authorizing HEAD failed');
    answerProbeFailure(res, err, opts.timeoutMs);
    return 'answered';
  };
  return (req, res, target, path) => {
    if (cache === undefined) return probe(req, target, path).then(outcome, (err: unknown) => failed(err, res, target));
    const key = decisionKey(target, connectionCredentialDigest(req));
    // A fresh cached answer is returned as it is: no promise, no microtask on the hot path.
    const hit = cache.peek(key);
    if (hit !== undefined) return outcome(hit);
    return cache.get(key, () => probe(req, target, path)).then(outcome, (err: unknown) => failed(err, res, target));
  };
}
