import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { registryRedirect } from '../../src/index.js';
import type { Logger, RegistryRedirectOptions } from '../../src/types.js';

export interface RunningProxy {
  url: string;
  close(): Promise<void>;
}

/** registryRedirect() behind a bare node:http server on 127.0.0.1 and a free port. */
export async function startProxy(options: RegistryRedirectOptions): Promise<RunningProxy> {
  const middleware = registryRedirect(options);
  const server = http.createServer((req, res) => middleware(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections();
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
