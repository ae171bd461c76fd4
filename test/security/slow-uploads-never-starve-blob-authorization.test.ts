/**
 * Threat: clients open many uploads and trickle their bodies (1 byte at a time). Each one holds an
 * upstream connection for as long as it likes, so if uploads, reads and the authorizing HEADs share
 * one connection pool, the pool fills up and a blob GET (its HEAD) and `GET /v2/` wait behind the
 * uploads with no deadline, while the registry itself, asked directly, answers at once.
 * Invariants, against real distribution 2.8.2 with real upload sessions:
 * - with more trickling uploads than the upload pool holds, a blob GET is still answered (307)
 *   within `timeouts.authorize`, and `GET /v2/` within the same time;
 * - `limits.maxUploadsPerClient` caps concurrent uploads per client address, the address resolved
 *   with `trustedProxies`: one more gets 429 + `Retry-After` (OCI body), a client cannot escape the
 *   cap with its own `X-Forwarded-For`, and other clients are not affected.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer } from '../../src/server/server.js';
import type { RunningServer } from '../../src/server/server.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { startRegistry } from '../support/registry.js';
import type { RunningRegistry } from '../support/registry.js';

const has = requireBinary('docker-registry');
const AUTHORIZE_MS = 1_000;
// More than the default upload pool (256), as a real attack would be: nothing is tuned for the test.
const TRICKLING = 260;

const BLOB = randomBytes(4_096);
const DIGEST = `sha256:${createHash('sha256').update(BLOB).digest('hex')}`;

const SIGNER = { azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } };

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  elapsedMs: number;
}

/** One request on its own connection; status 0 when no answer came within `timeoutMs`. */
function send(url: string, { method = 'GET', headers = {}, localAddress, body, timeoutMs = 6_000 }: { method?: string; headers?: http.OutgoingHttpHeaders; localAddress?: string; body?: string; timeoutMs?: number } = {}): Promise<Answer> {
  return new Promise((resolve) => {
    const started = performance.now();
    const req = http.request(url, { method, headers, agent: false, localAddress }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, elapsedMs: performance.now() - started });
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      resolve({ status: 0, headers: {}, body: '', elapsedMs: performance.now() - started });
    }, timeoutMs);
    req.on('error', () => {});
    req.end(body);
  });
}

/** An upload that sends its headers, then one byte every 200 ms of a body it never finishes. */
interface Trickle {
  socket: net.Socket;
  /** Whatever the server has answered so far (nothing, while the upload is held open). */
  received: string;
  stop(): void;
}

function trickle(proxyUrl: string, path: string, { localAddress, extraHeaders = '' }: { localAddress?: string; extraHeaders?: string } = {}): Trickle {
  const { hostname, port } = new URL(proxyUrl);
  const socket = net.connect({ host: hostname, port: Number(port), localAddress });
  const t: Trickle = {
    socket,
    received: '',
    stop: () => {
      clearInterval(timer);
      socket.destroy();
    },
  };
  socket.on('error', () => {});
  socket.on('data', (d: Buffer) => (t.received += d.toString('latin1')));
  socket.on('connect', () => {
    socket.write(`PATCH ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n${extraHeaders}Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n`);
  });
  const timer = setInterval(() => {
    if (!socket.destroyed && !socket.connecting) socket.write('x');
  }, 200);
  return t;
}

