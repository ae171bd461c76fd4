import type http from 'node:http';
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { sendOciError } from './errors.js';
import { applyForwardedFields, type ForwardedHeaders } from './forwarded.js';
import { createSlotQueue } from './limits.js';
import { errorForLog } from './log.js';
import { readBufferValve } from './read-buffers.js';
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

function hasBody(req: IncomingMessage): boolean {
  // HTTP/2 needs neither header for a body: the stream says whether one follows its HEADERS frame.
  if (req.httpVersionMajor >= 2) return (req as unknown as { stream?: { endAfterHeaders?: boolean } }).stream?.endAfterHeaders === false;
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * Streams `req` upstream. `onResponse` sees the upstream's response head before it is copied to
 * the client (push steering edits the upload `Location` there).
 */
export type PassThrough = (req: IncomingMessage, res: ServerResponse, onResponse?: (upstreamRes: IncomingMessage) => void) => void;

const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT']);

/**
 * Headers that describe one connection, not the message (RFC 9110 7.6.1), in either direction.
 * `Upgrade` is among them: an upstream switching protocols on a pooled connection would hand the
 * next request's bytes to another protocol. HTTP/2 forbids all of them in a response (RFC 9113
 * 8.2.2): one left in (Node's own HTTP servers send `Keep-Alive: timeout=5`) makes Node reset the
 * client's stream with INTERNAL_ERROR instead of answering.
 */
const CONNECTION_SPECIFIC = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'];
const NOT_FORWARDED_UPSTREAM = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'http2-settings']);
const NOT_COPIED_TO_CLIENT = new Set(CONNECTION_SPECIFIC);

/** Removes {@link CONNECTION_SPECIFIC} headers and the ones the `Connection` header names. */
export function stripConnectionHeaders(headers: http.IncomingHttpHeaders): void {
  const named = headers.connection;
  if (typeof named === 'string') for (const token of named.split(',')) delete headers[token.trim().toLowerCase()];
  for (const name of CONNECTION_SPECIFIC) delete headers[name];
}

function dropNamed(headers: OutgoingHttpHeaders, connection: string | string[] | undefined): void {
  if (typeof connection !== 'string') return;
  for (const token of connection.split(',')) delete headers[token.trim().toLowerCase()];
}

/**
 * The upstream request's headers: the client's end-to-end headers (`Host` kept; HTTP/2's
 * `:authority` becomes `Host`, pseudo-headers dropped) with this proxy's `X-Forwarded-*`.
 */
function upstreamHeaders(req: IncomingMessage, forwarded: ForwardedHeaders, body: boolean): OutgoingHttpHeaders {
  const incoming: IncomingHttpHeaders = req.headers;
  const out: OutgoingHttpHeaders = {};
  for (const name in incoming) {
    if (name.charCodeAt(0) === 0x3a /* : */ || NOT_FORWARDED_UPSTREAM.has(name)) continue;
    out[name] = incoming[name];
  }
  dropNamed(out, incoming.connection);
  const authority = incoming[':authority'];
  if (typeof authority === 'string' && authority !== '') out.host = authority;
  applyForwardedFields(out, forwarded(req));
  if (body) {
    // The body is re-framed on the upstream connection: chunked unless its length is known (an
    // HTTP/2 body may have neither header; Node frames only the methods it chunks by default).
    if (out['content-length'] === undefined) out['transfer-encoding'] = 'chunked';
    // A chunked body never shares an upstream connection with the next request: if the two ends
    // ever disagreed on where it ends, the rest could not become a request of someone else's.
    if (out['transfer-encoding'] !== undefined) out.connection = 'close';
  } else {
    delete out['transfer-encoding'];
    if ((req.method === 'DELETE' || req.method === 'OPTIONS') && out['content-length'] === undefined) out['content-length'] = '0';
  }
  return out;
}

/**
 * Origin-form only (`/path?query`). A target starting `//` or `/\` is one that URL parsers (and
 * so routers and registries) read as a host name; `*` and absolute-form are for forward proxies.
 */
function isForwardablePath(url: string | undefined): url is string {
  if (url === undefined || url.charCodeAt(0) !== 0x2f /* / */) return false;
  const second = url.charCodeAt(1);
  return second !== 0x2f && second !== 0x5c /* \ */;
}

