import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineSigner, registryRedirect, RegistryRedirectError, type RegistryRedirectMiddleware, type RolloutPolicy } from '../../src/index.js';

/**
 * `rollout.userAgents` patterns are tested against the client's User-Agent, which the attacker
 * writes. With a backtracking engine a pattern with nested quantifiers such as `(a+)+$` takes
 * exponential time on a short near-miss (`'a'.repeat(26) + '!'` blocked one decision for ~0.7 s;
 * the 1024-character cap on the header does not help), so one request per second stalls the
 * event loop of the whole proxy. Patterns must match in time linear in the input.
 */

const EVIL_PATTERNS = ['(a+)+$', '(a|aa)+$', '^(a*)*b$', '^(\\w+\\s?)*$', '(.*a){12}$'];
const NEAR_MISS = 'a'.repeat(28) + '!';
const digest = `sha256:${'a'.repeat(64)}`;
const signer = defineSigner({ name: 'cdn', sign: ({ digest: d }) => ({ url: `https://cdn.example.com/${d}`, expiresAt: Date.now() + 60_000 }) });

let server: http.Server;
let base: string;
let mw: RegistryRedirectMiddleware;

beforeAll(async () => {
  const rollout: RolloutPolicy = { rules: [{ userAgents: { deny: EVIL_PATTERNS }, action: 'redirect' }], default: 'proxy' };
  mw = registryRedirect({ signer, authorize: () => ({ size: 1 }), rollout });
  server = http.createServer((req, res) => mw(req, res, () => {
    res.writeHead(404, { 'Content-Length': '0' });
    res.end();
  }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await mw.close();
});

async function pull(userAgent: string): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  const res = await fetch(`${base}/v2/team/app/blobs/${digest}`, { redirect: 'manual', headers: { 'user-agent': userAgent } });
  await res.arrayBuffer();
  return { status: res.status, ms: performance.now() - started };
}

describe('user-agent patterns cannot stall decisions', () => {
  it('a near-miss User-Agent against patterns with nested quantifiers is decided at once', async () => {
    for (const ua of [NEAR_MISS, 'a'.repeat(26) + '!', `${'a '.repeat(20)}!`, 'a'.repeat(1023) + '!']) {
      const { status, ms } = await pull(ua);
      expect(status, ua).toBe(307);
      expect(ms, `${JSON.stringify(ua.slice(0, 40))} took ${ms.toFixed(0)} ms`).toBeLessThan(250);
    }
  });

  it('ten such requests at once still take well under a second in total', async () => {
    const started = performance.now();
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => pull('a'.repeat(24 + i) + '!')));
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(307));
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('the deny list still matches what it should', async () => {
    expect((await pull('aaaa')).status).toBe(404);
    expect((await pull('containerd/2.0')).status).toBe(307);
  });

  it('patterns a linear-time engine cannot run are refused at construction, naming the key', () => {
    for (const pattern of ['^(?=containerd)', '(a)\\1', '(?<!x)docker']) {
      let error: unknown;
      try {
        registryRedirect({ signer, authorize: () => ({ size: 1 }), rollout: { rules: [{ userAgents: [pattern], action: 'redirect' }], default: 'proxy' } });
      } catch (err) {
        error = err;
      }
      expect(error, pattern).toBeInstanceOf(RegistryRedirectError);
      expect((error as Error).message).toMatch(/^rollout\.rules\[0\]\.userAgents\[0\]: .* is not a regular expression RE2 accepts .*linear time/);
    }
  });
});
