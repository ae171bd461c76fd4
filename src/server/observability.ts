import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import type { IncomingMessage, OutgoingHttpHeader, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import { symbols as pinoSymbols, stdSerializers as pinoStdSerializers, type Logger as PinoLogger } from 'pino';
import type { PrometheusMetrics } from '../metrics.js';
import { pathForLog } from '../proxy.js';
import { ServedResponse } from './response.js';
import type { Logger } from '../types.js';
import { createServer } from './node-http.js';

/** Binds `server` to `listen` (with `backlog`, else Node's default) and returns its `http://host:port`. */
export async function listenOn(server: Server, listen: { host: string; port: number }, backlog?: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: listen.port, host: listen.host, ...(backlog === undefined ? {} : { backlog }) }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

/**
 * The separate metrics listener (`metrics.listen`): serves only `path`, so the registry port never
 * exposes metrics and the metrics port never exposes the registry.
 */
export async function startMetricsServer(
  metrics: PrometheusMetrics,
  listen: { host: string; port: number },
  path: string,
): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    if (req.url === path) {
      metrics.handler(req, res);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': '10' });
    res.end('not found\n');
  });
  return { url: await listenOn(server, listen), close: () => closeNow(server) };
}

/** Stops listening and drops the open connections too, so an idle keep-alive client cannot hold the close. */
export function closeNow(server: http.Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * A new request id, UUID-shaped: a random UUID's first 24 characters, drawn once per process,
 * then a 48-bit counter in hex. Unique within the process by the counter and across processes by
 * the random part; cheaper than a random UUID per request.
 */
let requestIdPrefix: string | undefined;
let requestCounter = 0;
function nextRequestId(): string {
  requestIdPrefix ??= randomUUID().slice(0, 24);
  requestCounter = (requestCounter + 1) % 0x1_0000_0000_0000;
  return requestIdPrefix + requestCounter.toString(16).padStart(12, '0');
}

/** Buffered access lines are written at this size, or this many milliseconds after the first. */
const FLUSH_BYTES = 65_536;
const FLUSH_MS = 20;

function isPino(logger: Logger): logger is Logger & PinoLogger {
  const l = logger as Partial<PinoLogger>;
  return typeof l.child === 'function' && typeof l.levels === 'object' && typeof l.level === 'string';
}

/** The access log of one server: its response class, and the writer of its buffered lines. */
export interface AccessLog {
  /** For `createServer({ ServerResponse })`: every response it creates writes one line when it closes. */
  readonly ServerResponse: typeof ServerResponse;
  /**
   * For listeners whose response class cannot be replaced (the TLS listener serves HTTP/2, whose
   * compatibility responses are not `http.ServerResponse`): call first for every request; it sets
   * `X-Request-Id` and writes the same line when the response closes, at the cost of a listener.
   */
  logRequest(req: IncomingMessage, res: ServerResponse): void;
  /** Writes the lines not yet written (also done at 64 KiB, 20 ms after the first waiting line, and at process exit). */
  flush(): void;
}

/** The fields of one access line. */
interface AccessLine {
  id: string;
  method: string | undefined;
  path: string;
  remoteAddress: string | undefined;
  userAgent: string | undefined;
  statusCode: number;
  responseTime: number;
  aborted: boolean;
  /** `/healthz` or `/readyz` exactly, as the server answers them. */
  probe: boolean;
}

/** The access line of a response that has closed (HTTP/1.1 or HTTP/2 compatibility response). */
function accessLine(req: IncomingMessage, res: ServerResponse, id: string, startedAt: number): AccessLine {
  return {
    id,
    method: req.method,
    path: pathForLog(req.url),
    remoteAddress: req.socket?.remoteAddress,
    userAgent: req.headers['user-agent'],
    statusCode: res.statusCode,
    responseTime: Date.now() - startedAt,
    aborted: req.readableAborted || !res.writableEnded,
    probe: req.url === '/healthz' || req.url === '/readyz',
  };
}

type PinoInternals = Record<symbol, unknown>;

/** pino's numbers for the levels an access line is written at: debug (probes), info, warn (5xx). */
type AccessLevel = 20 | 30 | 40;
const LEVEL_NAMES = { 20: 'debug', 30: 'info', 40: 'warn' } as const;

/**
 * Serializes access lines the way `logger.info(obj, msg)` would, from pino's own pieces (level
 * prefix, timestamp function, bindings, line end), when the logger has nothing that would change
 * the line (mixin, log formatter, serializers for these keys, redaction, nested key, message prefix,
 * stream hooks or a multistream). Returns `undefined` for any other logger: it is then called the
 * ordinary way.
 */
function plainPinoLine(logger: PinoLogger): ((line: AccessLine, level: AccessLevel) => string) | undefined {
  const s = pinoSymbols as typeof pinoSymbols & { readonly msgPrefixSym: symbol };
  const p = logger as unknown as PinoInternals;
  const formatters = p[s.formattersSym] as { log?: unknown } | undefined;
  const serializers = (p[s.serializersSym] ?? {}) as Record<string, unknown>;
  const hooks = (p[s.hooksSym] ?? {}) as { streamWrite?: unknown; logMethod?: unknown };
  const stream = p[s.streamSym] as Record<symbol, unknown> | undefined;
  const stringifiers = (p[s.stringifiersSym] ?? {}) as Record<string | symbol, unknown>;
  const levels = p[s.lsCacheSym] as Record<number, string> | undefined;
  const time = p[s.timeSym];
  if (
    p[s.mixinSym] ||
    formatters?.log ||
    ['req', 'res', 'responseTime', 'msg'].some((k) => serializers[k]) ||
    (serializers.err !== undefined && serializers.err !== pinoStdSerializers.err) ||
    Reflect.ownKeys(stringifiers).length > 0 ||
    p[s.nestedKeySym] ||
    p[s.msgPrefixSym] ||
    p[s.messageKeySym] !== 'msg' ||
    hooks.streamWrite ||
    hooks.logMethod ||
    !stream ||
    stream[s.needsMetadataGsym] === true ||
    typeof levels?.[20] !== 'string' ||
    typeof levels[30] !== 'string' ||
    typeof levels[40] !== 'string' ||
    typeof time !== 'function' ||
    typeof p[s.endSym] !== 'string'
  ) {
    return undefined;
  }
  const timestamp = time as () => string;
  return (l, level) => {
    // Only the path and the user agent are client text; the id is a checked token or a UUID, the
    // method a token the HTTP parser accepted, the address an IP literal.
    let text = `${levels[level]}${timestamp()}${p[s.chindingsSym] as string},"req":{"id":"${l.id}"`;
    if (l.method !== undefined) text += `,"method":"${l.method}"`;
    text += `,"path":${JSON.stringify(l.path)}`;
    if (l.remoteAddress !== undefined) text += `,"remoteAddress":"${l.remoteAddress}"`;
    if (l.userAgent !== undefined) text += `,"userAgent":${JSON.stringify(l.userAgent)}`;
    text += `},"res":{"statusCode":${l.statusCode}},"responseTime":${l.responseTime}`;
    text += l.aborted ? ',"msg":"request aborted"' : ',"msg":"request completed"';
    return text + (p[s.endSym] as string);
  };
}

/**
 * Access log: one line per request, in pino-http's format (`req.id`, method, path without the
 * query, remote address, user agent; `res.statusCode`; `responseTime` in ms; `request completed`
 * or `request aborted`; at `warn` for a 5xx, at `debug` for `/healthz` and `/readyz`). A 5xx carries no `err`: the status is the whole story, and the
 * cause (if any) has its own line.
 * `req.id` is the caller's `X-Request-Id` when it is a plain token, else a UUID; it is echoed in the
 * response. Headers are never logged: they carry `Authorization`/`Cookie`, and `Location` carries
 * signatures. Only with a pino logger; other loggers get no access log.
 *
 * On the redirect fast path the whole request costs the server about 13 µs of CPU, and the generic
 * ways of logging it cost as much again (pino-http's child logger per request; `logger.info` with
 * its per-key serializer walk; `setHeader` making `writeHead` merge every header; a `close`
 * listener per response; a write system call per line). So:
 * - the response class carries the request's state and writes its line from `emit('close')`;
 * - `X-Request-Id` joins the headers given to `writeHead` (one object spread), and goes through
 *   `setHeader` only when the response was built with `setHeader` anyway (pass-through);
 * - the line is serialized from pino's own pieces (see {@link plainPinoLine}) when the logger is
 *   plain, else written with `logger.info`/`logger.warn`;
 * - lines are joined and written at 64 KiB, 20 ms after the first one waiting, and at process
 *   exit (the timer is unref'd: it never keeps a stopping server alive). A server that stops on
 *   SIGTERM, or exits on an uncaught error, writes them from its `exit` handler, so no line is lost
 *   (test/e2e/cli.e2e.test.ts, "SIGTERM loses no access-log line"). Only a process killed outright
 *   (SIGKILL, a native crash) loses the lines of its last 20 ms.
 */
export function accessLog(logger: Logger): AccessLog | undefined {
  if (!isPino(logger)) return undefined;
  const serialize = plainPinoLine(logger);
  const stream = (logger as unknown as PinoInternals)[pinoSymbols.streamSym] as { write(text: string): unknown; flushSync?: () => void };
  // Lines waiting, joined at the flush: one flat string, where `+=` would build a rope of
  // thousands of pieces that the stream then flattens, measures and encodes.
  let pending: string[] = [];
  let pendingLength = 0;
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (pending.length === 0) return;
    const text = pending.join('');
    pending = [];
    pendingLength = 0;
    stream.write(text);
  };
  // pino's destination for stdout writes asynchronously, and pino's own exit hook (registered
  // before this one) has already flushed it: what is handed over now must be written at once.
  const onExit = (): void => {
    flush();
    try {
      stream.flushSync?.();
    } catch {
      // Not open yet or already destroyed: nothing more can be written.
    }
  };
  process.on('exit', onExit);

  const write = (l: AccessLine): void => {
    // Load balancers probe every few seconds: readiness changes are logged by readiness.ts instead.
    const level: AccessLevel = l.probe ? 20 : l.statusCode >= 500 ? 40 : 30;
    const name = LEVEL_NAMES[level];
    if (!logger.isLevelEnabled(name)) return;
    if (!serialize) {
      const line = {
        req: { id: l.id, method: l.method, path: l.path, remoteAddress: l.remoteAddress, userAgent: l.userAgent },
        res: { statusCode: l.statusCode },
        responseTime: l.responseTime,
      };
      logger[name](line, l.aborted ? 'request aborted' : 'request completed');
      return;
    }
    const text = serialize(l, level);
    pending.push(text);
    pendingLength += text.length;
    // At 50 connections an event-loop turn handles one or two requests, so a write per turn is
    // nearly a write per line (~3 µs of system call each); a short timer gathers hundreds.
    if (pendingLength >= FLUSH_BYTES) flush();
    else if (!scheduled) {
      scheduled = true;
      setTimeout(flush, FLUSH_MS).unref();
    }
  };

  class LoggedResponse extends ServedResponse {
    readonly requestId: string;
    readonly startedAt = Date.now();
    /** Headers were set one by one (setHeader/appendHeader): `writeHead` merges them anyway. */
    private progressive = false;
    private logged = false;

    constructor(req: IncomingMessage, options?: object) {
      // Node passes server options (highWaterMark, rejectNonStandardBodyWrites) as a second
      // argument, which @types/node does not declare; passed on as given (no spread per request).
      // @ts-expect-error -- see above
      super(req, options);
      const given = req.headers['x-request-id'];
      this.requestId = typeof given === 'string' && REQUEST_ID.test(given) ? given : nextRequestId();
      (req as IncomingMessage & { id?: string }).id = this.requestId;
    }

    override setHeader(name: string, value: number | string | readonly string[]): this {
      this.progressive = true;
      return super.setHeader(name, value);
    }

    override appendHeader(name: string, value: string | readonly string[]): this {
      this.progressive = true;
      return super.appendHeader(name, value);
    }

    override writeHead(statusCode: number, statusMessage?: string, headers?: OutgoingHttpHeaders | OutgoingHttpHeader[]): this;
    override writeHead(statusCode: number, headers?: OutgoingHttpHeaders | OutgoingHttpHeader[]): this;
    override writeHead(
      statusCode: number,
      messageOrHeaders?: string | OutgoingHttpHeaders | OutgoingHttpHeader[],
      maybeHeaders?: OutgoingHttpHeaders | OutgoingHttpHeader[],
    ): this {
      const headers = typeof messageOrHeaders === 'string' ? maybeHeaders : messageOrHeaders;
      if (!this.progressive && headers !== undefined && !Array.isArray(headers) && !this.headersSent) {
        const all = { ...headers, 'X-Request-Id': this.requestId };
        return typeof messageOrHeaders === 'string' ? super.writeHead(statusCode, messageOrHeaders, all) : super.writeHead(statusCode, all);
      }
      if (!this.headersSent && !this.hasHeader('x-request-id')) this.setHeader('X-Request-Id', this.requestId);
      return typeof messageOrHeaders === 'string' ? super.writeHead(statusCode, messageOrHeaders, maybeHeaders) : super.writeHead(statusCode, messageOrHeaders);
    }

    // Node emits 'close' once per response (finished or not); a listener per response would cost more.
    protected override settle(): void {
      super.settle();
      if (!this.logged) {
        this.logged = true;
        write(accessLine(this.req, this, this.requestId, this.startedAt));
      }
    }
  }

  const logRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const startedAt = Date.now();
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : nextRequestId();
    (req as IncomingMessage & { id?: string }).id = id;
    res.setHeader('X-Request-Id', id);
    res.once('close', () => write(accessLine(req, res, id, startedAt)));
  };

  return { ServerResponse: LoggedResponse as typeof ServerResponse, logRequest, flush };
}
