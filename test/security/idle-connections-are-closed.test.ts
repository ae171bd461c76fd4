/**
 * Threat: connections that are opened and then left alone (no request, a request that stops half
 * way, nothing read back, no close) each hold a file descriptor. Enough of them exhaust the
 * process's open-file limit, and real clients then get no answer at all. Invariants of
 * `registry-redirect serve`:
 * - a connection without complete request headers within `timeouts.headers` of being accepted is
 *   closed, also when the client never reads the 408 and never closes its side;
 * - a keep-alive connection idle between requests is closed after `timeouts.keepAlive`;
 * - `limits.maxConnections` bounds open connections: beyond it a new one is closed at once, and once
 *   the idle ones are gone real clients are served again.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer } from '../../src/server/server.js';
import type { RunningServer } from '../../src/server/server.js';
import { startFakeUpstream } from '../helpers/fake-upstream.js';
import type { FakeUpstream } from '../helpers/fake-upstream.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';
import { request } from '../support/http.js';

const HEADERS_MS = 1_000;
const KEEP_ALIVE_MS = 1_000;
// Node checks headers deadlines every min(1 s, headers / 4); a refused connection then lingers up
// to 2 s for the client to read the answer. Everything beyond is slack for a busy machine.
const CLOSED_WITHIN_MS = HEADERS_MS + 250 + 2_000 + 2_000;
const MAX_CONNECTIONS = 20;

let upstream: FakeUpstream;
let server: RunningServer;
let capped: RunningServer;

async function serve(extra: Record<string, unknown>): Promise<RunningServer> {
  return startServer(
    buildConfig({
      listen: '127.0.0.1:0',
      upstream: upstream.url,
      signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } },
      timeouts: { headers: `${HEADERS_MS}ms`, keepAlive: `${KEEP_ALIVE_MS}ms`, shutdown: '1s' },
      log: { requests: false },
      ...extra,
    }),
    silentLogger,
  );
}

beforeAll(async () => {
  upstream = await startFakeUpstream();
  server = await serve({});
  capped = await serve({ limits: { maxConnections: MAX_CONNECTIONS } });
});

afterAll(async () => {
  await server?.close();
  await capped?.close();
  await upstream?.close();
});

function connections(s: RunningServer): Promise<number> {
  return new Promise((resolve, reject) => s.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

/**
 * A client that connects, optionally writes `text`, and then neither reads nor closes: its socket
 * never emits 'end' (nothing is read), so it never answers the server's FIN with its own.
 */
function idleClient(s: RunningServer, text?: string): net.Socket {
  const { port } = new URL(s.url);
  const socket = net.connect({ host: '127.0.0.1', port: Number(port), allowHalfOpen: true });
  socket.on('error', () => {});
  socket.pause();
  if (text !== undefined) socket.on('connect', () => socket.write(text));
  return socket;
}

async function waitUntil(check: () => Promise<boolean>, ms: number): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < ms) {
    if (await check()) return performance.now() - started;
    await new Promise((r) => setTimeout(r, 50));
  }
  return Number.POSITIVE_INFINITY;
}

describe('idle connections are closed', () => {
  it('100 connections that send nothing, or half a request, and never read: all closed soon after timeouts.headers', async () => {
    const clients = Array.from({ length: 100 }, (_, i) => idleClient(server, i % 2 ? 'GET /v2/ HTTP/1.1\r\nHost: x\r\n' : undefined));
    try {
      expect(await waitUntil(async () => (await connections(server)) === 100, 3_000)).toBeLessThan(3_000);
      const closedAfter = await waitUntil(async () => (await connections(server)) === 0, CLOSED_WITHIN_MS + 1_000);
      expect(closedAfter).toBeGreaterThanOrEqual(HEADERS_MS * 0.8);
      expect(closedAfter).toBeLessThan(CLOSED_WITHIN_MS);
    } finally {
      for (const c of clients) c.destroy();
    }
  }, 15_000);

  it('a keep-alive connection idle after its response is closed after timeouts.keepAlive', async () => {
    const { port } = new URL(server.url);
    const socket = net.connect({ host: '127.0.0.1', port: Number(port) });
    socket.on('error', () => {});
    let text = '';
    let answeredAt = 0;
    const closedAt = new Promise<number>((resolve) => socket.on('close', () => resolve(performance.now())));
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (answeredAt === 0 && text.includes('{"status":"ok"}')) answeredAt = performance.now();
    });
    socket.on('connect', () => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    const idleFor = (await Promise.race([closedAt, new Promise<number>((r) => setTimeout(() => r(Number.NaN), 8_000))])) - answeredAt;
    socket.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 200/);
    expect(text).toMatch(/keep-alive: timeout=1/i);
    expect(idleFor).toBeGreaterThanOrEqual(KEEP_ALIVE_MS * 0.8);
    // Node keeps the socket open `keepAliveTimeoutBuffer` (1 s) past the advertised timeout, so a
    // client reusing it at the last moment does not race the close.
    expect(idleFor).toBeLessThan(KEEP_ALIVE_MS + 1_000 + 1_500);
  }, 15_000);
});

describe('limits.maxConnections', () => {
  it(`with ${MAX_CONNECTIONS} idle connections open, one more is closed at once; real clients are served again once the idle ones are gone`, async () => {
    const started = performance.now();
    const idle = Array.from({ length: MAX_CONNECTIONS }, () => idleClient(capped));
    try {
      expect(await waitUntil(async () => (await connections(capped)) === MAX_CONNECTIONS, 3_000)).toBeLessThan(3_000);

      // One more: closed by the server without an answer, and never counted.
      const { port } = new URL(capped.url);
      const extra = net.connect({ host: '127.0.0.1', port: Number(port) });
      let answer = '';
      extra.on('error', () => {});
      extra.on('data', (d: Buffer) => (answer += d.toString('latin1')));
      extra.on('connect', () => extra.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
      const closed = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 2_000);
        extra.on('close', () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      extra.destroy();
      expect(closed).toBe(true);
      expect(answer).toBe('');
      expect(await connections(capped)).toBeLessThanOrEqual(MAX_CONNECTIONS);

      // The idle ones are closed by timeouts.headers; then a real client gets its answer.
      const servedAfter = await waitUntil(async () => {
        try {
          return (await request(`${capped.url}/healthz`, { timeoutMs: 500 })).status === 200;
        } catch {
          return false;
        }
      }, CLOSED_WITHIN_MS + 1_000);
      expect(servedAfter).toBeLessThan(CLOSED_WITHIN_MS);
      expect(performance.now() - started).toBeLessThan(CLOSED_WITHIN_MS + 2_000);
    } finally {
      for (const c of idle) c.destroy();
    }
  }, 15_000);
});