/**
 * Streams a request to the upstream and its response back, byte for byte, with backpressure both
 * ways, over the pooled keep-alive connections of `agent` (node:http/https). `Host` is kept and the
 * `X-Forwarded-*` headers are this proxy's own (`forwarded`), so the registry builds upload
 * `Location`s that point at this proxy and cannot be told a client-chosen address.
 * Connection-specific headers are not forwarded in either direction. Failures become OCI error
 * JSON: 504 when the upstream did not answer in time, 502 when it could not be reached; a
 * response already under way is reset.
 *
 * Written on node:http rather than http-proxy-middleware: in front of distribution it costs about
 * a quarter less CPU per request, and the proxy shares its cores with the registry (see
 * docs/performance.md, pass-through).
 */
export function createPassThrough(opts: PassThroughOptions): PassThrough {
  const { upstream, timeoutMs, agent, logger, forwarded, onUpstreamResponse } = opts;
  // getBuiltinModule: node:https costs more to load than the rest of the package; only an https upstream needs it.
  const request = upstream.protocol === 'https:' ? process.getBuiltinModule('node:https').request : process.getBuiltinModule('node:http').request;
  const hostname = upstream.hostname.replace(/^\[|\]$/g, '');
  const port = upstream.port || (upstream.protocol === 'https:' ? 443 : 80);
  const basePath = upstream.pathname.replace(/\/+$/, '');
  const slots = opts.maxConcurrent === undefined ? undefined : createSlotQueue(opts.maxConcurrent);

  const answerTimeout = (res: ServerResponse): void =>
    sendOciError(res, 504, 'UNAVAILABLE', 'upstream registry did not answer in time', { timeoutMs });

  return (req, res, onResponse) => {
    const url = req.url;
    if (!isForwardablePath(url)) {
      sendOciError(res, 400, 'UNSUPPORTED', 'request path cannot be parsed', { path: pathForLog(url).slice(0, 100) });
      return;
    }
    const body = hasBody(req);
    let proxyReq: ClientRequest | undefined;
    let started = false;
    let timedOut = false;
    let responded = false;
    let withdraw: (() => void) | undefined;

    const fail = (err: Error): void => {
      if (res.destroyed || (responded && res.headersSent)) {
        // The client is gone, or the response is under way: reset it rather than end it short.
        if (!res.writableFinished) res.destroy();
        return;
      }
      const code = (err as NodeJS.ErrnoException).code ?? '';
      const timeout = timedOut || TIMEOUT_CODES.has(code);
      logger.warn({ error: errorForLog(err), method: req.method, path: pathForLog(url) }, timeout ? 'upstream timed out' : 'upstream unreachable');
      if (timeout) answerTimeout(res);
      else sendOciError(res, 502, 'UNAVAILABLE', 'upstream registry unreachable', upstreamFailureDetail(err));
    };

    // The request's socket timeout would start only once a connection is assigned; this deadline
    // starts now, so time spent queued (for a slot or for a connection) counts. Without a body the
    // same timer then bounds the response's inactivity (re-armed by every chunk): one timer per
    // request instead of a socket timeout and its listeners as well.
    let timer: NodeJS.Timeout | undefined = setTimeout(() => {
      timer = undefined;
      if (!started) {
        withdraw?.();
        logger.warn({ method: req.method, path: pathForLog(url) }, 'upstream timed out: no free upstream connection');
        answerTimeout(res);
      } else if (proxyReq) {
        timedOut = true;
        proxyReq.destroy();
      }
    }, timeoutMs);
    const disarm = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    };

    res.once('close', () => {
      disarm();
      if (!started) {
        withdraw?.();
        return;
      }
      slots?.release();
      // The client went away (or its response was reset) before the exchange ended.
      if (!res.writableFinished) proxyReq?.destroy();
    });

    const run = (): void => {
      started = true;
      let headers: OutgoingHttpHeaders;
      try {
        headers = upstreamHeaders(req, forwarded, body);
        proxyReq = request({ hostname, port, method: req.method, path: basePath + url, headers, agent });
      } catch (err) {
        // Node refuses to send what it would not have parsed (a character not allowed in a path
        // or header value, as an HTTP/2 client can send them).
        sendOciError(res, 400, 'UNSUPPORTED', 'request cannot be forwarded', { reason: (err as NodeJS.ErrnoException).code ?? 'invalid' });
        return;
      }
      const upstreamReq = proxyReq;
      upstreamReq.on('error', fail);
      if (body) {
        // Inactivity bound for the whole exchange once it has a connection: the body, the response.
        upstreamReq.setTimeout(timeoutMs, () => {
          timedOut = true;
          upstreamReq.destroy();
        });
        // A request with a body (an upload) has a deadline until its upstream connection is open;
        // after that only inactivity bounds it: the body may take long.
        upstreamReq.once('socket', (socket) => {
          if (socket.connecting) socket.once('connect', disarm);
          else disarm();
        });
        req.on('error', () => upstreamReq.destroy());
        req.pipe(upstreamReq);
        const valve = readBufferValve();
        if (valve) req.on('data', valve);
      } else {
        upstreamReq.end();
      }
      upstreamReq.on('response', (upstreamRes: IncomingMessage) => {
        responded = true;
        if (body) disarm();
        else timer?.refresh();
        const status = upstreamRes.statusCode ?? 502;
        // Before the head is copied, so a hook may edit headers.
        onUpstreamResponse?.(req, status);
        onResponse?.(upstreamRes);
        if (body && !upstreamReq.writableFinished) stopBodyOnEarlyResponse(req, upstreamReq, upstreamRes);
        upstreamRes.on('error', () => undefined);
        upstreamRes.once('close', () => {
          // The upstream's body ended short: reset the client's response rather than end it cleanly.
          if (!upstreamRes.complete && !res.writableFinished) res.destroy();
        });
        if (res.destroyed) {
          upstreamRes.destroy();
          return;
        }
        try {
          writeHead(req, res, upstreamRes);
        } catch (err) {
          // A header Node will not write (the upstream's parser is more lenient than its writer).
          upstreamRes.destroy();
          logger.warn({ error: errorForLog(err), method: req.method, path: pathForLog(url) }, 'upstream response head cannot be relayed');
          if (res.headersSent) return void res.destroy();
          for (const name of res.getHeaderNames()) res.removeHeader(name);
          sendOciError(res, 502, 'UNAVAILABLE', 'upstream response cannot be relayed', { reason: (err as NodeJS.ErrnoException).code ?? 'invalid' });
          return;
        }
        // What `pipe` does, with the inactivity timer re-armed per chunk and fewer listeners.
        upstreamRes.on('data', (chunk: Buffer) => {
          timer?.refresh();
          if (!res.write(chunk)) upstreamRes.pause();
        });
        res.on('drain', () => upstreamRes.resume());
        upstreamRes.once('end', () => {
          disarm();
          res.end();
        });
      });
    };
    if (slots) withdraw = slots.acquire(run);
    else run();
  };
}

