import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type * as hpm from 'http-proxy-middleware';
import { sendOciError } from './errors.js';
import { requireDependency } from './lazy.js';
import { applyForwardedFields, type ForwardedHeaders } from './forwarded.js';
import { createSlotQueue } from './limits.js';
import { errorForLog } from './log.js';
import { upstreamFailureDetail } from './upstream-tls.js';
import type { Logger } from './types.js';

export interface PassThroughOptions {
  upstream: URL;
  /**
   * Upstream response headers must arrive within this many milliseconds of the request reaching
   * this function (waiting for a slot or a connection included), else 504. For a request with a
   * body the deadline ends once its upstream connection is open (the body may take long); after
   * that, and while responses stream, the bound is on inactivity.
   */
  timeoutMs: number;
  agent: http.Agent;
  logger: Logger;
  /** The `X-Forwarded-*` headers sent upstream instead of the client's (see forwarded.ts). */
  forwarded: ForwardedHeaders;
  /** Called with the upstream's status before its response is relayed (e.g. to drop cached grants after a DELETE). */
  onUpstreamResponse?: ((req: IncomingMessage, status: number) => void) | undefined;
  /** Requests streaming through at once; more wait in order for a slot until their deadline. Default: no bound. */
  maxConcurrent?: number | undefined;
}

