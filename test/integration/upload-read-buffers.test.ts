import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBufferValve, setReadBufferValve } from '../../src/read-buffers.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';

const MiB = 2 ** 20;

/** `serve` counts upload bodies for the read-buffer valve (src/read-buffers.ts), without taking bytes from the stream. */
describe('serve: upload bodies pass the read-buffer valve', () => {
  let upstream: http.Server;
  let upstreamUrl: string;
  let running: RunningServer;
  let received = 0;

  beforeAll(async () => {
    setReadBufferValve(undefined);
    upstream = http.createServer((req, res) => {
      req.on('data', (c: Buffer) => (received += c.length));
      req.on('end', () => {
        res.writeHead(req.method === 'PATCH' ? 202 : 200, { 'Content-Length': '0', 'Docker-Distribution-API-Version': 'registry/2.0' });
        res.end();
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    running = await startServer(
      buildConfig({
        listen: '127.0.0.1:0',
        upstream: upstreamUrl,
        signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } },
        log: { requests: false },
        preflight: 'off',
      }),
      pino({ level: 'silent' }),
    );
  });

  afterAll(async () => {
    setReadBufferValve(undefined);
    await running?.close();
    await new Promise((r) => upstream?.close(r));
  });

  function send(method: string, path: string, body?: Buffer): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = http.request(`${running.url}${path}`, { method, headers: body ? { 'Content-Length': String(body.length), 'Content-Type': 'application/octet-stream' } : {} }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  it('startServer installs the valve; every body byte reaches it and the upstream', async () => {
    const installed = readBufferValve();
    expect(typeof installed).toBe('function');
    let counted = 0;
    setReadBufferValve((chunk) => {
      counted += chunk.length;
      installed!(chunk);
    });
    received = 0;
    const body = Buffer.alloc(12 * MiB, 7);
    expect(await send('PATCH', '/v2/team/app/blobs/uploads/3f2a', body)).toBe(202);
    expect(received).toBe(body.length);
    expect(counted).toBe(body.length);
    expect(await send('GET', '/v2/')).toBe(200);
    expect(counted).toBe(body.length);
  });
});
