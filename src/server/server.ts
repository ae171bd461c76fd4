import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { registryRedirect } from '../middleware.js';
import type { Logger, RegistryRedirectMiddleware } from '../types.js';
import type { ServerConfig } from './config.js';

const HEALTH_BODY = '{"status":"ok"}';

export interface RunningServer {
  readonly server: http.Server;
  /** `http://host:port` the server listens on. */
  readonly url: string;
  /** Stop accepting, let in-flight requests finish (bounded by `timeouts.shutdown`), then close. */
  close(): Promise<void>;
}

/**
 * The standalone reverse proxy: a bare `node:http` server (no router: the middleware is the whole
 * app) with `/healthz` answered locally, never touching the upstream.
 */
export async function startServer(config: ServerConfig, logger: Logger): Promise<RunningServer> {
  // Credentials from default chains (AWS, Google ADC) resolve now: a missing one stops startup.
  await config.signer.ready?.();
  const middleware: RegistryRedirectMiddleware = registryRedirect({
    upstream: config.upstream,
    signer: config.signer,
    onSignerError: config.onSignerError,
    timeouts: { authorize: config.timeouts.authorize, upstream: config.timeouts.upstream, signer: config.timeouts.signer },
    logger,
  });

  const server = http.createServer(
    {
      // Slow clients are bounded while sending headers; bodies (multi-GiB layer uploads) are not.
      headersTimeout: config.timeouts.headers,
      requestTimeout: 0,
      keepAliveTimeout: 5_000,
    },
    (req, res) => {
      if (req.url === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': HEALTH_BODY.length, 'Cache-Control': 'no-store' });
        res.end(req.method === 'GET' ? HEALTH_BODY : undefined);
        return;
      }
      middleware(req, res);
    },
  );
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;

  let closing: Promise<void> | undefined;
  return {
    server,
    url,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), config.timeouts.shutdown);
        });
        if ((await Promise.race([closed, deadline])) === 'timeout') {
          logger.warn({ timeoutMs: config.timeouts.shutdown }, 'shutdown timeout: closing remaining connections');
          server.closeAllConnections();
          await closed;
        }
        clearTimeout(timer);
        await middleware.close();
      })();
      return closing;
    },
  };
}
