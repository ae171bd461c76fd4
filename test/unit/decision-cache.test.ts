import { describe, expect, it } from 'vitest';
import {
  NEGATIVE_DECISION_TTL_MS,
  createDecisionCache,
  connectionCredentialDigest,
  credentialDigest,
  decisionKey,
  resolveDecisionCacheOptions,
} from '../../src/authorize/cache.js';
import type { UpstreamVerdict } from '../../src/authorize/upstream.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;
const YES: UpstreamVerdict = { allowed: true, size: 10, digest: DIGEST };
const ttlOf = (v: UpstreamVerdict, ttl: number) => (v.allowed ? ttl : v.status === 404 ? NEGATIVE_DECISION_TTL_MS : 0);

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('decision cache', () => {
  it('reuses a positive decision until its TTL ends, then asks again', async () => {
    const c = clock();
    const cache = createDecisionCache<UpstreamVerdict>({ ttl: 30_000, maxEntries: 10, ttlOf, now: c.now })!;
    let loads = 0;
    const load = async () => (loads++, YES);
    await cache.get('k', load);
    c.advance(29_999);
    expect(await cache.get('k', load)).toBe(YES);
    expect(loads).toBe(1);
    c.advance(2);
    await cache.get('k', load);
    expect(loads).toBe(2);
    expect(cache.stats()).toEqual({ hits: 1, loads: 2, shared: 0 });
  });

  it('peek answers a fresh entry synchronously and never loads, shares or answers an expired one', async () => {
    const c = clock();
    const cache = createDecisionCache<UpstreamVerdict>({ ttl: 30_000, maxEntries: 10, ttlOf, now: c.now })!;
    expect(cache.peek('k')).toBeUndefined();
    const pending = deferred<UpstreamVerdict>();
    const loading = cache.get('k', () => pending.promise);
    expect(cache.peek('k')).toBeUndefined(); // a load in flight is not an answer
    pending.resolve(YES);
    await loading;
    expect(cache.peek('k')).toBe(YES);
    c.advance(30_000);
    expect(cache.peek('k')).toBeUndefined();
    expect(cache.stats()).toEqual({ hits: 1, loads: 1, shared: 0 });
  });

  it('keeps a negative answer at most the tiny negative TTL, and never one ttlOf marks as not reusable', async () => {
    const c = clock();
    const cache = createDecisionCache<UpstreamVerdict>({ ttl: 30_000, maxEntries: 10, ttlOf, now: c.now })!;
    let loads = 0;
    const notFound = async (): Promise<UpstreamVerdict> => (loads++, { allowed: false, status: 404 });
    await cache.get('k', notFound);
    await cache.get('k', notFound);
    expect(loads).toBe(1);
    c.advance(NEGATIVE_DECISION_TTL_MS + 1);
    await cache.get('k', notFound);
    expect(loads).toBe(2);

    let errors = 0;
    const serverError = async (): Promise<UpstreamVerdict> => (errors++, { allowed: false, status: 503 });
    await cache.get('e', serverError);
    await cache.get('e', serverError);
    expect(errors).toBe(2);
  });

  it('a TTL shorter than the negative TTL also bounds negative answers', async () => {
    const c = clock();
    const cache = createDecisionCache<UpstreamVerdict>({ ttl: 100, maxEntries: 10, ttlOf, now: c.now })!;
    let loads = 0;
    const notFound = async (): Promise<UpstreamVerdict> => (loads++, { allowed: false, status: 404 });
    await cache.get('k', notFound);
    c.advance(101);
    await cache.get('k', notFound);
    expect(loads).toBe(2);
  });

  it('single-flight: concurrent misses for one key share one load', async () => {
    const cache = createDecisionCache<UpstreamVerdict>({ ttl: 30_000, maxEntries: 10, ttlOf })!;
    const d = deferred<UpstreamVerdict>();
    let loads = 0;
    const load = () => (loads++, d.promise);
    const waiting = Array.from({ length: 20 }, () => cache.get('k', load));
    const other = cache.get('other', async () => YES);
    d.resolve(YES);
    expect(await Promise.all(waiting)).toEqual(Array(20).fill(YES));
    await other;
    expect(loads).toBe(1);
    expect(cache.stats()).toMatchObject({ loads: 2, shared: 19 });
  });

  it('a failed load is shared by its waiters and never cached', async () => {
    const cache = createDecisionCache<UpstreamVerdict>({ ttl: 30_000, maxEntries: 10, ttlOf })!;
    const d = deferred<UpstreamVerdict>();
    const a = cache.get('k', () => d.promise);
    const b = cache.get('k', () => d.promise);
    d.reject(new Error('timeout'));
    await expect(a).rejects.toThrow('timeout');
    await expect(b).rejects.toThrow('timeout');
    expect(cache.size).toBe(0);
    expect(await cache.get('k', async () => YES)).toBe(YES);
  });

  it('is bounded: the least recently used decision is dropped', async () => {
    const cache = createDecisionCache<UpstreamVerdict>({ ttl: 30_000, maxEntries: 3, ttlOf })!;
    for (const k of ['a', 'b', 'c']) await cache.get(k, async () => YES);
    await cache.get('a', async () => YES); // touch a
    await cache.get('d', async () => YES); // evicts b
    expect(cache.size).toBe(3);
    let reloaded = 0;
    await cache.get('b', async () => (reloaded++, YES));
    await cache.get('a', async () => (reloaded++, YES));
    expect(reloaded).toBe(1);
  });

  it('is bounded by bytes too: long keys hold fewer entries than maxEntries allows', async () => {
    // Each entry counts 600 bytes plus its key and digest: with 4,096 bytes about four 300-character keys fit.
    const cache = createDecisionCache<UpstreamVerdict>({ ttl: 30_000, maxEntries: 1_000, maxBytes: 4096, ttlOf })!;
    for (let i = 0; i < 20; i++) await cache.get(`${'k'.repeat(300)}${i}`, async () => YES);
    expect(cache.size).toBeGreaterThan(0);
    expect(cache.size).toBeLessThanOrEqual(Math.floor(4096 / (600 + 302 + DIGEST.length)));
    let reloaded = 0;
    await cache.get(`${'k'.repeat(300)}19`, async () => (reloaded++, YES));
    await cache.get(`${'k'.repeat(300)}0`, async () => (reloaded++, YES));
    expect(reloaded).toBe(1);
  });

  it('maxBytes is validated: at least 4096, a whole number', () => {
    expect(resolveDecisionCacheOptions(undefined).maxBytes).toBe(16 * 2 ** 20);
    expect(() => resolveDecisionCacheOptions({ maxBytes: 100 })).toThrow(/decisionCache\.maxBytes: 100 is not a byte count of at least 4096/);
    expect(() => resolveDecisionCacheOptions({ maxBytes: 5000.5 })).toThrow(/decisionCache\.maxBytes/);
  });

  it('ttl 0 disables the cache entirely', () => {
    expect(createDecisionCache<UpstreamVerdict>({ ttl: 0, maxEntries: 10, ttlOf })).toBeUndefined();
  });
});

