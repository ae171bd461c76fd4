import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registryRedirect } from '../../src/index.js';
import type { Signer } from '../../src/types.js';

// Large enough that buffering shows far above the bound (>= TOTAL), with headroom for a loaded
// machine where GC lags behind the transfer.
const TOTAL = 384 * 1024 * 1024;
const CHUNK = Buffer.alloc(256 * 1024, 7);

function source(total: number): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= total) return void this.push(null);
      sent += CHUNK.length;
      this.push(CHUNK);
    },
  });
}

/** Samples RSS while `work` runs; returns the peak growth in MiB. */
async function peakRssGrowth(work: () => Promise<void>): Promise<number> {
  globalThis.gc?.();
  const base = process.memoryUsage().rss;
  let peak = base;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return (Math.max(peak, process.memoryUsage().rss) - base) / 2 ** 20;
}

/**
 * Pass-through streams: a 384 MiB upload and a 384 MiB download cross the proxy while its memory
 * stays flat (buffering would grow RSS by the body size).
 */
describe('pass-through streams large bodies in constant memory', () => {
  let upstream: http.Server;
  let proxy: http.Server;
  let proxyPort: number;
  let received = 0;

  beforeAll(async () => {
    upstream = http.createServer((req, res) => {
      if (req.method === 'PATCH') {
        req.on('data', (c: Buffer) => (received += c.length));
        req.on('end', () => {
          res.writeHead(202, { 'Content-Length': 0 });
          res.end();
        });
        return;
      }
      // Blob GET fallback (signer down) and HEAD probe.
      res.writeHead(200, { 'Content-Length': TOTAL, 'Docker-Content-Digest': `sha256:${'a'.repeat(64)}` });
      if (req.method === 'HEAD') return void res.end();
      source(TOTAL).pipe(res);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const broken: Signer = { name: 'down', sign: () => { throw new Error('storage down'); } };
    const mw = registryRedirect({ upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`, signer: broken });
    proxy = http.createServer((req, res) => mw(req, res));
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    proxyPort = (proxy.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await Promise.all([new Promise((r) => proxy.close(r)), new Promise((r) => upstream.close(r))]);
  });

  it('384 MiB chunked upload: every byte arrives, RSS grows far less than the body', async () => {
    const growth = await peakRssGrowth(async () => {
      const req = http.request({ host: '127.0.0.1', port: proxyPort, method: 'PATCH', path: '/v2/a/blobs/uploads/u1', headers: { 'Transfer-Encoding': 'chunked' } });
      const done = new Promise<number>((resolve, reject) => {
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
      });
      await pipeline(source(TOTAL), req);
      expect(await done).toBe(202);
    });
    expect(received).toBe(TOTAL);
    expect(growth).toBeLessThan(160);
  });

  it('384 MiB blob served through the proxy (signer down -> proxied): RSS stays flat', async () => {
    let got = 0;
    const growth = await peakRssGrowth(async () => {
      await new Promise<void>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: proxyPort, path: `/v2/a/blobs/sha256:${'a'.repeat(64)}` }, (res) => {
            expect(res.statusCode).toBe(200);
            res.on('data', (c: Buffer) => (got += c.length));
            res.on('end', resolve);
            res.on('error', reject);
          })
          .on('error', reject);
      });
    });
    expect(got).toBe(TOTAL);
    expect(growth).toBeLessThan(160);
  });
});
