import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type * as hpm from 'http-proxy-middleware';
import { sendOciError } from './errors.js';
import { requireDependency } from './lazy.js';
import { applyForwardedFields, type ForwardedHeaders } from './forwarded.js';
import { errorForLog } from './log.js';
import type { Logger } from './types.js';

export interface PassThroughOptions {
  upstream: URL;
  /** Upstream response headers must arrive within this many milliseconds, else 504. */
  timeoutMs: number;
  agent: http.Agent;
  logger: Logger;
  /** The `X-Forwarded-*` headers sent upstream instead of the client's (see forwarded.ts). */
  forwarded: ForwardedHeaders;
  /** Called with the upstream's status before its response is relayed (e.g. to drop cached grants after a DELETE). */
  onUpstreamResponse?: ((req: IncomingMessage, status: number) => void) | undefined;
}

/**
 * Streams `req` upstream. `onResponse` sees the upstream's response head before it is copied to
 * the client (push steering edits the upload `Location` there).
 */
export type PassThrough = (req: IncomingMessage, res: ServerResponse, onResponse?: (upstreamRes: IncomingMessage) => void) => void;

const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT', 'UND_ERR_HEADERS_TIMEOUT']);

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
            sendOciError(res, 502, 'UNAVAILABLE', 'upstream registry unreachable', { reason: code || 'error' });
          }
        });
      },
    ],
  });
  return (req, res, onResponse) => {
    if (onResponse) responseHooks.set(req, onResponse);
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
}

/** The path of a request URL without the query string (queries may carry upload state). */
export function pathForLog(url: string | undefined): string {
  if (!url) return '';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}
