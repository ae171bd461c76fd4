/**
 * Threat: an upload (POST/PATCH/PUT) or any non-GET request is redirected to raw storage, or a
 * HEAD (the existence check clients use at push time) gets a method-bound signed GET URL.
 * Invariant: only `GET /v2/<name>/blobs/<digest>` is ever redirected; every other method goes to
 * the upstream unchanged, even when the upstream would say yes to everything. Over HTTP/1.1 and
 * HTTP/2.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, TRANSPORTS, type Transport } from '../helpers/proxy-server.js';
import type { RunningProxy } from '../helpers/proxy-server.js';
import { testSigner } from '../helpers/token-registry.js';

let upstream: http.Server;
const proxies = new Map<Transport, RunningProxy>();
const seen: string[] = [];

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      seen.push(`${req.method} ${req.url}`);
      res.writeHead(req.method === 'POST' ? 202 : 200, { 'Content-Length': 0, 'Docker-Content-Digest': `sha256:${'a'.repeat(64)}` });
      res.end();
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  for (const transport of TRANSPORTS) {
    proxies.set(transport, await startProxy({ upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`, signer: testSigner() }, { transport }));
  }
});

afterAll(async () => {
  await Promise.all([...proxies.values()].map((p) => p.close()));
  upstream.closeAllConnections();
  await new Promise((resolve) => upstream.close(resolve));
});

async function send(transport: Transport, method: string, path: string): Promise<{ statusCode: number; headers: http.IncomingHttpHeaders }> {
  const bodyless = method === 'GET' || method === 'HEAD';
  const res = await proxies.get(transport)!.request(path, { method, timeoutMs: 5_000, ...(!bodyless && { headers: { 'content-length': '3' }, body: 'abc' }) });
  return { statusCode: res.status, headers: res.headers };
}

const DIGEST = `sha256:${'a'.repeat(64)}`;

describe.each(TRANSPORTS)('uploads and non-GET requests never redirect (over %s)', (transport) => {
  it('any method but GET on blob and upload paths reaches the upstream unchanged, never a 307', async () => {
    const method = fc.constantFrom('POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS');
    const path = fc.constantFrom(
      `/v2/team/app/blobs/${DIGEST}`,
      '/v2/team/app/blobs/uploads/',
      `/v2/team/app/blobs/uploads/0b6c7c5e-1d7e-4d3a-9b1e-3e2f0d8f6a11?_state=x&digest=${DIGEST}`,
      `/v2/team/app/blobs/uploads/?mount=${DIGEST}&from=other/repo`,
      `/v2/team/app/blobs/uploads/?digest=${DIGEST}`,
    );
    await fc.assert(
      fc.asyncProperty(method, path, async (m, p) => {
        seen.length = 0;
        const res = await send(transport, m, p);
        expect(res.statusCode).not.toBe(307);
        expect(res.headers.location).toBeUndefined();
        expect(seen).toEqual([`${m} ${p}`]);
      }),
      { numRuns: 60 },
    );
  });

  it('control: a GET on the same blob path is redirected', async () => {
    expect((await send(transport, 'GET', `/v2/team/app/blobs/${DIGEST}`)).statusCode).toBe(307);
  });
});