/** One request's deadline: armed when it arrives, disarmed by the upstream's response headers. */
interface Deadline {
  timer: NodeJS.Timeout | undefined;
  proxyReq: http.ClientRequest | undefined;
  expired: boolean;
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * Streams `req` upstream. `onResponse` sees the upstream's response head before it is copied to
 * the client (push steering edits the upload `Location` there).
 */
export type PassThrough = (req: IncomingMessage, res: ServerResponse, onResponse?: (upstreamRes: IncomingMessage) => void) => void;

const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT', 'UND_ERR_HEADERS_TIMEOUT']);

const CONNECTION_SPECIFIC = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'];

/**
 * Removes the connection-specific headers HTTP/2 forbids in a response (RFC 9113 8.2.2), and the
 * ones the upstream's `Connection` names. httpxy drops only `connection` and `transfer-encoding`
 * for HTTP/2 clients; any other one left in (Node's own HTTP servers send `Keep-Alive:
 * timeout=5`) makes Node reset the client's stream with INTERNAL_ERROR instead of answering.
 */
export function stripConnectionHeaders(headers: http.IncomingHttpHeaders): void {
  const named = headers.connection;
  if (typeof named === 'string') for (const token of named.split(',')) delete headers[token.trim().toLowerCase()];
  for (const name of CONNECTION_SPECIFIC) delete headers[name];
}

/**
 * Streams a request to the upstream and its response back, byte for byte (http-proxy-middleware).
 * `Host` is kept and the `X-Forwarded-*` headers are this proxy's own (`forwarded`), so the registry
 * builds upload `Location`s that point at this proxy and cannot be told a client-chosen address. Failures become OCI error JSON: 504 when the upstream did
 * not answer in time, 502 when it could not be reached; a response already under way is reset.
 */
export function createPassThrough(opts: PassThroughOptions): PassThrough {
  // The proxy request of each client request whose upstream timer fired: its error is a 504.
  const timedOut = new WeakSet<IncomingMessage>();
  // Loaded with the first proxy-mode middleware, not when the package is imported.
  const { createProxyMiddleware } = requireDependency<typeof hpm>('http-proxy-middleware');
  const deadlines = new WeakMap<IncomingMessage, Deadline>();
  const slots = opts.maxConcurrent === undefined ? undefined : createSlotQueue(opts.maxConcurrent);
  // Per-request response hooks (push steering); most requests have none.
  const responseHooks = new WeakMap<IncomingMessage, (upstreamRes: IncomingMessage) => void>();
  const proxy = createProxyMiddleware<IncomingMessage, ServerResponse>({
    target: opts.upstream.href,
    changeOrigin: false,
    // httpxy's xfwd keeps a client's own X-Forwarded-For/-Host; `forwarded` writes them instead.
    xfwd: false,
    ejectPlugins: true,
    proxyTimeout: opts.timeoutMs,
    agent: opts.agent,
    // `ejectPlugins` drops the default plugins, including the one that wires `on:` handlers, so
    // ours are attached here. Without an 'error' listener, httpxy's emit would throw.
    plugins: [
      (proxyServer) => {
        proxyServer.on('proxyReq', (proxyReq, req) => {
          proxyReq.once('timeout', () => timedOut.add(req));
          const deadline = deadlines.get(req);
          if (deadline === undefined) return;
          deadline.proxyReq = proxyReq;
          if (deadline.expired) {
            timedOut.add(req);
            proxyReq.destroy();
          } else if (hasBody(req)) {
            const socket = proxyReq.socket;
            if (socket && socket.connecting) socket.once('connect', () => clearTimeout(deadline.timer));
            else clearTimeout(deadline.timer);
          }
        });
        proxyServer.on('proxyRes', (_proxyRes, req) => {
          clearTimeout(deadlines.get(req)?.timer);
        });
        proxyServer.on('proxyRes', (proxyRes, req) => {
          if (req.httpVersionMajor >= 2) stripConnectionHeaders(proxyRes.headers);
        });
        const onUpstreamResponse = opts.onUpstreamResponse;
        // Emitted before the response head is copied to the client, so a hook may edit headers.
        proxyServer.on('proxyRes', (proxyRes, req) => {
          onUpstreamResponse?.(req, proxyRes.statusCode ?? 0);
          responseHooks.get(req)?.(proxyRes);
        });
        proxyServer.on('error', (err, req, res) => {
          if (!req || !res || !('writeHead' in res)) {
            res?.destroy();
            return;
          }
          const code = (err as NodeJS.ErrnoException).code ?? '';
          const timeout = timedOut.has(req) || TIMEOUT_CODES.has(code);
          opts.logger.warn(
            { error: errorForLog(err), method: req.method, path: pathForLog(req.url) },
            timeout ? 'upstream timed out' : 'upstream unreachable',
          );
          if (timeout) {
            sendOciError(res, 504, 'UNAVAILABLE', 'upstream registry did not answer in time', { timeoutMs: opts.timeoutMs });
          } else {
            sendOciError(res, 502, 'UNAVAILABLE', 'upstream registry unreachable', upstreamFailureDetail(err));
          }
        });
      },
    ],
  });
  const start = (req: IncomingMessage, res: ServerResponse): void => {
    // httpxy copies req.headers into the upstream request; this is the one place they are rewritten
    // (its 'proxyReq' event comes too late for piped bodies and never for `Expect: 100-continue`).
    applyForwardedFields(req.headers, opts.forwarded(req));
    // Failures reach the 'error' listener above; the promise itself never rejects then. `next` is
    // called when hpm declines a request it cannot parse as a URL (e.g. "//" or "/\\"): answer it,
    // or the client would wait forever on a connection no timeout covers.
    void proxy(req, res, () => {
      if (!res.headersSent) sendOciError(res, 400, 'UNSUPPORTED', 'request path cannot be parsed', { path: pathForLog(req.url).slice(0, 100) });
    });
  };

  return (req, res, onResponse) => {
    if (onResponse) responseHooks.set(req, onResponse);
    // The request's socket timeout would start only once a connection is assigned; this deadline
    // starts now, so time spent queued (for a slot or for a connection) counts.
    const deadline: Deadline = { timer: undefined, proxyReq: undefined, expired: false };
    deadlines.set(req, deadline);
    let started = false;
    let withdraw: (() => void) | undefined;
    deadline.timer = setTimeout(() => {
      deadline.expired = true;
      if (!started) {
        withdraw?.();
        opts.logger.warn({ method: req.method, path: pathForLog(req.url) }, 'upstream timed out: no free upstream connection');
        sendOciError(res, 504, 'UNAVAILABLE', 'upstream registry did not answer in time', { timeoutMs: opts.timeoutMs });
      } else if (deadline.proxyReq) {
        timedOut.add(req);
        deadline.proxyReq.destroy();
      }
    }, opts.timeoutMs);
    res.once('close', () => {
      clearTimeout(deadline.timer);
      if (started) slots?.release();
      else withdraw?.();
    });
    const run = (): void => {
      started = true;
      start(req, res);
    };
    if (slots) withdraw = slots.acquire(run);
    else run();
  };
}

/** The path of a request URL without the query string (queries may carry upload state). */
export function pathForLog(url: string | undefined): string {
  if (!url) return '';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}
