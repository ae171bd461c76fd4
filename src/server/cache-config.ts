import { parseDuration } from '../duration.js';
import { CACHE_DEFAULTS, cachedSigner, type CacheResult } from '../signers/cache.js';
import { configError, formatDuration } from '../signers/common.js';
import type { Signer } from '../types.js';
import type { z as Z } from 'zod';
import { zod } from '../lazy.js';

// The same zod instance as the signers' and rollout schemas (lazy.ts): a static import would load
// zod's ESM build next to the CommonJS one that `require` gets, twice the start-up cost.
const { z } = zod();

/** The `cache:` block of the config file. */
export const cacheBlock = z
  .object({
    enabled: z.boolean({ error: 'write true (default) or false' }).optional(),
    maxEntries: z.number({ error: 'write a whole number of URLs, e.g. 10000' }).int({ error: 'write a whole number of URLs, e.g. 10000' }).positive({ error: 'write at least 1' }).optional(),
    maxBytes: z.number({ error: 'write a number of bytes, e.g. 16777216 (16 MiB)' }).int({ error: 'write a whole number of bytes, e.g. 16777216' }).min(4096, { error: 'write at least 4096 bytes, e.g. 16777216 (16 MiB)' }).optional(),
    refreshFraction: z.number({ error: 'write a fraction from 0 up to (not including) 1, e.g. 0.5' }).min(0, { error: 'write a fraction from 0 up to (not including) 1, e.g. 0.5' }).lt(1, { error: 'write a fraction below 1 (1 would re-sign every request; set enabled: false instead)' }).optional(),
    minRemaining: z.union([z.string(), z.number()], { error: 'write a duration, e.g. "1m"' }).optional(),
  })
  .strict();

/** The validated cache settings, defaults filled in. */
export interface CacheConfig {
  enabled: boolean;
  maxEntries: number;
  maxBytes: number;
  refreshFraction: number;
  minRemainingMs: number;
}

/** Fills in defaults and checks the block against the signed URLs' lifetime. */
export function buildCacheConfig(block: Z.output<typeof cacheBlock> | undefined, expiryMs: number): CacheConfig {
  const b = block ?? {};
  const minRemainingMs = b.minRemaining === undefined ? CACHE_DEFAULTS.minRemainingMs : parseDuration(b.minRemaining, 'cache.minRemaining');
  const config: CacheConfig = {
    enabled: b.enabled ?? true,
    maxEntries: b.maxEntries ?? CACHE_DEFAULTS.maxEntries,
    maxBytes: b.maxBytes ?? CACHE_DEFAULTS.maxBytes,
    refreshFraction: b.refreshFraction ?? CACHE_DEFAULTS.refreshFraction,
    minRemainingMs,
  };
  if (config.enabled && minRemainingMs >= expiryMs) {
    configError(
      `cache.minRemaining: ${formatDuration(minRemainingMs)} is not shorter than expiry (${formatDuration(expiryMs)}), so no URL could ever be reused; write a shorter cache.minRemaining, a longer expiry, or cache.enabled: false`,
    );
  }
  return config;
}

/** The signer the server uses: wrapped in the signed-URL cache unless `cache.enabled: false`. */
export function withCache(signer: Signer, config: CacheConfig, onResult?: (result: CacheResult, signer: string) => void): Signer {
  if (!config.enabled) return signer;
  return cachedSigner(signer, {
    maxEntries: config.maxEntries,
    maxBytes: config.maxBytes,
    refreshFraction: config.refreshFraction,
    minRemainingMs: config.minRemainingMs,
    ...(onResult ? { onResult } : {}),
  });
}

/**
 * Refuses caches whose byte bounds could fill this process's V8 heap: `serve` runs with a 1 GiB
 * old space on large hosts (see semi-space.ts), and a container's memory may give less, so caches
 * sized for a bigger heap would end in an out-of-memory crash under load instead of an error at
 * start. Half the limit is left to everything else (connections, requests in flight, code).
 */
export function assertCachesFitHeap(
  config: { authorize: { cache: { ttl: number; maxBytes: number } }; cache: CacheConfig; signers: Readonly<Record<string, unknown>> },
  heapLimitBytes: number = process.getBuiltinModule('node:v8').getHeapStatistics().heap_size_limit,
): void {
  const MiB = 2 ** 20;
  const decisions = config.authorize.cache.ttl > 0 ? config.authorize.cache.maxBytes : 0;
  const signerCount = 1 + Object.keys(config.signers).length;
  const urls = config.cache.enabled ? config.cache.maxBytes * signerCount : 0;
  if (decisions + urls <= heapLimitBytes / 2) return;
  const mib = (n: number) => `${Math.round(n / MiB)} MiB`;
  configError(
    `authorize.cache.maxBytes (${mib(decisions)}) and cache.maxBytes (${mib(config.cache.maxBytes)} for each of ${signerCount} signer${signerCount === 1 ? '' : 's'}) add up to ${mib(decisions + urls)}, more than half of this process's V8 heap limit (${mib(heapLimitBytes)}): full caches could exhaust the heap. Lower them, or raise the limit with NODE_OPTIONS=--max-old-space-size=<MiB>`,
  );
}
