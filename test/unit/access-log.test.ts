import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { accessLogger } from '../../src/server/observability.js';

/** A server whose every request goes through the access logger, then `handler`. */
async function serve(handler: http.RequestListener) {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const log = accessLogger(pino({ level: 'info', base: { name: 'registry-redirect' } }, sink))!;
  const server = http.createServer((req, res) => {
    log(req, res);
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { lines, server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
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
});
