import { LRUCache } from 'lru-cache';
import type { CacheResult, SignRequest, SignedUrl, Signer } from '../types.js';
import { isPromiseLike } from '../promise.js';
import { configError } from './common.js';

export type { CacheResult } from '../types.js';

/** Options of {@link cachedSigner}; the same keys as the `cache` config block. */
export interface CachedSignerOptions {
  /** Most URLs kept (least recently used dropped first). Default 10 000 (about 0.9 KiB each for a 300-character URL). */
  maxEntries?: number;
  /**
   * Most bytes the kept URLs may hold on the heap (500 bytes per entry plus its key and URL text),
   * least recently used dropped first. Default 16 MiB. GCS and CloudFront URLs run to 600-1,200
   * characters, so for them this bound is reached before `maxEntries`.
   */
  maxBytes?: number;
  /**
   * Re-sign once less than this fraction of a URL's lifetime remains. Default `0.5`: with a 20 min
   * expiry a URL is reused for 10 min and every client gets at least 10 min. `0` reuses until
   * `minRemainingMs`.
   */
  refreshFraction?: number;
  /** Never hand out a URL with less than this left, in milliseconds. Default 60 000. */
  minRemainingMs?: number;
  /** Clock, epoch milliseconds. Default `Date.now`; for tests. */
  now?: () => number;
  /** Called once per request with what the cache did (metrics hook). */
  onResult?: (result: CacheResult, signer: string) => void;
}

export const CACHE_DEFAULTS = { maxEntries: 10_000, maxBytes: 16 * 2 ** 20, refreshFraction: 0.5, minRemainingMs: 60_000 } as const;

/**
 * What one cached URL holds on the V8 heap, for the byte bound: a fixed part (the entry and signed
 * URL objects, the cache's slots and hash table, string headers), plus the key and the URL, one
 * byte per character (ASCII). Measured with Node 24 for Azure SAS URLs (301 characters, key about
 * 100): about 895 bytes per entry (heap after GC, 100,000 entries against none).
 */
export function urlEntryBytes(key: string, url: string): number {
  return 500 + key.length + url.length;
}

interface Entry {
  readonly signed: SignedUrl;
  /** From this instant on the entry is not served any more. */
  readonly staleAt: number;
}

/**
 * Wraps a signer with a bounded LRU of signed URLs. Blobs are content-addressed and immutable, so
 * a URL signed for an object stays right until it expires: it is reused until less than
 * `refreshFraction` of its lifetime (and never less than `minRemainingMs`) remains. Entries are
 * keyed by the signer's `cacheKey` (else its `objectKey`, else repository + digest); concurrent
 * misses for one key share a single signing.
 *
 * @example
 * ```ts
 * const signer = cachedSigner(s3Signer({ bucket: 'registry', region: 'us-east-1' }), { maxEntries: 50_000 });
 * ```
 */
export function cachedSigner(signer: Signer, options: CachedSignerOptions = {}): Signer {
  if (!signer || typeof signer.sign !== 'function') configError('cachedSigner(signer): pass a signer such as s3Signer({ ... })');
  const maxEntries = options.maxEntries ?? CACHE_DEFAULTS.maxEntries;
  const maxBytes = options.maxBytes ?? CACHE_DEFAULTS.maxBytes;
  const refreshFraction = options.refreshFraction ?? CACHE_DEFAULTS.refreshFraction;
  const minRemainingMs = options.minRemainingMs ?? CACHE_DEFAULTS.minRemainingMs;
  if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) configError(`cache.maxEntries: write a whole number of URLs to keep, at least 1, e.g. 10000 (got ${JSON.stringify(maxEntries)})`);
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 4096) configError(`cache.maxBytes: write a number of bytes, at least 4096, e.g. 16777216 (16 MiB) (got ${JSON.stringify(maxBytes)})`);
  if (typeof refreshFraction !== 'number' || !(refreshFraction >= 0 && refreshFraction < 1)) {
    configError(`cache.refreshFraction: write a fraction from 0 up to (not including) 1, e.g. 0.5 (got ${JSON.stringify(refreshFraction)})`);
  }
  if (typeof minRemainingMs !== 'number' || !(minRemainingMs >= 0) || !Number.isFinite(minRemainingMs)) {
    configError(`cache.minRemaining: write a duration, e.g. "1m" (got ${JSON.stringify(minRemainingMs)})`);
  }
  const now = options.now ?? Date.now;
  const onResult = options.onResult;
  // Bounded by count and by bytes: signed URLs differ in length by signer (300 to 1,200 characters).
  const cache = new LRUCache<string, Entry>({ max: maxEntries, maxSize: maxBytes, sizeCalculation: (entry, key) => urlEntryBytes(key, entry.signed.url) });
  const inFlight = new Map<string, Promise<SignedUrl>>();
  const keyOf = signer.cacheKey
    ? signer.cacheKey.bind(signer)
    : signer.objectKey
      ? signer.objectKey.bind(signer)
      : (r: SignRequest) => `${r.repository}\u0000${r.digest}`;

  function remember(key: string, signed: SignedUrl, signedAt: number): void {
    if (typeof signed?.url !== 'string' || !Number.isFinite(signed.expiresAt)) return;
    const lifetime = signed.expiresAt - signedAt;
    const staleAt = signed.expiresAt - Math.max(lifetime * refreshFraction, minRemainingMs);
    // A URL that is already inside its refresh window (too short an expiry) is used once, not kept.
    if (staleAt > signedAt) cache.set(key, { signed, staleAt });
  }

  function signAndRemember(key: string, request: SignRequest): SignedUrl | Promise<SignedUrl> {
    const signedAt = now();
    const result = signer.sign(request);
    if (!isPromiseLike(result)) {
      remember(key, result, signedAt);
      return result;
    }
    // Promise.resolve: a custom signer's thenable becomes a real promise that waiters can share.
    const pending = Promise.resolve(result).then(
      (signed) => {
        inFlight.delete(key);
        remember(key, signed, signedAt);
        return signed;
      },
      (err: unknown) => {
        inFlight.delete(key);
        throw err;
      },
    );
    inFlight.set(key, pending);
    return pending;
  }

  return {
    name: signer.name,
    objectKey: signer.objectKey?.bind(signer),
    cacheKey: signer.cacheKey?.bind(signer),
    sign(request: SignRequest): SignedUrl | Promise<SignedUrl> {
      const key = keyOf(request);
      const entry = cache.get(key);
      if (entry && now() < entry.staleAt) {
        onResult?.('hit', signer.name);
        return entry.signed;
      }
      const pending = inFlight.get(key);
      if (pending) {
        onResult?.('hit', signer.name);
        return pending;
      }
      onResult?.(entry ? 'refresh' : 'miss', signer.name);
      return signAndRemember(key, request);
    },
    ...(signer.ready ? { ready: () => signer.ready!() } : {}),
    async close(): Promise<void> {
      cache.clear();
      await signer.close?.();
    },
  };
}
