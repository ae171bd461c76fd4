/**
 * Free-port helper for tests that start real servers.
 *
 * @module
 */
import { createServer } from 'node:net';

/**
 * Ask the kernel for a currently unused TCP port on `host` (loopback by default).
 *
 * The port is released again before this resolves, so there is a small race with
 * other processes; callers that spawn a server on it should retry on
 * "address already in use" (see {@link startRegistry}).
 *
 * @param host - address to probe; must be a loopback address for tests (default `127.0.0.1`).
 * @returns a port number that was free a moment ago.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error(`freePort: unexpected address ${String(addr)}`));
        return;
      }
      const { port } = addr;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/**
 * Throw unless `host` is a loopback address (127.0.0.0/8, ::1 or `localhost`).
 * Every server started by the harness binds loopback only.
 */
export function assertLoopback(host: string): void {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)) return;
  throw new Error(`refusing to bind test server to non-loopback address ${host}`);
}
