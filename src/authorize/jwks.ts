import type { JsonWebKey, KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { httpRequest } from '../health.js';
import type { KeyLookup } from './token-keys.js';

/** node:crypto, loaded on first use: importing it costs as much as the rest of the package. */
const crypto = () => process.getBuiltinModule('node:crypto');

/** Fetches a minute, per budget. */
const FETCHES_PER_MINUTE = 10;
/** How long a `kid` the JWKS did not have is answered from memory. */
const UNKNOWN_KID_MEMORY_MS = 30_000;
const UNKNOWN_KIDS_REMEMBERED = 1_000;
/** After a failed refresh of known keys, the next one waits at least this long. */
const RETRY_AFTER_FAILURE_MS = 5_000;
const FETCH_TIMEOUT_MS = 5_000;
const MAX_JWKS_BYTES = 1 << 20;

/** A token bucket: `perMinute` fetches, refilled continuously. */
class FetchBudget {
  private readonly perMinute: number;
  private tokens: number;
  private at: number;
  constructor(perMinute: number) {
    this.perMinute = perMinute;
    this.tokens = perMinute;
    this.at = Date.now();
  }
  take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.perMinute, this.tokens + ((now - this.at) * this.perMinute) / 60_000);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

interface JwksKey {
  readonly key: KeyObject;
  readonly alg: string | undefined;
}

interface KeySet {
  readonly byKid: ReadonlyMap<string, JwksKey>;
  readonly all: readonly JwksKey[];
  readonly fetchedAt: number;
}

/** Keys of a JWKS endpoint, by `kid`. */
export interface JwksSource {
  lookup(kid: string | undefined, alg: string): KeyLookup | Promise<KeyLookup>;
}

function parseKeySet(body: unknown): KeySet {
  const keys = (body as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) throw new Error('JWKS has no "keys" list');
  const byKid = new Map<string, JwksKey>();
  const all: JwksKey[] = [];
  for (const jwk of keys as Array<Record<string, unknown>>) {
    if (jwk === null || typeof jwk !== 'object' || (jwk.use !== undefined && jwk.use !== 'sig')) continue;
    let key: KeyObject;
    try {
      key = crypto().createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
    } catch {
      continue; // a key this runtime cannot read is skipped, like an unknown key type
    }
    const entry = { key, alg: typeof jwk.alg === 'string' ? jwk.alg : undefined };
    all.push(entry);
    if (typeof jwk.kid === 'string') byKid.set(jwk.kid, entry);
  }
  return { byKid, all, fetchedAt: Date.now() };
}

/**
 * node:http(s) rather than fetch (see httpRequest): fetch refuses the Fetch standard's "bad
 * ports" (6000, 6665-6669, 10080, ...), where a token server may well listen. Redirects are not
 * followed: the key source is the configured URL itself.
 */
async function fetchKeySet(url: string): Promise<KeySet> {
  const res = await httpRequest(url, { headers: { accept: 'application/json' }, timeoutMs: FETCH_TIMEOUT_MS, bodyLimit: MAX_JWKS_BYTES + 1 });
  if (res.status < 200 || res.status >= 300) throw new Error(`JWKS endpoint answered ${res.status}`);
  if (res.body.length > MAX_JWKS_BYTES) throw new Error('JWKS is larger than 1 MiB');
  return parseKeySet(JSON.parse(res.body.toString('utf8')));
}

/**
 * A JWKS client that anonymous callers cannot turn off. Any caller can send a token with a made-up
 * `kid`, and every unknown `kid` needs a fetch; with one budget for everything, a dozen such
 * requests used it up and, once the real key's entry aged out, legitimate tokens could not be
 * verified any more (the upstream then served every pull, without redirects). So:
 *
 * - the whole key set is kept and replaced on every successful fetch (a removed key is gone then);
 * - known keys are refreshed in the background once half of `maxAge` has passed, on use, from a
 *   budget of their own that unknown `kid`s cannot touch; only a key set older than `maxAge` is
 *   refused (and refetched, from that budget, while the request waits);
 * - unknown `kid`s spend a separate budget, and a `kid` the JWKS did not have is remembered for
 *   30 s (1,000 of them at most), so repeating one costs nothing.
 *
 * A fetch that fails or a spent budget is `unavailable` (the upstream decides), never a pass.
 */
export function createJwksSource(url: string, maxAge: number): JwksSource {
  let set: KeySet | undefined;
  let inflight: Promise<KeySet> | undefined;
  let retryKnownAt = 0;
  const unknownBudget = new FetchBudget(FETCHES_PER_MINUTE);
  const knownBudget = new FetchBudget(FETCHES_PER_MINUTE);
  const unknownKids = new LRUCache<string, true>({ max: UNKNOWN_KIDS_REMEMBERED, ttl: Math.min(UNKNOWN_KID_MEMORY_MS, maxAge) });

  /** One fetch at a time; callers arriving meanwhile share it without spending a budget. */
  const refresh = (): Promise<KeySet> => {
    inflight ??= fetchKeySet(url).then(
      (fresh) => {
        set = fresh;
        inflight = undefined;
        return fresh;
      },
      (err: unknown) => {
        inflight = undefined;
        throw err;
      },
    );
    return inflight;
  };

  const refreshKnownInBackground = (): void => {
    if (inflight !== undefined || Date.now() < retryKnownAt || !knownBudget.take()) return;
    refresh().catch(() => {
      retryKnownAt = Date.now() + RETRY_AFTER_FAILURE_MS;
    });
  };

  const pick = (keys: KeySet, kid: string | undefined, alg: string): KeyLookup | undefined => {
    let found: JwksKey | undefined;
    if (kid === undefined) {
      if (keys.all.length !== 1) return { invalid: 'no kid, and the JWKS holds more than one key' };
      found = keys.all[0];
    } else {
      found = keys.byKid.get(kid);
    }
    if (found === undefined) return undefined;
    if (found.alg !== undefined && found.alg !== alg) return { invalid: `JWKS key is for ${found.alg}, token uses ${alg}` };
    return { key: found.key };
  };

  const unavailable = (err: unknown): KeyLookup => ({ unavailable: `JWKS unavailable: ${err instanceof Error ? err.message.slice(0, 80) : 'error'}` });

  return {
    lookup(kid, alg) {
      const current = set;
      const known = current && pick(current, kid, alg);
      if (current && known) {
        const age = Date.now() - current.fetchedAt;
        if (age < maxAge) {
          if (age >= maxAge / 2) refreshKnownInBackground();
          return known;
        }
        // Older than maxAge: the key may have been withdrawn. Refetch (own budget) and wait.
        if (inflight === undefined && !knownBudget.take()) return { unavailable: 'JWKS refresh budget spent' };
        return refresh().then(
          (fresh) => pick(fresh, kid, alg) ?? { invalid: 'kid not found in the JWKS' },
          unavailable,
        );
      }
      if (kid !== undefined && unknownKids.has(kid)) return { invalid: 'kid not found in the JWKS' };
      if (inflight === undefined && !unknownBudget.take()) return { unavailable: 'JWKS fetch budget for unknown kids spent' };
      return refresh().then((fresh) => {
        const found = pick(fresh, kid, alg);
        if (found) return found;
        if (kid !== undefined) unknownKids.set(kid, true);
        return { invalid: 'kid not found in the JWKS' };
      }, unavailable);
    },
  };
}
