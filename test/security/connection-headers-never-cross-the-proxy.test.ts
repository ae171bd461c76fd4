/**
 * Connection-specific headers belong to one hop (RFC 9110 7.6.1). Forwarded, a client's
 * `Connection: <name>` could strip or smuggle end-to-end headers on the upstream's side, an
 * `Upgrade` could switch a pooled upstream connection to another protocol, and an upstream's
 * `Keep-Alive`/`Connection` would steer the client's connection. Invariant: none of them crosses
 * the pass-through in either direction, and only origin-form request targets are forwarded.
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { silentLogger } from '../../src/log.js';
import { BASIC, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';

let upstream: FakeUpstream;
let server: RunningServer;
let port: number;

beforeAll(async () => {
  upstream = await startFakeUpstream();
  const config = buildConfig({
    listen: '127.0.0.1:0',
    upstream: upstream.url,
    signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } },
  });
  server = await startServer(config, silentLogger);
  port = Number(new URL(server.url).port);
});

afterAll(async () => {
  await server?.close();
  await upstream?.close();
});

function get(path: string, headers: http.OutgoingHttpHeaders): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { Authorization: BASIC, ...headers }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sends `raw` on a new connection and returns everything the server wrote before closing. */
function exchange(raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(raw));
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (c: string) => (text += c));
    socket.on('close', () => resolve(text));
    socket.on('error', reject);
    socket.setTimeout(3_000, () => socket.destroy(new Error('no answer within 3 s')));
  });
}

describe('the client\'s connection-specific headers never reach the upstream', () => {
  it('Connection and the headers it names, Keep-Alive, Proxy-Connection and Upgrade are dropped; end-to-end headers pass', async () => {
    upstream.seen.length = 0;
    const res = await get('/v2/team/app/tags/list', {
      Connection: 'keep-alive, X-Hop-Secret, Upgrade',
      'X-Hop-Secret': 'for-the-proxy-only',
      'Keep-Alive': 'timeout=99',
      'Proxy-Connection': 'keep-alive',
      Upgrade: 'websocket',
      'X-End-To-End': 'kept',
    });
    expect(res.status).toBe(200);
    const seen = upstream.seen.find((s) => s.url === '/v2/team/app/tags/list')!;
    expect(seen.headers['x-hop-secret']).toBeUndefined();
    expect(seen.headers['keep-alive']).toBeUndefined();
    expect(seen.headers['proxy-connection']).toBeUndefined();
    expect(seen.headers.upgrade).toBeUndefined();
    expect(seen.headers.connection ?? 'keep-alive').toBe('keep-alive');
    expect(seen.headers['x-end-to-end']).toBe('kept');
    expect(seen.headers.authorization).toBe(BASIC);
  });
});

describe('the upstream\'s connection-specific headers never reach the client', () => {
  it('Connection, the headers it names and Keep-Alive are dropped; end-to-end headers pass', async () => {
    upstream.override((req, res) => {
      if (req.url !== '/v2/hop/manifests/v1') return false;
      res.writeHead(200, {
        Connection: 'X-Upstream-Hop',
        'X-Upstream-Hop': 'for-the-proxy-only',
        'Keep-Alive': 'timeout=1, max=1',
        'X-Upstream-End-To-End': 'kept',
        'Content-Type': 'application/json',
        'Content-Length': '2',
      });
      res.end('{}');
      return true;
    });
    try {
      const res = await get('/v2/hop/manifests/v1', {});
      expect(res.status).toBe(200);
      expect(res.body).toBe('{}');
      expect(res.headers['x-upstream-hop']).toBeUndefined();
      // Node's server writes its own Keep-Alive for the client's connection; not the upstream's.
      expect(res.headers['keep-alive'] ?? '').not.toContain('max=1');
      expect(res.headers['x-upstream-end-to-end']).toBe('kept');
    } finally {
      upstream.override(undefined);
    }
  });
});

describe('only origin-form request targets are forwarded', () => {
  it.each([
    ['absolute-form', 'GET http://upstream.example/v2/absolute HTTP/1.1'],
    ['asterisk-form', 'OPTIONS * HTTP/1.1'],
  ])('%s -> 400, and the upstream never sees it', async (_name, line) => {
    upstream.seen.length = 0;
    const text = await exchange(`${line}\r\nHost: x\r\nAuthorization: ${BASIC}\r\nConnection: close\r\n\r\n`);
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(upstream.seen).toEqual([]);
  });
});
