import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createServerLogger } from '../../src/server/logger.js';
import { accessLog } from '../../src/server/observability.js';

/** A server whose every request goes through the access logger, then `handler`. */
async function serve(handler: http.RequestListener, options: pino.LoggerOptions = {}) {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const log = accessLog(pino({ level: 'info', base: { name: 'registry-redirect' }, ...options }, sink))!;
  const server = http.createServer({ ServerResponse: log.ServerResponse }, handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { lines, log, server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
}

describe('access log (pino-http format, written directly)', () => {
  let server: http.Server | undefined;
  afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

  it('one info line per completed request: id, method, path without query, status, time', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(307, { Location: 'https://storage.example/x?sig=SECRET' });
      res.end();
    });
    server = s.server;
    const res = await fetch(`${s.url}/v2/a/blobs/x?_state=opaque`, { redirect: 'manual', headers: { 'X-Request-Id': 'req-1', 'User-Agent': 'bench/1' } });
    expect(res.headers.get('x-request-id')).toBe('req-1');
    await until(() => s.lines.length > 0);
    expect(s.lines[0]).toMatchObject({ level: 30, name: 'registry-redirect', msg: 'request completed', req: { id: 'req-1', method: 'GET', path: '/v2/a/blobs/x', userAgent: 'bench/1' }, res: { statusCode: 307 } });
    expect(typeof s.lines[0]!.responseTime).toBe('number');
    expect(JSON.stringify(s.lines)).not.toMatch(/SECRET|opaque/);
  });

  it('5xx answers are logged at warn with the status and no error object; an id that is not a plain token is replaced', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(502);
      res.end();
    });
    server = s.server;
    const res = await fetch(`${s.url}/v2/`, { headers: { 'X-Request-Id': 'not a token {}' } });
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    await until(() => s.lines.length > 0);
    expect(s.lines[0]).toMatchObject({ level: 40, msg: 'request completed', res: { statusCode: 502 } });
    expect(s.lines[0]).not.toHaveProperty('err');
  });

  it('/healthz and /readyz probes are not logged at info (readiness changes have their own line)', async () => {
    const s = await serve((req, res) => {
      res.writeHead(req.url === '/readyz' ? 503 : 200);
      res.end();
    });
    server = s.server;
    for (const path of ['/healthz', '/readyz', '/readyz', '/v2/']) await fetch(`${s.url}${path}`);
    await until(() => s.lines.length > 0);
    await new Promise((r) => setTimeout(r, 20));
    expect(s.lines.map((l) => l.req && (l.req as { path: string }).path)).toEqual(['/v2/']);
  });

  it('a client that goes away before the answer is logged as "request aborted"', async () => {
    const s = await serve(() => {
      // never answers
    });
    server = s.server;
    const req = http.get(`${s.url}/v2/slow`);
    req.on('error', () => {});
    await new Promise((r) => setTimeout(r, 50));
    req.destroy();
    await until(() => s.lines.length > 0);
    expect(s.lines[0]).toMatchObject({ msg: 'request aborted', req: { path: '/v2/slow' } });
  });

  it('writes the same line as logger.info would, field for field, and a customised logger the ordinary way', async () => {
    const handler: http.RequestListener = (_req, res) => {
      res.writeHead(307, { Location: 'https://storage.example/x' });
      res.end();
    };
    const plain = await serve(handler);
    server = plain.server;
    // The generic path: a mixin makes the fast serializer step aside.
    const mixed = await serve(handler, { mixin: () => ({ extra: 1 }) });
    try {
      const headers = { 'X-Request-Id': 'same-1', 'User-Agent': 'quote " and \\ and \u00e9' };
      await fetch(`${plain.url}/v2/a/blobs/x?q=1`, { redirect: 'manual', headers });
      await fetch(`${mixed.url}/v2/a/blobs/x?q=1`, { redirect: 'manual', headers });
      await until(() => plain.lines.length > 0 && mixed.lines.length > 0);
      const strip = (l: Record<string, unknown>) => ({ ...l, time: 0, responseTime: 0, extra: undefined });
      expect(typeof plain.lines[0]!.time).toBe('number');
      expect(mixed.lines[0]!.extra).toBe(1);
      expect(strip(plain.lines[0]!)).toEqual(strip(mixed.lines[0]!));
      expect(Object.keys(plain.lines[0]!)).toEqual(Object.keys(mixed.lines[0]!).filter((k) => k !== 'extra'));
    } finally {
      await new Promise((r) => mixed.server.close(r));
    }
  });

  it('X-Request-Id joins headers set one by one too (pass-through), and an upstream\'s own id is kept', async () => {
    const s = await serve((req, res) => {
      res.setHeader('Content-Type', 'text/plain');
      if (req.url === '/own') res.setHeader('X-Request-Id', 'from-upstream');
      res.statusCode = 200;
      res.end('ok');
    });
    server = s.server;
    const a = await fetch(`${s.url}/v2/`, { headers: { 'X-Request-Id': 'given-2' } });
    expect(a.headers.get('x-request-id')).toBe('given-2');
    expect(a.headers.get('content-type')).toBe('text/plain');
    const b = await fetch(`${s.url}/own`, { headers: { 'X-Request-Id': 'given-3' } });
    expect(b.headers.get('x-request-id')).toBe('from-upstream');
  });

  it('flush() (called at process exit) writes each waiting line once', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(204);
      res.end();
    });
    server = s.server;
    await fetch(`${s.url}/v2/`);
    await until(() => s.lines.length > 0);
    expect(s.lines).toHaveLength(1);
    s.log.flush();
    expect(s.lines).toHaveLength(1);
  });

  it('a waiting line keeps the time its response closed, not the time it is written', async () => {
    let clock = 1_000;
    let closed = 0;
    const s = await serve(
      (_req, res) => {
        // A 'close' listener runs after the line was taken (the response class takes it first).
        res.on('close', () => closed++);
        res.writeHead(204);
        res.end();
      },
      { timestamp: () => `,"time":${clock}` },
    );
    server = s.server;
    await fetch(`${s.url}/v2/first`);
    await until(() => closed === 1);
    clock = 2_000;
    await fetch(`${s.url}/v2/second`);
    await until(() => closed === 2);
    clock = 3_000;
    s.log.flush();
    await until(() => s.lines.length === 2);
    expect(s.lines.map((l) => [(l.req as { path: string }).path, l.time])).toEqual([
      ['/v2/first', 1_000],
      ['/v2/second', 2_000],
    ]);
  });

  it('log.format pretty: lines batched in one write are each prettified', async () => {
    let text = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        text += chunk.toString('utf8');
        done();
      },
    });
    const logger = await createServerLogger({ level: 'info', requests: true, format: 'pretty' }, { name: 'registry-redirect' }, { destination: sink });
    const log = accessLog(logger)!;
    server = http.createServer({ ServerResponse: log.ServerResponse }, (_req, res) => {
      res.writeHead(307, { Location: 'https://storage.example/x' });
      res.end();
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await Promise.all(['a', 'b', 'c'].map((id) => fetch(`${url}/v2/x/blobs/${id}`, { redirect: 'manual', headers: { 'X-Request-Id': `pretty-${id}` } })));
    await until(() => (text.match(/request completed/g) ?? []).length === 3);
    expect(text.match(/request completed/g)).toHaveLength(3);
    expect(text).not.toContain('{"level"');
  });
});