describe('decision cache keys never hold a credential', () => {
  const basic = `Basic ${Buffer.from('alice:hunter2-very-secret').toString('base64')}`;

  it('keys on the SHA-256 of Authorization and Cookie, not on their text', () => {
    const digest = credentialDigest({ authorization: basic, cookie: 'session=abc123secret' });
    expect(digest).toMatch(/^[0-9a-f]{64}$/);
    const key = decisionKey({ repository: 'team/app', digest: DIGEST }, digest);
    expect(key).not.toContain('hunter2');
    expect(key).not.toContain(basic.slice(6));
    expect(key).not.toContain('abc123secret');
    expect(key).toBe(`${digest} team/app ${DIGEST}`);
  });

  it('different credentials, cookies or repositories never share a key', () => {
    const keys = new Set([
      decisionKey({ repository: 'team/app', digest: DIGEST }, credentialDigest({ authorization: basic })),
      decisionKey({ repository: 'team/app', digest: DIGEST }, credentialDigest({ authorization: 'Bearer x' })),
      decisionKey({ repository: 'team/app', digest: DIGEST }, credentialDigest({})),
      decisionKey({ repository: 'team/app', digest: DIGEST }, credentialDigest({ cookie: 'a=b' })),
      decisionKey({ repository: 'team/app', digest: DIGEST }, credentialDigest({ authorization: basic, cookie: 'a=b' })),
      decisionKey({ repository: 'team/other', digest: DIGEST }, credentialDigest({ authorization: basic })),
      decisionKey({ repository: 'team/app', digest: DIGEST }),
    ]);
    expect(keys.size).toBe(7);
  });

  it('per connection: the remembered digest is reused only for the very same Authorization and Cookie', () => {
    const socket = {};
    // Node joins Cookie headers into one string; an array (HTTP/2 can deliver one) is handled too.
    type Headers = Parameters<typeof credentialDigest>[0];
    const req = (headers: object) => ({ headers, socket }) as unknown as Parameters<typeof connectionCredentialDigest>[0];
    const cases: object[] = [{ authorization: basic }, { authorization: 'Bearer x' }, {}, { authorization: basic, cookie: 'a=b' }, { cookie: ['a=1', 'b=2'] }, { cookie: ['a=1', 'b=3'] }, { authorization: basic }];
    for (const headers of cases) {
      expect(connectionCredentialDigest(req(headers)), JSON.stringify(headers)).toBe(credentialDigest(headers as Headers));
    }
    // The remembered cookie list is a copy: changing the request's array afterwards changes nothing.
    const mutable = ['c=1'];
    connectionCredentialDigest(req({ cookie: mutable }));
    mutable[0] = 'c=2';
    expect(connectionCredentialDigest(req({ cookie: mutable }))).toBe(credentialDigest({ cookie: ['c=2'] } as unknown as Headers));
  });

  it('the credential and cookie cannot be shifted into each other', () => {
    expect(credentialDigest({ authorization: 'a', cookie: 'b' })).not.toBe(credentialDigest({ authorization: 'a\nb' }));
  });
});

