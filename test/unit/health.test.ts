import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSignerHealth, probeSigner } from '../../src/health.js';
import { silentLogger } from '../../src/log.js';
import { completeObserver } from '../../src/metrics.js';
import type { Signer } from '../../src/types.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;
let storage: http.Server;
let base: string;
const seen: Array<{ url: string; range?: string }> = [];

beforeAll(async () => {
  // A tiny storage stand-in with one answer per path: the probe's HTTP handling is what is tested.
  storage = http.createServer((req, res) => {
    seen.push({ url: req.url!, range: req.headers.range });
    if (req.url!.startsWith('/ok')) {
      res.writeHead(206, { 'Content-Range': 'bytes 0-0/100', 'Content-Length': '1' });
      res.end('x');
    } else if (req.url!.startsWith('/denied')) {
      res.writeHead(403, { 'Content-Length': '0' });
      res.end();
    } else if (req.url!.startsWith('/redirect')) {
      res.writeHead(302, { Location: '/ok', 'Content-Length': '0' });
      res.end();
    } // '/hang': never answers
  });
  await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(storage.address() as AddressInfo).port}`;
});
afterAll(async () => {
  storage.closeAllConnections();
  await new Promise((resolve) => storage.close(resolve));
});

const signerTo = (path: string): Signer => ({ name: 'x', sign: () => ({ url: `${base}${path}?sig=SECRET`, expiresAt: Date.now() + 1000 }) });

describe('probeSigner', () => {
  it('signs the known blob and fetches one byte of it', async () => {
    seen.length = 0;
    const result = await probeSigner(signerTo('/ok/blob'), { repository: 'library/alpine', digest: DIGEST });
    expect(result).toMatchObject({ ok: true, status: 206 });
    expect(seen).toEqual([{ url: '/ok/blob?sig=SECRET', range: 'bytes=0-0' }]);
  });

  it.each([
    ['/denied', /storage answered 403/],
    ['/redirect', /storage answered 302/],
  ])('%s is a failure', async (path, error) => {
    const result = await probeSigner(signerTo(path), { repository: 'a', digest: DIGEST });
    expect(result.ok).toBe(false);
    expect(result.error).toMatch(error);
  });

  it('a storage that never answers fails after the timeout', async () => {
    const result = await probeSigner(signerTo('/hang'), { repository: 'a', digest: DIGEST }, 200);
    expect(result).toMatchObject({ ok: false, error: 'timed out after 200 ms' });
  });

  it('a signer that never answers fails after the timeout', async () => {
    const result = await probeSigner({ name: 'x', sign: () => new Promise(() => {}) }, { repository: 'a', digest: DIGEST }, 200);
    expect(result.ok).toBe(false);
    expect(result.error).toMatch(/timed out/);
  });

  it('a signer error is reported redacted', async () => {
    const result = await probeSigner({ name: 'x', sign: () => { throw new Error('failed https://s/x?sig=TOPSECRET'); } }, { repository: 'a', digest: DIGEST });
    expect(result.ok).toBe(false);
    expect(result.error).not.toContain('TOPSECRET');
  });

  it('an unreachable storage is a failure with its cause (also on ports fetch() refuses, e.g. 1)', async () => {
    const result = await probeSigner({ name: 'x', sign: () => ({ url: 'http://127.0.0.1:1/x', expiresAt: 0 }) }, { repository: 'a', digest: DIGEST });
    expect(result.ok).toBe(false);
    expect(result.error).toMatch(/ECONNREFUSED/);
  });
});

describe('circuit breaker state machine', () => {
  const signers = new Map<string, Signer>([['default', signerTo('/ok')], ['cdn', signerTo('/ok')]]);

  it('opens after N consecutive failures only; a success in between resets the count', () => {
    let t = 0;
    const events: Array<[string, boolean]> = [];
    const h = createSignerHealth(signers, { failureThreshold: 3, retryAfter: 1_000 }, { logger: silentLogger, observer: completeObserver({ signerHealth: (n, ok) => events.push([n, ok]) }), now: () => t });
    h.failure('cdn', new Error('a'));
    h.failure('cdn', new Error('b'));
    h.success('cdn');
    h.failure('cdn', new Error('c'));
    h.failure('cdn', new Error('d'));
    expect(h.available('cdn')).toBe(true);
    h.failure('cdn', new Error('e'));
    expect(h.available('cdn')).toBe(false);
    expect(h.available('default')).toBe(true);
    expect(h.anyHealthy()).toBe(true);
    expect(h.status().cdn).toMatchObject({ healthy: false, consecutiveFailures: 3, lastError: 'e' });
    expect(events).toEqual([['cdn', false]]);

    // Without a probe: traffic may try again after retryAfter; a failed trial restarts the wait.
    t = 999;
    expect(h.available('cdn')).toBe(false);
    t = 1_000;
    expect(h.available('cdn')).toBe(true);
    h.failure('cdn', new Error('still down'));
    expect(h.available('cdn')).toBe(false);
    t = 2_000;
    expect(h.available('cdn')).toBe(true);
    h.success('cdn');
    expect(h.status().cdn).toMatchObject({ healthy: true, consecutiveFailures: 0 });
    expect(events).toEqual([['cdn', false], ['cdn', true]]);
    h.close();
  });

  it('a probed signer stays open until a probe passes (requests do not retry it)', async () => {
    let t = 0;
    let path = '/denied';
    const flaky: Signer = { name: 'x', sign: () => ({ url: `${base}${path}`, expiresAt: 0 }) };
    const h = createSignerHealth(new Map([['default', flaky]]), { failureThreshold: 2, retryAfter: 10, probe: { repository: 'a', digest: DIGEST, interval: 60_000 } }, { logger: silentLogger, observer: completeObserver(undefined), now: () => t });
    await h.probeNow();
    await h.probeNow();
    expect(h.available('default')).toBe(false);
    expect(h.anyHealthy()).toBe(false);
    t = 1_000_000;
    expect(h.available('default')).toBe(false);
    path = '/ok';
    const results = await h.probeNow();
    expect(results.default).toMatchObject({ ok: true, status: 206 });
    expect(h.available('default')).toBe(true);
    expect(h.status().default!.lastProbe).toMatchObject({ ok: true, at: 1_000_000 });
    h.close();
  });

  it('probes only the listed signers; concurrent probeNow calls share one round', async () => {
    seen.length = 0;
    const h = createSignerHealth(signers, { probe: { repository: 'a', digest: DIGEST, interval: 60_000, signers: ['cdn'] } }, { logger: silentLogger, observer: completeObserver(undefined) });
    const [a, b] = await Promise.all([h.probeNow(), h.probeNow()]);
    expect(Object.keys(a)).toEqual(['cdn']);
    expect(b).toBe(a);
    h.close();
  });
});
