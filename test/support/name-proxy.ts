/**
 * Host names without DNS: an HTTP forward proxy that sends each request for a made-up name
 * (`registry.test`, `blobs.registry.test`) to a loopback server, and records what every name
 * received. Real clients honour `HTTP_PROXY` for `http://` URLs (Go's ProxyFromEnvironment skips
 * only `localhost` and loopback IPs), so they keep the names in `Host` and in their own redirect
 * logic, e.g. containers/image's "same host or subdomain keeps Authorization" rule.
 *
 * `CONNECT` (https) is refused with 403, so clients told to skip TLS verification fall back to
 * plain http at once.
 *
 * @module
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { forwardHeaders } from './http.js';
import { assertLoopback } from './ports.js';

/** One request the proxy forwarded (or refused). */
export interface NamedRequest {
  method: string;
  /** Host name the client asked for (from the absolute request target). */
  hostname: string;
  /** Path and query. */
  path: string;
  /** The `Authorization` header the client sent to this name, if any. */
  authorization: string | undefined;
}

/** A running name proxy. */
export interface NameProxy {
  /** `http://127.0.0.1:PORT`: the value for `HTTP_PROXY`. */
  url: string;
  /** Every request so far, in order. */
  readonly requests: NamedRequest[];
  /** Environment variables that route a client's http and https through this proxy. */
  env(): Record<string, string>;
  /** Points `name` at another `http://HOST:PORT` (loopback only). */
  route(name: string, target: string): void;
  close(): Promise<void>;
}

/**
 * Starts the proxy on 127.0.0.1. `names` maps a host name to the `http://HOST:PORT` it is served
 * by (loopback only); any other name gets 502.
 */
export async function startNameProxy(names: Record<string, string>): Promise<NameProxy> {
  const targets = new Map<string, URL>();
  const route = (name: string, target: string): void => {
    const url = new URL(target);
    assertLoopback(url.hostname);
    targets.set(name.toLowerCase(), url);
  };
  for (const [name, target] of Object.entries(names)) route(name, target);
  const requests: NamedRequest[] = [];
  const server = http.createServer((req, res) => {
    let asked: URL;
    try {
      asked = new URL(req.url ?? '');
    } catch {
      res.writeHead(400, { 'content-length': '0' }).end();
      return;
    }
    requests.push({ method: req.method ?? '', hostname: asked.hostname, path: asked.pathname + asked.search, authorization: req.headers.authorization });
    const target = targets.get(asked.hostname.toLowerCase());
    if (!target) {
      res.writeHead(502, { 'content-length': '0' }).end();
      return;
    }
    const headers = forwardHeaders(req.headers);
    delete headers['proxy-authorization'];
    const upstream = http.request({ host: target.hostname, port: target.port, method: req.method, path: asked.pathname + asked.search, headers, agent: false }, (up) => {
      res.writeHead(up.statusCode ?? 502, forwardHeaders(up.headers));
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connect', (_req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    route,
    env: () => ({ HTTP_PROXY: url, http_proxy: url, HTTPS_PROXY: url, https_proxy: url, NO_PROXY: '', no_proxy: '' }),
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
