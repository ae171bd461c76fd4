import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { LRUCache } from 'lru-cache';
import { RegistryRedirectError } from '../errors.js';
import type { BlobTarget, DecisionCacheOptions } from '../types.js';

/** Positive decisions live this long by default (milliseconds). */
export const DEFAULT_DECISION_TTL_MS = 30_000;
/** Default bound on cached decisions (about 0.8 KiB each, see {@link decisionEntryBytes}). */
export const DEFAULT_DECISION_MAX_ENTRIES = 10_000;
/** Default bound on the bytes the cached decisions hold (as {@link decisionEntryBytes} counts them). */
export const DEFAULT_DECISION_MAX_BYTES = 16 * 2 ** 20;

/**
 * What one cached decision holds on the V8 heap, for the byte bound: a fixed part (the entry and
 * verdict objects, the cache's slots and hash table, the key's string headers), measured at about
 * 600 bytes with Node 24, plus the key and the stored digest, one byte per character (both are
 * ASCII). Measured total for a credential-keyed entry (SHA-256 hex + repository + sha256 digest):
 * about 770 bytes (heap after GC, 100,000 entries against none).
 */
export function decisionEntryBytes(key: string, digest: string | undefined): number {
  return 600 + key.length + (digest?.length ?? 0);
}
/**
 * Negative answers (404, and 401/403 when the key includes the credential) are kept at most this
 * long: enough to absorb a burst of retries, short enough that a blob pushed a moment later, or a
 * permission granted a moment later, is seen almost at once.
 */
export const NEGATIVE_DECISION_TTL_MS = 1_000;

/**
 * A bounded LRU of authorization decisions with a per-entry TTL and single-flight loading:
 * concurrent misses for one key share one load (one upstream HEAD). Failed loads (timeouts,
 * unreachable upstream) are never cached; every waiter sees the failure.
 */
export interface DecisionCache<V> {
  /** The cached value for `key`, or the result of `load()`, shared by every concurrent caller of `key`. */
  get(key: string, load: () => Promise<V>): Promise<V>;
  /**
   * The cached value for `key` if one is fresh (counted as a hit), else `undefined` and nothing
   * else happens: the hot path answers a hit without a promise, and calls `get` on a miss.
   */
  peek(key: string): V | undefined;
  /** Number of cached (possibly expired, not yet evicted) entries. */
  readonly size: number;
  /**
   * Drops every cached decision for `digest` in `repository`, or for the whole repository when
   * `digest` is omitted, whatever credential it was cached for. Loads already in flight for those
   * keys still answer their waiters but are not cached. Returns the number of entries dropped.
   */
  forget(repository: string, digest?: string): number;
  /** Counters since creation: `hits` (answered from cache), `loads` (loads started), `shared` (callers that joined a load in flight). */
  stats(): { hits: number; loads: number; shared: number };
  clear(): void;
}

/** Resolved decision-cache settings (milliseconds; `ttl: 0` disables caching and sharing). */
export interface ResolvedDecisionCacheOptions {
  ttl: number;
  maxEntries: number;
  maxBytes: number;
}

interface Entry<V> {
  value: V;
  expiresAt: number;
}

