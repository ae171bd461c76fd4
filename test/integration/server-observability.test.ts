import { execFileSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';
import { request } from '../support/http.js';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';

const BLOB = Buffer.alloc(2048, 7);
const DIGEST = digestOf(BLOB);
const azure = (container: string) => ({ azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container, endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } });

let upstream: FakeUpstream;
let running: RunningServer;
const logLines: Array<Record<string, unknown>> = [];
let logText = '';

beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logText += chunk.toString();
      for (const line of chunk.toString().split('\n')) if (line) logLines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  running = await startServer(
    buildConfig({
      listen: '127.0.0.1:0',
      upstream: upstream.url,
      signer: azure('registry'),
      signers: { cdn: azure('cdn') },
      rollout: { rules: [{ repositories: ['team/**'], percent: 100, action: 'redirect', signer: 'cdn' }], default: 'proxy' },
      metrics: { path: '/internal/metrics', defaultMetrics: false },
      // No storage behind the endpoint here: the preflight has its own tests (preflight.e2e.test.ts).
      preflight: 'off',
    }),
    pino({ level: 'info' }, sink),
  );
});
afterAll(async () => {
  await running?.close();
  await upstream?.close();
});

describe('server observability', () => {
  it('/readyz: 200 with the upstream reachable and every signer listed', async () => {
    const res = await request(`${running.url}/readyz`);
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(JSON.parse(res.body.toString())).toEqual({ ready: true, upstream: 'reachable', signers: { default: 'healthy', cdn: 'healthy' } });
    expect((await request(`${running.url}/readyz`, { method: 'HEAD' })).status).toBe(200);
  });

  it('metrics on the main listener at the configured path (GET, HEAD; other methods 405)', async () => {
    await request(`${running.url}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: BASIC } });
    const res = await request(`${running.url}/internal/metrics`);
    expect(res.status).toBe(200);
    const text = res.body.toString();
    expect(text).toContain('# TYPE registry_redirect_decisions_total counter');
    expect(text).toContain('registry_redirect_decisions_total{action="redirect",signer="cdn",reason="rules[0]"} 1');
    expect(text).toContain(`registry_redirect_blob_bytes_total{delivery="redirected"} ${BLOB.length}`);
    expect(text).toContain('registry_redirect_signer_healthy{signer="cdn"} 1');
    expect(text).not.toContain('process_cpu_user_seconds_total'); // defaultMetrics: false
    expect((await request(`${running.url}/internal/metrics`, { method: 'HEAD' })).status).toBe(200);
    expect((await request(`${running.url}/internal/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('access log: one JSON line per request with its id, path without query, status; never headers', async () => {
    const given = await request(`${running.url}/v2/team/app/blobs/${DIGEST}?_state=opaque`, {
      headers: { Authorization: BASIC, Cookie: 'session=COOKIESECRET', 'X-Request-Id': 'abc-123' },
    });
    expect(given.status).toBe(307);
    expect(given.headers['x-request-id']).toBe('abc-123');
    const generated = await request(`${running.url}/v2/`, { headers: { 'X-Request-Id': 'not a token; {"json": 1}' } });
    const id = generated.headers['x-request-id'] as string;
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const next = (await request(`${running.url}/v2/`)).headers['x-request-id'];
    expect(next).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(next).not.toBe(id);

    // Lines are buffered for up to 20 ms (see accessLog).
    const line = await vi.waitFor(() => {
      const found = logLines.find((l) => (l.req as { id?: string } | undefined)?.id === 'abc-123');
      if (!found || !logLines.some((l) => (l.req as { id?: string } | undefined)?.id === id)) throw new Error('access lines not written yet');
      return found;
    });
    expect(line).toMatchObject({ msg: 'request completed', req: { method: 'GET', path: `/v2/team/app/blobs/${DIGEST}` }, res: { statusCode: 307 } });
    expect(typeof line!.responseTime).toBe('number');
    expect(logLines.some((l) => (l.req as { id?: string } | undefined)?.id === id)).toBe(true);
    for (const secret of [BASIC.slice(6), 'COOKIESECRET', 'sig=', '_state=opaque', 'authorization']) expect(logText).not.toContain(secret);
  });

  it('/readyz: 503 naming the upstream when it is unreachable', async () => {
    const gone = await startFakeUpstream();
    const url = gone.url;
    await gone.close();
    const other = await startServer(buildConfig({ listen: '127.0.0.1:0', upstream: url, signer: azure('registry'), log: { requests: false }, preflight: 'off' }), pino({ level: 'silent' }));
    try {
      const res = await request(`${other.url}/readyz`);
      expect(res.status).toBe(503);
      expect(JSON.parse(res.body.toString())).toEqual({ ready: false, upstream: 'unreachable', signers: { default: 'healthy' } });
    } finally {
      await other.close();
    }
  });

  it('listenBacklog reaches listen(2): the kernel reports it as the listening socket\'s queue size', async ({ skip }) => {
    const other = await startServer(buildConfig({ listen: '127.0.0.1:0', listenBacklog: 1234, upstream: upstream.url, signer: azure('registry'), log: { requests: false } }), pino({ level: 'silent' }));
    try {
      const port = new URL(other.url).port;
      let out: string;
      try {
        out = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' });
      } catch {
        skip('ss (iproute2) is not installed');
        return;
      }
      // ss -l: Send-Q of a listening socket is its backlog.
      expect(out.trim().split(/\s+/)[2]).toBe('1234');
    } finally {
      await other.close();
    }
  });

  it('reload() without a config file is refused, the server keeps serving', async () => {
    expect(await running.reload()).toEqual({ ok: false, error: 'no config file to reload' });
    expect((await request(`${running.url}/healthz`)).status).toBe(200);
  });

  it('the signed-URL cache of each configured signer is counted under its configured name', async () => {
    const url = `${running.url}/v2/team/app/blobs/${DIGEST}`;
    const first = await request(url, { headers: { Authorization: BASIC } });
    const second = await request(url, { headers: { Authorization: BASIC } });
    expect(first.status).toBe(307);
    // Immutable blobs: the second redirect reuses the cached signed URL of the `cdn` signer.
    expect(second.headers.location).toBe(first.headers.location);
    const text = (await request(`${running.url}/internal/metrics`)).body.toString();
    expect(text).toMatch(/registry_redirect_signed_url_cache_total\{signer="cdn",result="miss"\} [1-9]/);
    expect(text).toMatch(/registry_redirect_signed_url_cache_total\{signer="cdn",result="hit"\} [1-9]/);
  });
});
