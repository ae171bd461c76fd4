import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeWriteEndpoint } from '../../src/server/push-config.js';

// Ports the Fetch standard refuses ("bad ports"): a registry may listen on any of them.
const BAD_PORTS = [10080, 6666, 6667, 6000, 6665];

function listen(handler: http.RequestListener, ports: number[]): Promise<http.Server> {
  return new Promise((resolve, reject) => {
    const [port, ...rest] = ports;
    if (port === undefined) return reject(new Error('no free port among the Fetch bad ports'));
    const server = http.createServer(handler);
    server.once('error', () => resolve(listen(handler, rest)));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

describe('push.endpoint proof (GET /v2/ over node:http)', () => {
  let registry: http.Server;
  let storage: http.Server;
  let proxyLike: http.Server;
  const url = (s: http.Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;

  beforeAll(async () => {
    registry = await listen((req, res) => {
      res.writeHead(req.url === '/v2/' ? 401 : 404, { 'WWW-Authenticate': 'Basic realm="Registry Realm"', 'Docker-Distribution-API-Version': 'registry/2.0' });
      res.end();
    }, BAD_PORTS);
    storage = await listen((_req, res) => {
      res.writeHead(403, { 'Content-Type': 'application/xml' });
      res.end('<Error><Code>AccessDenied</Code></Error>');
    }, [0]);
    proxyLike = await listen((_req, res) => {
      res.writeHead(200, { 'Docker-Distribution-API-Version': 'registry/2.0', 'x-registry-redirect-probe': '1' });
      res.end('{}');
    }, [0]);
  });
  afterAll(async () => {
    for (const s of [registry, storage, proxyLike]) await new Promise((r) => s.close(r));
  });

  it('a registry on a port fetch refuses is proven', async () => {
    await expect(fetch(`${url(registry)}/v2/`)).rejects.toThrow();
    const verdict = await probeWriteEndpoint(url(registry), 2_000);
    expect(verdict).toEqual({ ok: true, text: expect.stringMatching(/speaks the registry API: GET \/v2\/ -> 401 with a Basic challenge$/) });
  });

  it('object storage and a registry-redirect proxy are refused', async () => {
    expect(await probeWriteEndpoint(url(storage), 2_000)).toEqual({ ok: false, text: expect.stringMatching(/does not speak the registry API: GET \/v2\/ -> 403; write the registry's direct address/) });
    expect(await probeWriteEndpoint(url(proxyLike), 2_000)).toEqual({ ok: false, text: expect.stringMatching(/is a registry-redirect proxy/) });
  });

  it('nothing listening: unreachable, naming the socket error', async () => {
    const port = (storage.address() as AddressInfo).port;
    await new Promise((r) => storage.close(r));
    storage = await listen((_req, res) => res.end(), [0]);
    expect(await probeWriteEndpoint(`http://127.0.0.1:${port}`, 2_000)).toEqual({ ok: false, text: expect.stringMatching(/is unreachable: GET \/v2\/ failed: .*ECONNREFUSED/) });
  });
});