/**
 * Copies status and the end-to-end headers, one by one with `setHeader`: whoever reads the
 * response afterwards sees them (`getHeader('content-length')` counts proxied blob bytes; the
 * access log adds its `X-Request-Id` only when the upstream sent none).
 */
function writeHead(req: IncomingMessage, res: ServerResponse, upstreamRes: IncomingMessage): void {
  const headers = upstreamRes.headers;
  const named = typeof headers.connection === 'string' ? headers.connection.toLowerCase().split(',').map((t) => t.trim()) : undefined;
  for (const name in headers) {
    if (NOT_COPIED_TO_CLIENT.has(name) || named?.includes(name)) continue;
    res.setHeader(name, headers[name]!);
  }
  const status = upstreamRes.statusCode ?? 502;
  // HTTP/2 has no reason phrase (Node warns when given one).
  if (req.httpVersionMajor < 2 && upstreamRes.statusMessage) res.writeHead(status, upstreamRes.statusMessage);
  else res.writeHead(status);
}

/**
 * The upstream answered before the whole body was sent (e.g. 401 or 413 to an upload). The rest of
 * the body is read and dropped, so the client sees that answer instead of a reset; the upstream
 * request ends with the response.
 */
function stopBodyOnEarlyResponse(req: IncomingMessage, upstreamReq: ClientRequest, upstreamRes: IncomingMessage): void {
  const drain = (): void => {
    if (upstreamReq.writableFinished) return;
    req.unpipe(upstreamReq);
    req.resume();
  };
  upstreamRes.once('end', drain);
  upstreamRes.once('close', () => {
    if (upstreamReq.writableFinished) return;
    drain();
    upstreamReq.destroy();
  });
}

/** The path of a request URL without the query string (queries may carry upload state). */
export function pathForLog(url: string | undefined): string {
  if (!url) return '';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}
