/**
 * The access log on the TLS listener: it serves HTTP/2 (whose compatibility responses are not
 * `http.ServerResponse`, so they cannot be the access log's response class) and HTTP/1.1. Both get
 * the same line and the `X-Request-Id` echo.
 */
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { h2Session } from '../support/h2.js';
import { makeTestCa, type TestCa } from '../support/tls.js';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';

const has = requireBinary('openssl');

describe.skipIf(!has)('access log over TLS (HTTP/2 and HTTP/1.1)', () => {
  let ca: TestCa;
  let upstream: FakeUpstream;
  let running: RunningServer;
  const lines: Record<string, unknown>[] = [];

  beforeAll(async () => {
    ca = makeTestCa();
    const leaf = ca.issue('proxy');
    upstream = await startFakeUpstream();
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    running = await startServer(
      buildConfig({
        listen: '127.0.0.1:0',
        upstream: upstream.url,
        tls: { certificate: leaf.cert, key: leaf.key },
        signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry' } },
        reload: { watch: false },
        preflight: 'off',
      }),
      pino({ level: 'info', base: { name: 'registry-redirect' } }, sink),
    );
  }, 30_000);

  afterAll(async () => {
    await running?.close();
    await upstream?.close();
    ca?.remove();
  });

  async function until(check: () => boolean): Promise<void> {
    for (let i = 0; i < 400 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  }

  it('an HTTP/2 request and an HTTP/1.1 request each get their line and their X-Request-Id', async () => {
    const caPem = readFileSync(ca.cert);
    const h2 = await h2Session(running.url, { ca: caPem });
    try {
      const res = await h2.request('/v2/', { headers: { 'x-request-id': 'tls-h2-1' } });
      expect(res.alpnProtocol).toBe('h2');
      expect(res.headers['x-request-id']).toBe('tls-h2-1');
    } finally {
      await h2.close();
    }
    const h1 = await new Promise<string | string[] | undefined>((resolve, reject) => {
      const req = https.get(`${running.url}/v2/`, { ca: caPem, agent: false, headers: { 'X-Request-Id': 'tls-h1-1' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.headers['x-request-id']));
      });
      req.on('error', reject);
    });
    expect(h1).toBe('tls-h1-1');
    await until(() => ['tls-h2-1', 'tls-h1-1'].every((id) => lines.some((l) => (l.req as { id?: string } | undefined)?.id === id)));
    for (const id of ['tls-h2-1', 'tls-h1-1']) {
      expect(lines.find((l) => (l.req as { id?: string } | undefined)?.id === id)).toMatchObject({ level: 30, msg: 'request completed', req: { method: 'GET', path: '/v2/' } });
    }
  });
});
