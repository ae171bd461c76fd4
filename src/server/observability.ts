import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pinoHttp } from 'pino-http';
import type { Logger as PinoLogger } from 'pino';
import type { PrometheusMetrics } from '../metrics.js';
import { pathForLog } from '../proxy.js';
import type { Logger } from '../types.js';

/** Binds `server` to `listen` and returns its `http://host:port`. */
export async function listenOn(server: http.Server, listen: { host: string; port: number }): Promise<string> {
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
  const url = await listenOn(server, listen);
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function isPino(logger: Logger): logger is Logger & PinoLogger {
  const l = logger as Partial<PinoLogger>;
  return typeof l.child === 'function' && typeof l.levels === 'object' && typeof l.level === 'string';
}

/**
 * pino-http access log: one line per request with `req.id` (the caller's `X-Request-Id` when it is a
 * plain token, else a UUID; echoed in the response), method, path without the query, status and
 * time. Headers are never logged: they carry `Authorization`/`Cookie`, and `Location` carries
 * signatures. Only with a pino logger; other loggers get no access log.
 */
export function accessLogger(logger: Logger): ((req: IncomingMessage, res: ServerResponse) => void) | undefined {
  if (!isPino(logger)) return undefined;
  const log = pinoHttp({
    logger,
    genReqId(req, res) {
      const given = req.headers['x-request-id'];
      const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
      res.setHeader('X-Request-Id', id);
      return id;
    },
    serializers: {
      req: (r: { id?: unknown; method?: string; url?: string; remoteAddress?: string; headers?: Record<string, unknown> }) => ({
        id: r.id,
        method: r.method,
        path: pathForLog(r.url),
        remoteAddress: r.remoteAddress,
        userAgent: r.headers?.['user-agent'],
      }),
      res: (r: { statusCode?: number }) => ({ statusCode: r.statusCode }),
    },
    customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'warn' : 'info'),
  });
  return (req, res) => log(req, res);
}