/** Validates the public `decisionCache` option and fills in defaults. Throws CONFIG_INVALID naming the key. */
export function resolveDecisionCacheOptions(options: DecisionCacheOptions | false | undefined, key = 'decisionCache'): ResolvedDecisionCacheOptions {
  if (options === false) return { ttl: 0, maxEntries: DEFAULT_DECISION_MAX_ENTRIES, maxBytes: DEFAULT_DECISION_MAX_BYTES };
  if (options === undefined) return { ttl: DEFAULT_DECISION_TTL_MS, maxEntries: DEFAULT_DECISION_MAX_ENTRIES, maxBytes: DEFAULT_DECISION_MAX_BYTES };
  if (options === null || typeof options !== 'object') {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: write an object such as { ttl: 30000, maxEntries: 10000 }, or false to disable the cache`);
  }
  for (const k of Object.keys(options)) {
    if (k !== 'ttl' && k !== 'maxEntries' && k !== 'maxBytes') {
      throw new RegistryRedirectError('CONFIG_INVALID', `${key}.${k}: unknown option; known: ttl (milliseconds, 0 disables), maxEntries, maxBytes`);
    }
  }
  const ttl = options.ttl ?? DEFAULT_DECISION_TTL_MS;
  const maxEntries = options.maxEntries ?? DEFAULT_DECISION_MAX_ENTRIES;
  const maxBytes = options.maxBytes ?? DEFAULT_DECISION_MAX_BYTES;
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 0) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}.ttl: ${JSON.stringify(ttl)} is not a duration; write milliseconds >= 0, e.g. 30000 (0 disables the cache)`);
  }
  if (typeof maxEntries !== 'number' || !Number.isSafeInteger(maxEntries) || maxEntries < 1) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}.maxEntries: ${JSON.stringify(maxEntries)} is not a positive integer; write e.g. 10000`);
  }
  if (typeof maxBytes !== 'number' || !Number.isSafeInteger(maxBytes) || maxBytes < 4096) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}.maxBytes: ${JSON.stringify(maxBytes)} is not a byte count of at least 4096; write e.g. 16777216 (16 MiB, about 20,000 decisions)`);
  }
  return { ttl, maxEntries, maxBytes };
}

/**
 * Creates a decision cache. `ttlOf(value)` says how long one answer may be reused: the full TTL
 * for a positive answer, at most {@link NEGATIVE_DECISION_TTL_MS} for a negative one, 0 for an
 * answer that must not be reused at all. Returns `undefined` when `ttl` is 0 (cache disabled: every
 * request asks the upstream itself, nothing is shared).
 */
export function createDecisionCache<V extends object>(
  options: Omit<ResolvedDecisionCacheOptions, 'maxBytes'> & { maxBytes?: number; ttlOf: (value: V, ttl: number) => number; now?: () => number },
): DecisionCache<V> | undefined {
  if (options.ttl <= 0) return undefined;
  const now = options.now ?? Date.now;
  const { ttl, ttlOf } = options;
  // Bounded twice: by count, and by the bytes the entries hold (long repository names or a long
  // credential key must not multiply the memory a count alone allows). Sized on insert only.
  const entries = new LRUCache<string, Entry<V>>({
    max: options.maxEntries,
    maxSize: options.maxBytes ?? DEFAULT_DECISION_MAX_BYTES,
    sizeCalculation: (entry, key) => {
      const digest = (entry.value as { digest?: unknown }).digest;
      return decisionEntryBytes(key, typeof digest === 'string' ? digest : undefined);
    },
  });
  const inFlight = new Map<string, Promise<V>>();
  // Loads that a `forget` overtook: what they learnt predates the change, so it is not kept.
  const overtaken = new WeakSet<Promise<V>>();
  let hits = 0;
  let loads = 0;
  let shared = 0;

  return {
    peek(key) {
      const entry = entries.get(key);
      if (entry === undefined || entry.expiresAt <= now()) return undefined;
      hits++;
      return entry.value;
    },
    get(key, load) {
      const entry = entries.get(key);
      if (entry !== undefined) {
        if (entry.expiresAt > now()) {
          hits++;
          return Promise.resolve(entry.value);
        }
        entries.delete(key);
      }
      const pending = inFlight.get(key);
      if (pending !== undefined) {
        shared++;
        return pending;
      }
      loads++;
      const started: Promise<V> = load().then(
        (value) => {
          if (inFlight.get(key) === started) inFlight.delete(key);
          const keep = Math.min(ttl, ttlOf(value, ttl));
          if (keep > 0 && !overtaken.has(started)) entries.set(key, { value, expiresAt: now() + keep });
          return value;
        },
        (err: unknown) => {
          if (inFlight.get(key) === started) inFlight.delete(key);
          throw err;
        },
      );
      inFlight.set(key, started);
      return started;
    },
    get size() {
      return entries.size;
    },
    forget(repository, digest) {
      // A scan: deletes are rare next to reads, and a credential-keyed entry cannot be found
      // by (repository, digest) any other way without an index on every insert and eviction.
      const matches = (key: string) => keyMatches(key, repository, digest);
      let dropped = 0;
      for (const key of [...entries.keys()]) {
        if (matches(key)) {
          entries.delete(key);
          dropped++;
        }
      }
      for (const [key, pending] of inFlight) {
        if (matches(key)) {
          overtaken.add(pending);
          inFlight.delete(key);
        }
      }
      return dropped;
    },
    stats: () => ({ hits, loads, shared }),
    clear() {
      entries.clear();
    },
  };
}

