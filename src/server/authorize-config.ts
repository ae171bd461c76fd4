import { readFileSync } from 'node:fs';
import { DEFAULT_DECISION_MAX_BYTES, DEFAULT_DECISION_MAX_ENTRIES, DEFAULT_DECISION_TTL_MS, resolveDecisionCacheOptions } from '../authorize/cache.js';
import { createTokenVerifier } from '../authorize/token.js';
import { TOKEN_ALGORITHMS } from '../authorize/token-keys.js';
import { parseDuration } from '../duration.js';
import { RegistryRedirectError } from '../errors.js';
import type { DecisionCacheOptions, TokenAlgorithm, TokenAuthOptions } from '../types.js';
import { parseConfigPart } from './validate.js';
import { zod } from '../lazy.js';

// The same zod instance as the signers' and rollout schemas (lazy.ts): a static import would load
// zod's ESM build next to the CommonJS one that `require` gets, twice the start-up cost.
const { z } = zod();

/** The validated `authorize:` block of the server config. */
export interface AuthorizeConfig {
  /** `upstream` (default): the upstream's HEAD decides. `token`: bearer tokens are verified locally. */
  mode: 'upstream' | 'token';
  /** Token mode settings, with key files already read. Set exactly when `mode` is `token`. */
  tokenAuth?: TokenAuthOptions;
  /** Decision cache settings in milliseconds (`ttl: 0` disables). */
  cache: Required<DecisionCacheOptions>;
  /** Take a 3xx on the authorizing HEAD as a grant. Default false (see `acceptUpstreamRedirect`). */
  acceptUpstreamRedirect: boolean;
}

const duration = (example: string) => z.union([z.string(), z.number()], { error: `write a duration, e.g. "${example}"` });
const path = (what: string, example: string) =>
  z.string({ error: `write the path of ${what}, e.g. "${example}"` }).min(1, { error: `must not be empty; write the path of ${what}, e.g. "${example}"` });

const ALGORITHMS_HINT = `write a list of ${TOKEN_ALGORITHMS.join(', ')} (never none or HS*), e.g. [RS256]`;

const tokenBlock = z
  .object({
    issuer: z.string({ error: 'write the expected `iss` of tokens, e.g. "my-issuer"' }),
    service: z.string({ error: 'write the expected `aud` of tokens (the registry service name), e.g. "my-registry"' }),
    realm: z.string({ error: 'write the token server URL for the challenge, e.g. "https://auth.example.com/token"' }),
    publicKeys: z.array(path('a PEM public key or certificate', '/etc/registry-redirect/token.pem'), { error: 'write a list of PEM files, e.g. [/etc/registry-redirect/token.pem]' }).optional(),
    rootCertBundle: path("distribution's rootcertbundle (PEM certificates)", '/etc/registry/token-ca.pem').optional(),
    jwksUrl: z.string({ error: 'write the JWKS URL, e.g. "https://auth.example.com/.well-known/jwks.json"' }).optional(),
    jwksCacheMaxAge: duration('10m').optional(),
    algorithms: z
      .array(z.enum(TOKEN_ALGORITHMS as [TokenAlgorithm, ...TokenAlgorithm[]], { error: ALGORITHMS_HINT }), { error: ALGORITHMS_HINT })
      .optional(),
    clockSkew: duration('60s').optional(),
  })
  .strict();

const cacheBlock = z
  .object({
    ttl: duration('30s').optional(),
    maxEntries: z.number({ error: 'write a positive integer, e.g. 10000' }).optional(),
    maxBytes: z.number({ error: 'write a number of bytes, e.g. 16777216 (16 MiB)' }).optional(),
  })
  .strict();

const authorizeBlock = z
  .object({
    mode: z.enum(['upstream', 'token'], { error: 'write "upstream" (default: the upstream registry answers a HEAD per decision) or "token" (verify bearer tokens locally)' }).optional(),
    token: tokenBlock.optional(),
    cache: cacheBlock.optional(),
    acceptUpstreamRedirect: z
      .boolean({ error: 'write true (a 3xx on the authorizing HEAD counts as a grant: only for an upstream that redirects blob GETs itself, never behind an SSO or http->https front) or false (default: only a 2xx is a grant)' })
      .optional(),
  })
  .strict();

const ZERO = /^0+(?:\.0+)?(?:ms|s|m|h|d)?$/;

/** A duration that may also be 0 (`0`, `"0"`, `"0s"`): 0 disables the cache. */
function durationOrZero(value: string | number, key: string): number {
  if (value === 0 || (typeof value === 'string' && ZERO.test(value.trim()))) return 0;
  return parseDuration(value, key);
}

function readPem(file: string, key: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (cause) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: cannot read ${file}: ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}; write the path of a readable PEM file`, { cause });
  }
}

/**
 * Validates the `authorize:` block, reads key files, and builds the token verifier once (then
 * discards it) so a bad key, algorithm or URL fails at startup, never on the first pull.
 */
export function authorizeFromConfig(raw: unknown, prefix = 'authorize'): AuthorizeConfig {
  const block = parseConfigPart(authorizeBlock, raw ?? {}, prefix);
  const mode = block.mode ?? 'upstream';
  const cache = {
    ttl: block.cache?.ttl === undefined ? DEFAULT_DECISION_TTL_MS : durationOrZero(block.cache.ttl, `${prefix}.cache.ttl`),
    maxEntries: block.cache?.maxEntries ?? DEFAULT_DECISION_MAX_ENTRIES,
    maxBytes: block.cache?.maxBytes ?? DEFAULT_DECISION_MAX_BYTES,
  };
  resolveDecisionCacheOptions(cache, `${prefix}.cache`);
  const acceptUpstreamRedirect = block.acceptUpstreamRedirect ?? false;
  if (mode === 'upstream') {
    if (block.token !== undefined) {
      throw new RegistryRedirectError('CONFIG_INVALID', `${prefix}.token: only used with mode: token; add "mode: token" to ${prefix} or remove the token block`);
    }
    return { mode, cache, acceptUpstreamRedirect };
  }
  const t = block.token;
  if (t === undefined) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${prefix}.token: missing; mode: token needs e.g. "token: { issuer: my-issuer, service: my-registry, realm: https://auth.example.com/token, publicKeys: [/etc/registry-redirect/token.pem], algorithms: [RS256] }"`);
  }
  const where = `${prefix}.token`;
  const tokenAuth: TokenAuthOptions = {
    issuer: t.issuer,
    service: t.service,
    realm: t.realm,
    ...(t.publicKeys && { publicKeys: t.publicKeys.map((file, i) => readPem(file, `${where}.publicKeys[${i}]`)) }),
    ...(t.rootCertBundle !== undefined && { rootCertBundle: readPem(t.rootCertBundle, `${where}.rootCertBundle`) }),
    ...(t.jwksUrl !== undefined && { jwksUrl: t.jwksUrl }),
    ...(t.jwksCacheMaxAge !== undefined && { jwksCacheMaxAge: parseDuration(t.jwksCacheMaxAge, `${where}.jwksCacheMaxAge`) }),
    ...(t.algorithms && { algorithms: t.algorithms }),
    ...(t.clockSkew !== undefined && { clockSkew: durationOrZero(t.clockSkew, `${where}.clockSkew`) }),
  };
  createTokenVerifier(tokenAuth, where);
  return { mode, tokenAuth, cache, acceptUpstreamRedirect };
}