describe('resolveDecisionCacheOptions', () => {
  it('defaults to 30 s and 10 000 entries, 16 MiB; false and ttl 0 disable', () => {
    expect(resolveDecisionCacheOptions(undefined)).toEqual({ ttl: 30_000, maxEntries: 10_000, maxBytes: 16_777_216 });
    expect(resolveDecisionCacheOptions(false).ttl).toBe(0);
    expect(resolveDecisionCacheOptions({ ttl: 0 }).ttl).toBe(0);
  });

  it.each([
    [{ ttl: -1 }, /decisionCache\.ttl: -1 is not a duration; write milliseconds >= 0/],
    [{ ttl: '30s' }, /decisionCache\.ttl: "30s" is not a duration/],
    [{ maxEntries: 0 }, /decisionCache\.maxEntries: 0 is not a positive integer/],
    [{ ttlMs: 5 }, /decisionCache\.ttlMs: unknown option; known: ttl/],
  ])('rejects %j naming the key and the fix', (opts, message) => {
    expect(() => resolveDecisionCacheOptions(opts as never)).toThrow(message);
  });
});

describe('forget (a DELETE through the proxy)', () => {
  const allowed = { allowed: true } as const;
  const make = () => createDecisionCache<{ allowed: boolean }>({ ttl: 30_000, maxEntries: 100, ttlOf: (_v, ttl) => ttl })!;

  it('drops one blob of one repository for every credential, or the whole repository, and nothing else', async () => {
    const cache = make();
    const keys = [
      decisionKey({ repository: 'team/app', digest: 'sha256:aa' }, 'c1'),
      decisionKey({ repository: 'team/app', digest: 'sha256:aa' }, 'c2'),
      decisionKey({ repository: 'team/app', digest: 'sha256:bb' }, 'c1'),
      decisionKey({ repository: 'team/app2', digest: 'sha256:aa' }, 'c1'),
      decisionKey({ repository: 'x/team/app', digest: 'sha256:aa' }, 'c1'),
      decisionKey({ repository: 'team/app', digest: 'sha256:aa' }),
    ];
    for (const key of keys) await cache.get(key, async () => allowed);
    expect(cache.forget('team/app', 'sha256:aa')).toBe(3);
    expect(cache.size).toBe(3);
    expect(cache.forget('team/app')).toBe(1);
    expect(cache.size).toBe(2);
    expect(cache.forget('team/app2', 'sha256:a')).toBe(0);
  });

  it('a load in flight when forget runs answers its waiters but is not cached', async () => {
    const cache = make();
    const key = decisionKey({ repository: 'team/app', digest: 'sha256:aa' }, 'c1');
    let release!: () => void;
    const pending = cache.get(key, () => new Promise((resolve) => (release = () => resolve(allowed))));
    cache.forget('team/app', 'sha256:aa');
    let loads = 0;
    const fresh = cache.get(key, async () => (loads++, allowed));
    release();
    expect(await pending).toBe(allowed);
    await fresh;
    expect(loads).toBe(1);
    expect(cache.stats().hits).toBe(0);
  });
});