/**
 * SHA-256 (hex) of everything in the request that the upstream may base its authorization on:
 * `Authorization` and `Cookie`. Cache keys carry this digest, never the credential itself, so a
 * heap dump or a debug print of the cache reveals no secret.
 */
export function credentialDigest(headers: IncomingHttpHeaders): string {
  const { authorization, cookie } = headers;
  if (authorization === undefined && cookie === undefined) return (anonymous ??= sha256Hex(ANONYMOUS_TEXT));
  // One-shot hash of the same bytes as before: no Hash object per request (hot path).
  return sha256Hex(`${authorization ?? ''}\n${Array.isArray(cookie) ? cookie.join('; ') : (cookie ?? '')}`);
}

/** The last credential seen on a connection and its digest (see {@link connectionCredentialDigest}). */
interface ConnectionCredential {
  authorization: string | undefined;
  cookie: string | string[] | undefined;
  digest: string;
}
const lastCredential = new WeakMap<object, ConnectionCredential>();

/**
 * {@link credentialDigest} of a request, remembered per connection: a keep-alive client sends the
 * same `Authorization` on every request, and comparing it with the previous one costs a fraction
 * of hashing it again (~0.7 µs for a 700-byte bearer token). The digest is reused only when both
 * headers are equal to the ones it was computed from, so it is the same value either way. The cost:
 * each open connection keeps its last `Authorization`/`Cookie` text referenced until it closes
 * (about 1 KiB each, freed with the socket); the shared decision cache still holds digests only.
 */
export function connectionCredentialDigest(req: IncomingMessage): string {
  const { authorization, cookie } = req.headers;
  const connection = req.socket;
  if (connection === undefined || connection === null) return credentialDigest(req.headers);
  const last = lastCredential.get(connection);
  if (last !== undefined && last.authorization === authorization && sameCookie(last.cookie, cookie)) return last.digest;
  const digest = credentialDigest(req.headers);
  // Arrays are copied: the remembered value must not change with a later request's headers.
  lastCredential.set(connection, { authorization, cookie: Array.isArray(cookie) ? [...cookie] : cookie, digest });
  return digest;
}

function sameCookie(a: string | string[] | undefined, b: string | string[] | undefined): boolean {
  if (a === b) return true;
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
  return a.every((v, i) => v === b[i]);
}

/** SHA-256 (hex) of `text`; node:crypto is loaded on first use, not when the package is imported. */
let hashOnce: ((algorithm: string, data: string, encoding: 'hex') => string) | undefined;
const sha256Hex = (text: string): string => (hashOnce ??= process.getBuiltinModule('node:crypto').hash)('sha256', text, 'hex');

/** {@link credentialDigest} of a request without `Authorization` and `Cookie`, computed once. */
let anonymous: string | undefined;
const ANONYMOUS_TEXT = '\n';

/** Whether a {@link decisionKey} is for `repository` (and `digest`, when given). */
function keyMatches(key: string, repository: string, digest: string | undefined): boolean {
  const last = key.lastIndexOf(' ');
  if (last < 0) return false;
  if (digest !== undefined && (key.length - last - 1 !== digest.length || !key.endsWith(digest))) return false;
  const start = key.lastIndexOf(' ', last - 1) + 1;
  return last - start === repository.length && key.startsWith(repository, start);
}

/**
 * Cache key of a blob in one repository, optionally for one credential. Repository names and
 * digests are validated (no spaces), so the space separator cannot be forged by a crafted name.
 */
export function decisionKey(target: BlobTarget, credential?: string): string {
  return credential === undefined ? `${target.repository} ${target.digest}` : `${credential} ${target.repository} ${target.digest}`;
}
