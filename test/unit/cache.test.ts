import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cachedSigner, type CacheResult, type CachedSignerOptions } from '../../src/signers/cache.js';
import { defineSigner } from '../../src/signers/define.js';
import { hmacSigner } from '../../src/signers/hmac.js';
import type { SignRequest, SignedUrl, Signer } from '../../src/types.js';

const MIN = 60_000;
const digest = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;
const req = (n = 1, repository = 'team/app'): SignRequest => ({ repository, digest: digest(n), method: 'GET' });

/** A fake clock and a counting signer whose URLs live `lifetime` ms from the clock's now. */
function setup(options: Partial<CachedSignerOptions> = {}, { lifetime = 20 * MIN, objectKey = true } = {}) {
  const clock = { t: 1_000_000 };
  const calls: SignRequest[] = [];
  const results: CacheResult[] = [];
  const inner: Signer = {
    name: 'fake',
    ...(objectKey ? { objectKey: (r: SignRequest) => `blobs/${r.digest}` } : {}),
    sign(r) {
      calls.push(r);
      return { url: `https://s/${r.repository}/${r.digest}?n=${calls.length}`, expiresAt: clock.t + lifetime };
    },
  };
  const signer = cachedSigner(inner, { now: () => clock.t, onResult: (r) => results.push(r), ...options });
  return { clock, calls, results, signer, sign: (r = req()) => signer.sign(r) as SignedUrl };
}

