import http from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { registryRedirect } from '../../src/index.js';
import { createTlsServer, loadTlsMaterial, type TlsServerConfig } from '../../src/server/tls.js';
import type { Logger, RegistryRedirectOptions } from '../../src/types.js';
import { requireBinary } from '../support/binaries.js';
import { h2Request } from '../support/h2.js';
import { request as h1Request, type HttpResponse, type RequestOptions } from '../support/http.js';
import { makeTestCa, type TestCa } from '../support/tls.js';

/** How a test client talks to the proxy: plain HTTP/1.1, or HTTP/2 over TLS (the `serve` `tls:` listener). */
export type Transport = 'http/1.1' | 'h2';

/** Every transport the security suite runs over (h2 needs openssl for its test certificate). */
export const TRANSPORTS: readonly Transport[] = requireBinary('openssl') ? ['http/1.1', 'h2'] : ['http/1.1'];

export interface RunningProxy {
  /** `http://127.0.0.1:PORT`, or `https://` for h2. */
  url: string;
  transport: Transport;
  /** One request to this proxy over its transport (fresh connection; redirects never followed). */
  request(path: string, opts?: Pick<RequestOptions, 'method' | 'headers' | 'body' | 'timeoutMs' | 'localAddress'>): Promise<HttpResponse>;
  close(): Promise<void>;
}

let pki: { ca: TestCa; config: TlsServerConfig; caPem: Buffer } | undefined;
function testPki() {
  if (!pki) {
    const ca = makeTestCa('proxy-server test CA');
    const leaf = ca.issue('proxy');
    pki = { ca, config: { certificate: leaf.cert, key: leaf.key, minVersion: 'TLSv1.2' }, caPem: readFileSync(ca.cert) };
    process.once('exit', () => ca.remove());
  }
  return pki;
}

/**
 * registryRedirect() behind a bare node:http server on 127.0.0.1 and a free port, or (`h2`)
 * behind the `serve` command's own TLS listener (HTTP/2 by ALPN, HTTP/1.1 fallback).
 */
export async function startProxy(options: RegistryRedirectOptions, { transport = 'http/1.1' }: { transport?: Transport } = {}): Promise<RunningProxy> {
  const middleware = registryRedirect(options);
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => middleware(req, res);
  let server: http.Server;
  let closeAll: () => void;
  let ca: Buffer | undefined;
  if (transport === 'h2') {
    const { config, caPem } = testPki();
    const secure = createTlsServer(config, loadTlsMaterial(config), { headersTimeout: 60_000, requestTimeout: 0, keepAliveTimeout: 5_000, connectionsCheckingInterval: 1_000 }, 60_000, handler);
    server = secure.server as unknown as http.Server;
    closeAll = () => secure.connections.closeAll();
    ca = caPem;
  } else {
    server = http.createServer(handler);
    closeAll = () => server.closeAllConnections();
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `${transport === 'h2' ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    transport,
    request: (path, opts = {}) =>
      transport === 'h2'
        ? h2Request(new URL(path, url), { ca, method: opts.method, headers: opts.headers, body: opts.body, timeoutMs: opts.timeoutMs, localAddress: opts.localAddress })
        : h1Request(new URL(path, url), opts),
    async close() {
      closeAll();
      await new Promise((resolve) => server.close(resolve));
      await middleware.close();
    },
  };
}

/** A logger that keeps every line as JSON text, to search for secrets. */
export function recordingLogger(): Logger & { lines: string[]; text(): string } {
  const lines: string[] = [];
  const log = (obj: object, msg?: string) => void lines.push(JSON.stringify({ ...obj, msg }));
  return { lines, text: () => lines.join('\n'), debug: log, info: log, warn: log, error: log };
}
