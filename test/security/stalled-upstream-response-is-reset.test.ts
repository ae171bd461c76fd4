/**
 * An upstream that sends a response head and then stops (a hung registry, a dead storage driver)
 * must not hold the client and the pass-through slot forever, and a client must be able to tell
 * a cut-short body from a complete one. Invariant: once `timeouts.upstream` passes without a byte
 * of the response, the client's connection is reset (never ended cleanly); a response that keeps
 * streaming, however slowly, is not cut, because the bound is on inactivity, not on total time.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { silentLogger } from '../../src/log.js';
import { BASIC, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';

const TIMEOUT_MS = 600;
let upstream: FakeUpstream;
let server: RunningServer;
let port: number;
const timers = new Set<NodeJS.Timeout>();

beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.override((req, res) => {
    if (req.url === '/v2/stall/manifests/v1') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '1000' });
      res.write('{"partial":');
      return true; // never ends
    }
    if (req.url === '/v2/slow/manifests/v1') {
      // 8 chunks, one every TIMEOUT_MS / 2: longer than the timeout in total, never idle that long.
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': '8' });
      let sent = 0;
      const tick = setInterval(() => {
        res.write('x');
        if (++sent === 8) {
          clearInterval(tick);
          timers.delete(tick);
          res.end();
        }
      }, TIMEOUT_MS / 2);
      timers.add(tick);
      return true;
    }
    return false;
  });
  const config = buildConfig({
    listen: '127.0.0.1:0',
    upstream: upstream.url,
    signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } },
    timeouts: { upstream: `${TIMEOUT_MS}ms`, shutdown: '1s' },
  });
  server = await startServer(config, silentLogger);
  port = Number(new URL(server.url).port);
});

afterAll(async () => {
  for (const t of timers) clearInterval(t);
  await server?.close();
  await upstream?.close();
});

/** One GET on a raw connection: what arrived, whether the socket was reset, and when it closed. */
function rawGet(path: string): Promise<{ text: string; reset: boolean; elapsedMs: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: ${BASIC}\r\n\r\n`));
    let text = '';
    let reset = false;
    socket.setEncoding('latin1');
    socket.on('data', (c: string) => {
      text += c;
      // Complete: head plus the whole Content-Length body. Close from our side.
      const head = text.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(text);
      if (head >= 0 && length && text.length - head - 4 >= Number(length[1])) socket.end();
    });
    socket.on('error', () => (reset = true));
    socket.on('end', () => undefined);
    socket.on('close', (hadError) => resolve({ text, reset: reset || hadError, elapsedMs: Date.now() - started }));
    socket.setTimeout(10_000, () => socket.destroy());
  });
}

describe('a response the upstream stops sending', () => {
  it('is reset within about the upstream timeout of the last byte, never ended as if complete', async () => {
    const res = await rawGet('/v2/stall/manifests/v1');
    expect(res.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(res.text).toContain('{"partial":');
    expect(res.text).not.toMatch(/\r\n\r\n[\s\S]{1000}/);
    expect(res.reset || !res.text.endsWith('0\r\n\r\n')).toBe(true);
    expect(res.elapsedMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
    expect(res.elapsedMs).toBeLessThan(TIMEOUT_MS + 4_000);
  });

  it('a slow response that never pauses for the whole timeout arrives complete', async () => {
    const res = await rawGet('/v2/slow/manifests/v1');
    expect(res.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(res.text.endsWith('xxxxxxxx')).toBe(true);
    expect(res.elapsedMs).toBeGreaterThan(TIMEOUT_MS);
  });
});
