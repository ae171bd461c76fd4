/**
 * Threats against the standalone server (`registry-redirect serve`): oversized headers or URLs,
 * slow clients holding connections (slowloris), requests the router cannot parse, and request
 * smuggling (ambiguous framing that makes the proxy and the upstream disagree where a request
 * ends). Invariants: each is refused with a clean status and a closed connection, nothing of it
 * reaches the upstream, and the upstream connections stay in step afterwards (every response
 * still belongs to its own request). Over plain HTTP/1.1 and over HTTP/1.1 on the `tls:` listener
 * (its HTTP/1.1 fallback must keep every bound); HTTP/2's own framing cases are at the end.
 */
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { startServer } from '../../src/server/server.js';
import type { RunningServer } from '../../src/server/server.js';
import { silentLogger } from '../../src/log.js';
import { BASIC, startFakeUpstream } from '../helpers/fake-upstream.js';
import type { FakeUpstream } from '../helpers/fake-upstream.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { makeTestCa, type TestCa } from '../support/tls.js';

const TRANSPORTS = requireBinary('openssl') ? (['http', 'https'] as const) : (['http'] as const);
type Transport = (typeof TRANSPORTS)[number];

let upstream: FakeUpstream;
let ca: TestCa | undefined;
const servers = new Map<Transport, RunningServer>();

beforeAll(async () => {
  upstream = await startFakeUpstream();
  ca = TRANSPORTS.length > 1 ? makeTestCa() : undefined;
  const leaf = ca?.issue('proxy');
  for (const transport of TRANSPORTS) {
    const config = buildConfig({
      listen: '127.0.0.1:0',
      upstream: upstream.url,
      signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } },
      timeouts: { headers: '1s', shutdown: '1s' },
      ...(transport === 'https' && leaf && { tls: { certificate: leaf.cert, key: leaf.key } }),
    });
    servers.set(transport, await startServer(config, silentLogger));
  }
});

afterAll(async () => {
  await Promise.all([...servers.values()].map((s) => s.close()));
  await upstream?.close();
  ca?.remove();
});

/** A raw connection to the server of `transport`: TCP, or TLS offering only HTTP/1.1 by ALPN. */
function connect(transport: Transport): net.Socket {
  const port = Number(new URL(servers.get(transport)!.url).port);
  return transport === 'https' ? tls.connect({ port, host: '127.0.0.1', ALPNProtocols: ['http/1.1'], ca: readFileSync(ca!.cert) }) : net.connect(port, '127.0.0.1');
}

interface Exchange {
  /** Everything the server sent before closing (or before the bound). */
  text: string;
  /** Status codes of every response in `text`, in order. */
  statuses: number[];
  closed: boolean;
  elapsedMs: number;
}

/**
 * Writes `chunks` (with `gapMs` between them) on one connection and collects the answer until the
 * server closes, `until` matches the text so far, or `timeoutMs` passes.
 */
function exchangeOver(transport: Transport, chunks: string[], { gapMs = 0, timeoutMs = 5_000, until }: { gapMs?: number; timeoutMs?: number; until?: string } = {}): Promise<Exchange> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect(transport);
    let text = '';
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
      resolve({ text, statuses, closed, elapsedMs: Date.now() - started });
    };
    const timer = setTimeout(() => {
      socket.destroy();
      finish();
    }, timeoutMs);
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (until !== undefined && text.includes(until)) socket.destroy();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      closed = true;
      finish();
    });
    let i = 0;
    const writeNext = () => {
      if (i >= chunks.length || socket.destroyed) return;
      socket.write(chunks[i++]!, 'latin1');
      if (gapMs > 0) setTimeout(writeNext, gapMs);
      else writeNext();
    };
    socket.on(transport === 'https' ? 'secureConnect' : 'connect', writeNext);
  });
}

const AUTH = `Authorization: ${BASIC}\r\n`;

