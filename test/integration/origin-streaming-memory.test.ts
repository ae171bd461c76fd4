import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOriginHandler, originSigner } from '../../src/index.js';

// A sparse file: no disk used, and a buffering origin would grow RSS far above the bound.
const TOTAL = 384 * 1024 * 1024;
const HEX = 'c'.repeat(64);

/**
 * Origin mode streams a blob from its file handle with back-pressure: a slow client reading a
 * 512 MiB blob keeps the origin's memory flat (the digest is not checked by the origin, so the
 * sparse file's content does not matter here).
 */
describe('origin mode serves large blobs in constant memory, at the pace of the client', () => {
  let dir: string;
  let server: http.Server;
  let url: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'origin-mem-'));
    const blobDir = join(dir, 'docker/registry/v2/blobs/sha256', HEX.slice(0, 2), HEX);
    await mkdir(blobDir, { recursive: true });
    await writeFile(join(blobDir, 'data'), '');
    await truncate(join(blobDir, 'data'), TOTAL);
    server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const signer = originSigner({ root: dir, key: 'memory-key-0123456789abcdef', listen: { host: '127.0.0.1', port } });
    const handle = createOriginHandler(signer.origin);
    server.on('request', (req, res) => void handle(req, res));
    url = (signer.sign({ repository: 'big/app', digest: `sha256:${HEX}`, method: 'GET' }) as { url: string }).url;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it('a slow reader of 384 MiB: RSS grows by far less than the body', async () => {
    globalThis.gc?.();
    const base = process.memoryUsage().rss;
    let peak = base;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    let received = 0;
    try {
      await new Promise<void>((resolve, reject) => {
        http
          .get(url, { agent: false }, (res) => {
            expect(res.statusCode).toBe(200);
            // Pause after each chunk: the origin must wait for the reader, not read ahead into memory.
            res.on('data', (c: Buffer) => {
              received += c.length;
              if (received % (32 << 20) < c.length) {
                res.pause();
                setTimeout(() => res.resume(), 20);
              }
            });
            res.on('end', resolve);
            res.on('error', reject);
          })
          .on('error', reject);
      });
    } finally {
      clearInterval(timer);
    }
    expect(received).toBe(TOTAL);
    expect((peak - base) / 2 ** 20).toBeLessThan(128);
  }, 120_000);
});
