import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import type { Logger as PinoLogger } from 'pino';
import type { PrometheusMetrics } from '../metrics.js';
import { pathForLog } from '../proxy.js';
import type { Logger } from '../types.js';

/** Binds `server` to `listen` and returns its `http://host:port`. */
export async function listenOn(server: Server, listen: { host: string; port: number }): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
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
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
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

function isPino(logger: Logger): logger is Logger & PinoLogger {
  const l = logger as Partial<PinoLogger>;
  return typeof l.child === 'function' && typeof l.levels === 'object' && typeof l.level === 'string';
}

/**
 * Access log: one line per request, in pino-http's format (`req.id`, method, path without the
 * query, remote address, user agent; `res.statusCode`; `responseTime` in ms; `request completed`
 * or `request aborted`; at `warn` for a 5xx, at `debug` for `/healthz` and `/readyz`), written
 * straight through the logger. A 5xx carries no `err`: the status is the whole story, and the
 * cause (if any) has its own line.
 * `req.id` is the caller's `X-Request-Id` when it is a plain token, else a UUID; it is echoed in the
 * response. Headers are never logged: they carry `Authorization`/`Cookie`, and `Location` carries
 * signatures. Only with a pino logger; other loggers get no access log.
 *
 * Written by hand rather than with pino-http: pino-http builds a child logger per request
 * (serializing the request bindings) and tracks it on `req`/`res`; on the redirect fast path that
 * cost as much CPU as everything else the server does for the request (bench scenario 1e).
 */
export function accessLogger(logger: Logger): ((req: IncomingMessage, res: ServerResponse) => void) | undefined {
  if (!isPino(logger)) return undefined;
  return (req, res) => {
    const started = Date.now();
    const probe = req.url === '/healthz' || req.url === '/readyz';
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    (req as IncomingMessage & { id?: string }).id = id;
    res.setHeader('X-Request-Id', id);
    res.once('close', () => {
      const statusCode = res.statusCode;
      const line = {
        req: { id, method: req.method, path: pathForLog(req.url), remoteAddress: req.socket.remoteAddress, userAgent: req.headers['user-agent'] },
        res: { statusCode },
        responseTime: Date.now() - started,
      };
      const msg = !req.readableAborted && res.writableEnded ? 'request completed' : 'request aborted';
      // Load balancers probe every few seconds: readiness changes are logged by readiness.ts instead.
      if (probe) logger.debug(line, msg);
      else if (statusCode >= 500) logger.warn(line, msg);
      else logger.info(line, msg);
    });
  };
}