/** Starts an upload session through the proxy (POST, real distribution); returns the session path. */
async function openSession(proxyUrl: string, opts: { localAddress?: string; headers?: http.OutgoingHttpHeaders } = {}): Promise<Answer & { path: string }> {
  const a = await send(`${proxyUrl}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: { 'Content-Length': '0', ...opts.headers }, localAddress: opts.localAddress });
  const location = a.headers.location ?? '';
  const u = new URL(location, proxyUrl);
  return { ...a, path: `${u.pathname}${u.search}` };
}

let registry: RunningRegistry;
const servers: RunningServer[] = [];

async function proxy(extra: Record<string, unknown>): Promise<RunningServer> {
  const config = buildConfig({
    listen: '127.0.0.1:0',
    upstream: registry.url,
    signer: SIGNER,
    // Every blob GET asks the upstream: the decision cache would hide a starved probe.
    authorize: { cache: { ttl: 0 } },
    timeouts: { authorize: `${AUTHORIZE_MS}ms`, upstream: '5s', shutdown: '1s' },
    log: { requests: false },
    ...extra,
  });
  const s = await startServer(config, silentLogger);
  servers.push(s);
  return s;
}

describe.skipIf(!has)('slow uploads never starve blob authorization (distribution 2.8.2)', () => {
  beforeAll(async () => {
    registry = await startRegistry();
    const session = await request(`${registry.url}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: { 'Content-Length': '0' } });
    expect(session.status).toBe(202);
    const location = new URL(String(session.headers.location), registry.url);
    location.searchParams.set('digest', DIGEST);
    const pushed = await request(location, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(BLOB.length) },
      body: BLOB,
    });
    expect(pushed.status).toBe(201);
  }, 30_000);

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await registry?.stop();
  });

  it(`${TRICKLING} trickling uploads: a blob GET still gets its 307, and GET /v2/ its 200, within timeouts.authorize`, async () => {
    const server = await proxy({});
    const sessions = await Promise.all(Array.from({ length: TRICKLING }, () => openSession(server.url)));
    expect(sessions.every((s) => s.status === 202)).toBe(true);
    const trickles = sessions.map((s) => trickle(server.url, s.path));
    try {
      // Let every upload reach the registry (or queue for the upload pool) and start trickling.
      await new Promise((r) => setTimeout(r, 1_500));
      // distribution, asked directly, is not starved: the limit is in the proxy, not behind it.
      const direct = await send(`${registry.url}/v2/team/app/blobs/${DIGEST}`, { method: 'HEAD' });
      expect(direct.status).toBe(200);

      const [blob, base] = await Promise.all([send(`${server.url}/v2/team/app/blobs/${DIGEST}`), send(`${server.url}/v2/`)]);
      // A 307 means the HEAD was answered before its 1 s timer; the margin is for a busy machine.
      expect(blob.status).toBe(307);
      expect(blob.headers.location).toMatch(/^http:\/\/127\.0\.0\.2:10000\/devstoreaccount1\/registry\//);
      expect(blob.elapsedMs).toBeLessThan(AUTHORIZE_MS * 1.5);
      expect(base.status).toBe(200);
      expect(base.elapsedMs).toBeLessThan(AUTHORIZE_MS * 1.5);
      // The uploads were really held open the whole time: none has been answered.
      expect(trickles.filter((t) => t.received !== '').length).toBe(0);
    } finally {
      for (const t of trickles) t.stop();
    }
  }, 30_000);

  it('limits.maxUploadsPerClient: the 5th concurrent upload of one client gets 429 + Retry-After; its X-Forwarded-For does not help; others upload on', async () => {
    const server = await proxy({ limits: { maxUploadsPerClient: 4 }, trustedProxies: ['127.0.0.3/32'] });
    const sessions = await Promise.all(Array.from({ length: 4 }, () => openSession(server.url)));
    const held = sessions.map((s) => trickle(server.url, s.path));
    try {
      await new Promise((r) => setTimeout(r, 500));
      expect(held.filter((t) => t.received !== '').length).toBe(0);

      const fifth = await openSession(server.url);
      expect(fifth.status).toBe(429);
      expect(fifth.headers['retry-after']).toBe('1');
      expect(JSON.parse(fifth.body)).toMatchObject({ errors: [{ code: 'TOOMANYREQUESTS' }] });
      expect(fifth.elapsedMs).toBeLessThan(AUTHORIZE_MS);

      // From an untrusted peer, a forwarded address is not believed.
      const spoofed = await openSession(server.url, { headers: { 'X-Forwarded-For': '10.9.9.9' } });
      expect(spoofed.status).toBe(429);

      // Another client address uploads on.
      expect((await openSession(server.url, { localAddress: '127.0.0.2' })).status).toBe(202);
      // Behind a trusted proxy, the forwarded address is the client: another client is admitted...
      expect((await openSession(server.url, { localAddress: '127.0.0.3', headers: { 'X-Forwarded-For': '10.0.0.7' } })).status).toBe(202);
      // ...and the capped client is still capped when it comes through that proxy.
      expect((await openSession(server.url, { localAddress: '127.0.0.3', headers: { 'X-Forwarded-For': '127.0.0.1' } })).status).toBe(429);

      // Reads are not uploads: the capped client still pulls.
      const blob = await send(`${server.url}/v2/team/app/blobs/${DIGEST}`);
      expect(blob.status).toBe(307);
    } finally {
      for (const t of held) t.stop();
    }
    // Once its uploads end, the client may upload again.
    await new Promise((r) => setTimeout(r, 200));
    expect((await openSession(server.url)).status).toBe(202);
  }, 30_000);
});