describe.each(TRANSPORTS)('over %s', (transport) => {
  const exchange = (chunks: string[], opts?: Parameters<typeof exchangeOver>[2]) => exchangeOver(transport, chunks, opts);

  describe('oversized requests are refused before the upstream sees them', () => {
    it('headers over 16 KiB -> 431 and the connection closed', async () => {
      upstream.seen.length = 0;
      const res = await exchange([`GET /v2/ HTTP/1.1\r\nHost: x\r\n${AUTH}X-Big: ${'a'.repeat(20_000)}\r\n\r\n`]);
      expect(res.statuses).toEqual([431]);
      expect(res.closed).toBe(true);
      expect(upstream.seen).toEqual([]);
    });

    it('a URL over 16 KiB -> 431 and the connection closed', async () => {
      upstream.seen.length = 0;
      const res = await exchange([`GET /v2/${'a'.repeat(20_000)}/blobs/sha256:${'0'.repeat(64)} HTTP/1.1\r\nHost: x\r\n\r\n`]);
      expect(res.statuses).toEqual([431]);
      expect(res.closed).toBe(true);
      expect(upstream.seen).toEqual([]);
    });
  });

  describe('slow clients are bounded by timeouts.headers', () => {
    it('headers trickled forever (slowloris) -> 408 and closed soon after the 1 s headers timeout', async () => {
      const trickle = ['GET /v2/ HTTP/1.1\r\nHost: x\r\n', ...Array.from({ length: 100 }, (_, i) => `X-Slow-${i}: y\r\n`)];
      const res = await exchange(trickle, { gapMs: 100, timeoutMs: 8_000 });
      expect(res.closed).toBe(true);
      expect(res.statuses).toEqual([408]);
      expect(res.elapsedMs).toBeLessThan(6_000); // 1 s timeout + check interval, with slack for a busy machine
    });

    it('a connection that never sends a byte is closed too', async () => {
      const res = await exchange([], { timeoutMs: 8_000 });
      expect(res.closed).toBe(true);
      expect(res.elapsedMs).toBeLessThan(6_000);
    });
  });

  describe('paths the router cannot parse are answered, never left hanging', () => {
    it.each(['//', '/\\\\', '//v2/'])('%s -> a prompt 4xx', async (path) => {
      const res = await exchange([`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`], { timeoutMs: 3_000 });
      expect(res.statuses.length).toBe(1);
      expect(res.statuses[0]).toBeLessThan(500);
      expect(res.text).not.toContain('Location:');
    });
  });

  describe('request smuggling does not desync the upstream connection', () => {
    const smuggled = `GET /v2/smuggled HTTP/1.1\r\nHost: x\r\n${AUTH}\r\n`;
    const attacks: Array<[string, string]> = [
      ['Content-Length with Transfer-Encoding (CL.TE)', `POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['Transfer-Encoding with Content-Length (TE.CL)', `POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n${smuggled}`],
      ['two different Content-Lengths', `POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`],
      ['Transfer-Encoding: chunked, identity', `POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${smuggled}`],
      ['obfuscated Transfer-Encoding (xchunked)', `POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['Transfer-Encoding folded onto a continuation line', `POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['space before the colon', `POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['bare LF line endings', `POST /v2/team/app/blobs/uploads/ HTTP/1.1\nHost: x\n${AUTH.trim()}\nTransfer-Encoding: chunked\n\n0\n\n${smuggled}`],
      ['invalid chunk size after valid headers', `PATCH /v2/team/app/blobs/uploads/s1 HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\nzz\r\n${smuggled}\r\n0\r\n\r\n`],
      ['chunk size overflow', `PATCH /v2/team/app/blobs/uploads/s1 HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n${smuggled}\r\n0\r\n\r\n`],
    ];

    it.each(attacks)('%s: refused with 400 or framed consistently; /v2/smuggled never reaches the upstream', async (_name, raw) => {
      upstream.seen.length = 0;
      const res = await exchange([raw], { timeoutMs: 3_000 });
      expect(res.statuses.length).toBeGreaterThanOrEqual(1);
      expect(res.statuses).toContain(400);
      expect(res.closed).toBe(true);
      expect(upstream.seen.map((s) => s.url)).not.toContain('/v2/smuggled');
    });

    it('after every attack, pooled upstream connections still pair each response with its own request', async () => {
      for (const [, raw] of attacks) await exchange([raw], { timeoutMs: 3_000 });
      const paths = Array.from({ length: 24 }, (_, i) => `/v2/team/app/manifests/tag-${i}`);
      const answers = await Promise.all(
        paths.map((p) => exchange([`GET ${p} HTTP/1.1\r\nHost: x\r\n${AUTH}Connection: close\r\n\r\n`], { timeoutMs: 5_000 })),
      );
      answers.forEach((a, i) => {
        expect(a.statuses).toEqual([200]);
        expect(a.text).toContain(`{"echo":"GET ${paths[i]}"}`);
      });
    });

    it('a chunked upload whose body looks like a request, then a pipelined request: the upstream sees exactly those two, each with its own bytes', async () => {
      upstream.seen.length = 0;
      const body = `${smuggled}padding`;
      const chunked = `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
      const res = await exchange(
        [`PATCH /v2/team/app/blobs/uploads/s1 HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\n${chunked}GET /v2/after HTTP/1.1\r\nHost: x\r\n${AUTH}\r\n`],
        { timeoutMs: 5_000, until: '{"echo":"GET /v2/after"}' },
      );
      expect(res.statuses[0]).toBe(202);
      expect(res.text).toContain(`x-body-bytes: ${body.length}`);
      // A chunked upload never reuses an upstream connection (the upstream is asked to close it), and
      // that `Connection: close` may end the client connection too: RFC 9112 lets a pipelining client
      // retry. If a second response came, it is the GET's own.
      if (res.statuses.length > 1) expect(res.text).toContain('{"echo":"GET /v2/after"}');
      // Node hands the pipelined GET on as soon as it is parsed, and it travels on another pooled
      // connection (reads and uploads have their own pools): the two may arrive in either order.
      const seen = upstream.seen.map((s) => [s.method, s.url, s.bodyBytes]).sort((a, b) => String(a[1]).localeCompare(String(b[1])));
      expect(seen).toEqual([
        ['GET', '/v2/after', 0],
        ['PATCH', '/v2/team/app/blobs/uploads/s1', body.length],
      ]);
      expect(upstream.seen.find((s) => s.method === 'PATCH')!.headers.connection).toBe('close');
    });
  });
});

describe.skipIf(!TRANSPORTS.includes('https' as never))('over HTTP/2 (the tls: listener)', () => {
  const open = (): Promise<http2.ClientHttp2Session> =>
    new Promise((resolve, reject) => {
      const session = http2.connect(servers.get('https')!.url, { ca: readFileSync(ca!.cert) });
      session.once('connect', () => resolve(session));
      session.once('error', reject);
    });
  const send = (session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<{ status?: number; body: string; rst: number }> =>
    new Promise((resolve) => {
      const stream = session.request({ authorization: BASIC, ...headers }, { endStream: body === undefined });
      let status: number | undefined;
      let text = '';
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.on('data', (c: Buffer) => (text += c.toString()));
      stream.on('error', () => undefined);
      stream.on('close', () => resolve({ status, body: text, rst: stream.rstCode ?? 0 }));
      if (body !== undefined) stream.end(body);
    });

  it('a body longer than its content-length is a stream error: the upstream never gets the extra bytes as a request', async () => {
    upstream.seen.length = 0;
    const session = await open();
    const smuggled = Buffer.from(`GET /v2/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: ${BASIC}\r\n\r\n`);
    const res = await send(session, { ':method': 'PATCH', ':path': '/v2/team/app/blobs/uploads/s1', 'content-length': '0' }, smuggled);
    expect(res.status === undefined || res.status >= 400 || res.rst !== 0).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(upstream.seen.map((s) => s.url)).not.toContain('/v2/smuggled');
    expect(upstream.seen.filter((s) => s.bodyBytes > 0)).toEqual([]);
    session.destroy();
  });

  it('many concurrent streams on one session each get their own answer (pooled upstream connections stay in step)', async () => {
    const session = await open();
    const paths = Array.from({ length: 32 }, (_, i) => `/v2/team/app/manifests/h2-${i}`);
    const answers = await Promise.all(paths.map((p) => send(session, { ':path': p })));
    answers.forEach((a, i) => {
      expect([a.status, a.rst]).toEqual([200, 0]);
      expect(a.body).toContain(`{"echo":"GET ${paths[i]}"}`);
    });
    session.close();
  });

  it('a session that opens no stream is closed soon after timeouts.headers (1 s)', async () => {
    const started = Date.now();
    const session = await open();
    await new Promise<void>((resolve) => session.once('close', () => resolve()));
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