describe('cachedSigner: hit, miss, refresh on a fake clock', () => {
  it('reuses a URL until half its lifetime is gone, then re-signs (default refreshFraction 0.5)', () => {
    const { clock, calls, results, sign } = setup();
    const first = sign();
    expect(sign()).toBe(first);
    clock.t += 10 * MIN - 1; // 10 min + 1 ms left of 20: still more than half
    expect(sign()).toBe(first);
    clock.t += 1; // exactly half left: re-sign
    const second = sign();
    expect(second.url).not.toBe(first.url);
    expect(calls).toHaveLength(2);
    expect(results).toEqual(['miss', 'hit', 'hit', 'refresh']);
    expect(sign()).toBe(second);
  });

  it('refreshFraction is configurable: 0.25 reuses for three quarters of the lifetime', () => {
    const { clock, results, sign } = setup({ refreshFraction: 0.25 });
    sign();
    clock.t += 15 * MIN - 1;
    sign();
    clock.t += 1;
    sign();
    expect(results).toEqual(['miss', 'hit', 'refresh']);
  });

  it('never serves a URL with less than minRemaining left, even with refreshFraction 0', () => {
    const { clock, results, sign } = setup({ refreshFraction: 0, minRemainingMs: 2 * MIN });
    const first = sign();
    clock.t += 18 * MIN - 1;
    expect(sign()).toBe(first); // 2 min + 1 ms left
    clock.t += 1;
    expect(sign()).not.toBe(first);
    expect(results).toEqual(['miss', 'hit', 'refresh']);
  });

  it('does not keep a URL that is born inside its refresh window (expiry shorter than minRemaining)', () => {
    const { calls, results, sign } = setup({ minRemainingMs: 5 * MIN }, { lifetime: 4 * MIN });
    sign();
    sign();
    expect(calls).toHaveLength(2);
    expect(results).toEqual(['miss', 'miss']);
  });

  it('property: whatever the timing, a URL from the cache always has at least minRemaining and refreshFraction of its lifetime left', () => {
    fc.assert(
      fc.property(
        fc.record({
          lifetime: fc.integer({ min: 2 * MIN, max: 7 * 24 * 60 * MIN }),
          fraction: fc.double({ min: 0, max: 0.99, noNaN: true }),
          minRemaining: fc.integer({ min: 0, max: MIN * 5 }),
          steps: fc.array(fc.record({ advance: fc.integer({ min: 0, max: 30 * MIN }), blob: fc.integer({ min: 0, max: 3 }) }), { maxLength: 40 }),
        }),
        ({ lifetime, fraction, minRemaining, steps }) => {
          const { clock, sign, results } = setup({ refreshFraction: fraction, minRemainingMs: minRemaining }, { lifetime });
          for (const { advance, blob } of steps) {
            clock.t += advance;
            const { expiresAt } = sign(req(blob));
            if (results.at(-1) !== 'hit') continue; // freshly signed: the signer's own lifetime
            const remaining = expiresAt - clock.t;
            expect(remaining).toBeGreaterThanOrEqual(minRemaining);
            expect(remaining).toBeGreaterThan(lifetime * fraction - 1e-6);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('keys by the object key: one digest in many repositories of a global store is signed once', () => {
    const { calls, results, signer } = setup();
    signer.sign(req(1, 'team/a'));
    signer.sign(req(1, 'team/b'));
    signer.sign(req(2, 'team/a'));
    expect(calls.map((c) => c.repository)).toEqual(['team/a', 'team/a']);
    expect(results).toEqual(['miss', 'hit', 'miss']);
  });

  it('without objectKey it keys by repository and digest', () => {
    const { calls, signer } = setup({}, { objectKey: false });
    signer.sign(req(1, 'team/a'));
    signer.sign(req(1, 'team/b'));
    signer.sign(req(1, 'team/a'));
    expect(calls.map((c) => c.repository)).toEqual(['team/a', 'team/b']);
  });

  it('keys by cacheKey when the signer has one, before objectKey', () => {
    const calls: SignRequest[] = [];
    const signer = cachedSigner({
      name: 'k',
      objectKey: (r) => `${r.repository}/${r.digest}`,
      cacheKey: (r) => r.digest,
      sign: (r) => (calls.push(r), { url: `https://s/${r.digest}`, expiresAt: Date.now() + 20 * MIN }),
    });
    signer.sign(req(1, 'team/a'));
    signer.sign(req(1, 'team/b'));
    signer.sign(req(2, 'team/a'));
    expect(calls.map((c) => `${c.repository} ${c.digest.slice(-1)}`)).toEqual(['team/a 1', 'team/a 2']);
  });

  it('a real signer with the default layout signs a digest once across repositories', () => {
    const signer = cachedSigner(hmacSigner({ preset: 'cloudflare', baseUrl: 'https://cdn.example.com', key: 'k' }));
    const a = signer.sign(req(1, 'team/a')) as SignedUrl;
    expect(signer.sign(req(1, 'team/b'))).toBe(a);
    expect((signer.sign(req(2, 'team/a')) as SignedUrl).url).not.toBe(a.url);
  });

  it('a real signer with the oci-per-repo layout keeps repositories apart', () => {
    const signer = cachedSigner(hmacSigner({ preset: 'cloudflare', baseUrl: 'https://cdn.example.com', key: 'k', layout: 'oci-per-repo' }));
    const a = signer.sign(req(1, 'team/a')) as SignedUrl;
    const b = signer.sign(req(1, 'team/b')) as SignedUrl;
    expect(new URL(a.url).pathname).toContain('/team/a/blobs/');
    expect(new URL(b.url).pathname).toContain('/team/b/blobs/');
  });

  it('is bounded: the least recently used URL is dropped beyond maxEntries', () => {
    const { calls, sign } = setup({ maxEntries: 2 });
    sign(req(1));
    sign(req(2));
    sign(req(1)); // 1 is now the most recent
    sign(req(3)); // evicts 2
    sign(req(1));
    sign(req(2));
    expect(calls.map((c) => c.digest)).toEqual([digest(1), digest(2), digest(3), digest(2)]);
  });

  it('is bounded by bytes too: long URLs hold fewer entries than maxEntries allows', () => {
    // Each entry counts 500 bytes plus its key and URL (about 100 + 90 characters here).
    const { calls, sign } = setup({ maxEntries: 1_000, maxBytes: 4096 });
    for (let i = 1; i <= 20; i++) sign(req(i));
    sign(req(20));
    expect(calls).toHaveLength(20);
    sign(req(1));
    expect(calls).toHaveLength(21);
  });

  it('stays synchronous for a synchronous signer (no promise on the hot path)', () => {
    const { sign } = setup();
    const miss = sign();
    expect(miss).not.toBeInstanceOf(Promise);
    expect(sign()).not.toBeInstanceOf(Promise);
  });
});

describe('cachedSigner: concurrency and failures', () => {
  function deferredSigner() {
    const pending: { resolve: (v: SignedUrl) => void; reject: (e: Error) => void; request: SignRequest }[] = [];
    const inner = defineSigner({
      name: 'slow',
      sign: (request: SignRequest) =>
        new Promise<SignedUrl>((resolve, reject) => {
          pending.push({ resolve, reject, request });
        }),
    });
    return { inner, pending };
  }

  it('many concurrent requests for one digest sign once and all get that URL', async () => {
    const { inner, pending } = deferredSigner();
    const results: CacheResult[] = [];
    const signer = cachedSigner(inner, { onResult: (r) => results.push(r) });
    const all = Array.from({ length: 100 }, () => signer.sign(req()));
    expect(pending).toHaveLength(1);
    pending[0]!.resolve({ url: 'https://s/one', expiresAt: Date.now() + 20 * MIN });
    const urls = await Promise.all(all);
    expect(new Set(urls.map((u) => u.url))).toEqual(new Set(['https://s/one']));
    expect(results.filter((r) => r === 'miss')).toHaveLength(1);
    expect(results.filter((r) => r === 'hit')).toHaveLength(99);
    // and it is cached afterwards
    expect(signer.sign(req())).toEqual({ url: 'https://s/one', expiresAt: expect.any(Number) });
    expect(pending).toHaveLength(1);
  });

  it('different digests sign concurrently, not one after another', () => {
    const { inner, pending } = deferredSigner();
    const signer = cachedSigner(inner);
    void signer.sign(req(1));
    void signer.sign(req(2));
    expect(pending.map((p) => p.request.digest)).toEqual([digest(1), digest(2)]);
  });

  it('a failed signing is not cached: everyone waiting gets the error, the next request tries again', async () => {
    const { inner, pending } = deferredSigner();
    const signer = cachedSigner(inner);
    const a = signer.sign(req());
    const b = signer.sign(req());
    pending[0]!.reject(new Error('storage credentials expired'));
    await expect(a).rejects.toThrow('storage credentials expired');
    await expect(b).rejects.toThrow('storage credentials expired');
    const c = signer.sign(req());
    expect(pending).toHaveLength(2);
    pending[1]!.resolve({ url: 'https://s/ok', expiresAt: Date.now() + 20 * MIN });
    await expect(c).resolves.toMatchObject({ url: 'https://s/ok' });
  });

  it('a synchronous throw propagates and is not cached', () => {
    let n = 0;
    const signer = cachedSigner({
      name: 'flaky',
      sign: () => {
        n++;
        if (n === 1) throw new Error('boom');
        return { url: 'https://s/x', expiresAt: Date.now() + 20 * MIN };
      },
    });
    expect(() => signer.sign(req())).toThrow('boom');
    expect(signer.sign(req())).toMatchObject({ url: 'https://s/x' });
  });

  it('forwards name, objectKey, cacheKey, ready and close', async () => {
    const seen: string[] = [];
    const signer = cachedSigner({
      name: 'x',
      objectKey: () => 'k',
      cacheKey: () => 'c',
      sign: () => ({ url: 'https://s/x', expiresAt: Date.now() + 20 * MIN }),
      ready: async () => void seen.push('ready'),
      close: () => void seen.push('close'),
    });
    expect(signer.name).toBe('x');
    expect(signer.objectKey!(req())).toBe('k');
    expect(signer.cacheKey!(req())).toBe('c');
    await signer.ready!();
    await signer.close!();
    expect(seen).toEqual(['ready', 'close']);
  });

  it.each([
    [{ maxEntries: 0 }, /cache\.maxEntries: write a whole number of URLs to keep, at least 1/],
    [{ maxEntries: 1.5 }, /cache\.maxEntries/],
    [{ maxBytes: 1000 }, /cache\.maxBytes: write a number of bytes, at least 4096/],
    [{ refreshFraction: 1 }, /cache\.refreshFraction: write a fraction from 0 up to \(not including\) 1/],
    [{ refreshFraction: -0.1 }, /cache\.refreshFraction/],
    [{ minRemainingMs: -1 }, /cache\.minRemaining: write a duration/],
  ])('rejects bad options: %j', (options, message) => {
    expect(() => cachedSigner({ name: 'x', sign: () => ({ url: 'https://s', expiresAt: 0 }) }, options)).toThrow(message);
  });
});

describe('cachedSigner with a custom signer answering a bare thenable', () => {
  it('awaits it as a promise, shares it between concurrent callers and caches the URL', async () => {
    let calls = 0;
    const signer: Signer = {
      name: 'thenable',
      // A thenable whose then() returns nothing: it must still be shared and cached like a promise.
      sign: (r) => {
        calls++;
        return { then: (resolve: (v: SignedUrl) => void) => void resolve({ url: `https://cdn.example/${r.digest}`, expiresAt: Date.now() + 20 * MIN }) } as unknown as Promise<SignedUrl>;
      },
    };
    const cached = cachedSigner(signer);
    const [a, b] = await Promise.all([cached.sign(req(7)), cached.sign(req(7))]);
    expect(a).toEqual(b);
    expect(a.url).toBe(`https://cdn.example/${digest(7)}`);
    expect(await cached.sign(req(7))).toEqual(a);
    expect(calls).toBe(1);
  });
});
