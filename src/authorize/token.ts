import type { JsonWebKey, KeyObject } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { RegistryRedirectError, sendOciError } from '../errors.js';
import { errorForLog } from '../log.js';
import type { Logger, TokenAlgorithm, TokenAuthOptions } from '../types.js';
import type { DecisionCache } from './cache.js';
import { decisionKey } from './cache.js';
import { TOKEN_ALGORITHMS, algorithmsForKey, createTokenKeyring } from './token-keys.js';
import type { KeyLookup, TokenHeader } from './token-keys.js';
import { parseRegistryToken, secondsToMs } from './token-parse.js';
import type { ParsedToken } from './token-parse.js';
import type { Authorizer } from './types.js';
import { answerProbeFailure } from './upstream.js';
import type { UpstreamProbe, UpstreamVerdict } from './upstream.js';

/** node:crypto, loaded on first use: importing it costs as much as the rest of the package. */
const crypto = () => process.getBuiltinModule('node:crypto');

/** distribution's leeway for `exp`/`nbf`. */
export const DEFAULT_CLOCK_SKEW_MS = 60_000;
/**
 * Longer tokens are not parsed here but handed to the upstream (distribution has no limit of its
 * own; Node's server caps all headers at 16 KiB by default, an embedding server may allow more).
 */
const MAX_TOKEN_LENGTH = 65_536;
/** True for characters that would need escaping inside a quoted challenge parameter, or break the header. */
function unquotable(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x7f || c === 0x22 || c === 0x5c) return true;
  }
  return false;
}

/**
 * Why a token was not accepted, using the `error` values of RFC 6750 that distribution sends:
 * - `missing`: no `Authorization: Bearer <token>` (challenge without `error`);
 * - `invalid_token`: malformed, bad signature, untrusted key, wrong `iss`/`aud`, expired, not yet valid;
 * - `insufficient_scope`: a valid token without `pull` on this repository;
 * - `unavailable`: the key could not be fetched (JWKS down): the upstream decides instead;
 * - `unusual`: properly signed and not refused for a reason every registry shares, but written in a
 *   way registries read differently (`aud` as a list, a float `exp`, no `kid`/`x5c`, a `jwk` header,
 *   a claim spelled twice, a very long token): the upstream decides instead, never a redirect.
 */
export type TokenRejection = 'missing' | 'invalid_token' | 'insufficient_scope' | 'unavailable' | 'unusual';

export type TokenCheck = { readonly ok: true } | { readonly ok: false; readonly error: TokenRejection; readonly reason: string };

/** Verifies registry bearer tokens locally and builds the challenge the upstream would send. */
export interface TokenVerifier {
  /** Checks `Authorization` for a valid token granting `pull` on `repository`. */
  check(authorization: string | undefined, repository: string): TokenCheck | Promise<TokenCheck>;
  /** `WWW-Authenticate` value for `repository`, as distribution writes it. */
  challenge(repository: string, error?: TokenRejection): string;
}

const ACCEPTED: TokenCheck = { ok: true };

function reject(error: TokenRejection, reason: string): TokenCheck {
  return { ok: false, error, reason };
}

function requireText(value: unknown, key: string, example: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: required; write e.g. ${JSON.stringify(example)}`);
  }
  if (unquotable(value)) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: must not contain quotes, backslashes or control characters (it is quoted in the WWW-Authenticate challenge)`);
  }
  return value;
}

function resolveAlgorithms(value: unknown, key: string): readonly TokenAlgorithm[] {
  if (value === undefined) return ['RS256'];
  if (!Array.isArray(value) || value.length === 0) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: write a non-empty list, e.g. [RS256] or [ES256]`);
  }
  for (const alg of value) {
    if (!TOKEN_ALGORITHMS.includes(alg as TokenAlgorithm)) {
      const why = typeof alg === 'string' && /^(none|HS\d+)$/i.test(alg) ? ' (unsigned and shared-secret tokens are never accepted)' : '';
      throw new RegistryRedirectError('CONFIG_INVALID', `${key}: ${JSON.stringify(alg)} is not accepted${why}; write any of ${TOKEN_ALGORITHMS.join(', ')}`);
    }
  }
  return value as TokenAlgorithm[];
}

const KNOWN_OPTIONS = new Set(['issuer', 'service', 'realm', 'publicKeys', 'rootCertBundle', 'jwksUrl', 'jwksCacheMaxAge', 'algorithms', 'clockSkew']);

/**
 * True when the `access` claim grants `pull` (or `*`) on `repository`, as distribution reads it:
 * entries are matched on `type` and `name` only (2.8 ignores `class`), actions are unioned.
 */
export function grantsPull(access: unknown, repository: string): boolean {
  if (!Array.isArray(access)) return false;
  for (const entry of access) {
    if (entry === null || typeof entry !== 'object') continue;
    const { type, name, actions } = entry as { type?: unknown; name?: unknown; actions?: unknown };
    if (type !== 'repository' || name !== repository) continue;
    if (Array.isArray(actions) && (actions.includes('pull') || actions.includes('*'))) return true;
  }
  return false;
}

const HASH_OF: Record<string, string> = { '256': 'sha256', '384': 'sha384', '512': 'sha512' };
/** IEEE P1363 signature length (r || s) per EC algorithm. */
const EC_SIGNATURE_BYTES: Record<string, number> = { ES256: 64, ES384: 96, ES512: 132 };

/** Verifies a JWS signature with node:crypto, by `alg` only (the caller checked `alg` fits `key`). */
function signatureValid(token: ParsedToken, key: KeyObject, alg: TokenAlgorithm): boolean {
  const hash = HASH_OF[alg.slice(2)];
  if (hash === undefined) return false;
  const data = Buffer.from(token.signingInput);
  try {
    if (alg.startsWith('RS')) return crypto().verify(hash, data, key, token.signature);
    if (alg.startsWith('PS')) {
      return crypto().verify(hash, data, { key, padding: crypto().constants.RSA_PKCS1_PSS_PADDING, saltLength: crypto().constants.RSA_PSS_SALTLEN_DIGEST }, token.signature);
    }
    if (token.signature.length !== EC_SIGNATURE_BYTES[alg]) return false;
    return crypto().verify(hash, data, { key, dsaEncoding: 'ieee-p1363' }, token.signature);
  } catch {
    return false;
  }
}

/**
 * Creates a verifier for Docker/OCI registry bearer tokens, checking what distribution's
 * `auth: token` checks: signature by a trusted key (pinned algorithms), `iss`, `aud`, `exp` (required)
 * and `nbf` with a small clock skew, and an `access` entry granting `pull` on the repository.
 * Every option is validated here; `path` names the option in error messages.
 */
export function createTokenVerifier(options: TokenAuthOptions, path = 'tokenAuth'): TokenVerifier {
  if (options === null || typeof options !== 'object') {
    throw new RegistryRedirectError('CONFIG_INVALID', `${path}: write an object { issuer, service, realm, publicKeys | rootCertBundle | jwksUrl }`);
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw new RegistryRedirectError('CONFIG_INVALID', `${path}.${key}: unknown option; known: ${[...KNOWN_OPTIONS].join(', ')}`);
    }
  }
  const issuer = requireText(options.issuer, `${path}.issuer`, 'my-issuer');
  const service = requireText(options.service, `${path}.service`, 'my-registry');
  const realm = requireText(options.realm, `${path}.realm`, 'https://auth.example.com/token');
  try {
    const u = new URL(realm);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error('not http(s)');
  } catch {
    throw new RegistryRedirectError('CONFIG_INVALID', `${path}.realm: ${JSON.stringify(realm)} is not an http(s) URL; write the token server URL, e.g. "https://auth.example.com/token"`);
  }
  const algorithms = resolveAlgorithms(options.algorithms, `${path}.algorithms`);
  const skew = options.clockSkew ?? DEFAULT_CLOCK_SKEW_MS;
  if (typeof skew !== 'number' || !Number.isFinite(skew) || skew < 0 || skew > 600_000) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${path}.clockSkew: write milliseconds between 0 and 600000, e.g. 60000`);
  }
  const keyring = createTokenKeyring({
    publicKeys: options.publicKeys,
    rootCertBundle: options.rootCertBundle,
    jwksUrl: options.jwksUrl,
    jwksCacheMaxAge: options.jwksCacheMaxAge,
    algorithms,
    path,
  });
  const challengePrefix = `Bearer realm="${realm}",service="${service}",scope="repository:`;

  /**
   * The claim checks every registry shares (distribution's order: iss, aud, exp, nbf). A failure
   * here is `invalid_token` for any registry, whatever else is unusual about the token.
   */
  function claimProblem(token: ParsedToken, now: number): string | undefined {
    if (token.issuer !== issuer) return 'jwt issuer invalid. expected: ' + issuer;
    const audiences = typeof token.audience === 'string' ? [token.audience] : token.audience;
    if (!audiences.includes(service)) return 'jwt audience invalid. expected: ' + service;
    if (now > secondsToMs(token.expiresAt) + skew) return token.expiresAt === 0n ? 'token has no exp claim' : 'jwt expired';
    if (now < secondsToMs(token.notBefore) - skew) return 'jwt not active';
    if (token.signature.length === 0) return 'token has no signature';
    return undefined;
  }

  /** After the signature checked out: unusual -> the upstream decides; else the access claim. */
  function decide(token: ParsedToken, repository: string, unusual?: string): TokenCheck {
    const quirk = unusual ?? token.quirks[0];
    if (quirk !== undefined) return reject('unusual', quirk);
    if (!grantsPull(token.access, repository)) return reject('insufficient_scope', 'token grants no pull on this repository');
    return ACCEPTED;
  }

  function verifyWith(token: ParsedToken, key: KeyObject, alg: TokenAlgorithm, repository: string, unusual?: string): TokenCheck {
    if (!algorithmsForKey(key).includes(alg)) return reject('invalid_token', `${alg} cannot be verified with this key`);
    if (!signatureValid(token, key, alg)) return reject('invalid_token', 'invalid signature');
    return decide(token, repository, unusual);
  }

  function finish(lookup: KeyLookup, token: ParsedToken, alg: TokenAlgorithm, repository: string, unpinned: string | undefined): TokenCheck {
    if ('invalid' in lookup) return reject('invalid_token', lookup.invalid);
    if ('unavailable' in lookup) return reject('unavailable', lookup.unavailable);
    // distribution 2.8 refuses a token that names no key (no x5c, jwk or kid); other registries try
    // their keys. A token one of ours signed is therefore left to the upstream.
    const unusual = unpinned ?? (token.x5c === undefined && token.kid === undefined ? 'token names no key (no kid, no x5c)' : undefined);
    if ('key' in lookup) return verifyWith(token, lookup.key, alg, repository, unusual);
    for (const key of lookup.candidates) {
      if (!algorithmsForKey(key).includes(alg)) continue;
      if (signatureValid(token, key, alg)) return decide(token, repository, unusual);
    }
    return reject('invalid_token', 'no configured key verifies this token');
  }

  /**
   * A `jwk` header without `x5c`: distribution 2.8 takes the key from it and trusts it by key ID or
   * by a chain inside the JWK. Only a token that key really signed is left to the upstream.
   */
  function fromJwkHeader(token: ParsedToken, alg: TokenAlgorithm): TokenCheck {
    let key: KeyObject;
    try {
      key = crypto().createPublicKey({ key: token.jwk as JsonWebKey, format: 'jwk' });
    } catch {
      return reject('invalid_token', 'jwk header is not a usable public key');
    }
    if (key.type !== 'public' || !algorithmsForKey(key).includes(alg) || !signatureValid(token, key, alg)) return reject('invalid_token', 'invalid signature');
    return reject('unusual', 'jwk header names the key');
  }

  function evaluate(token: ParsedToken, repository: string): TokenCheck | Promise<TokenCheck> {
    // `none` and HS* are never verified at all. Another asymmetric algorithm than the pinned ones
    // is verified only to tell a token our key really signed (the upstream may accept it, as
    // distribution 2.8 does RS384 and ES384) from a forgery: it never leads to a redirect.
    if (!TOKEN_ALGORITHMS.includes(token.alg as TokenAlgorithm)) return reject('invalid_token', `algorithm ${token.alg.slice(0, 16)} is not accepted`);
    const alg = token.alg as TokenAlgorithm;
    const unpinned = algorithms.includes(alg) ? undefined : `algorithm ${alg} is not in algorithms`;
    const problem = claimProblem(token, Date.now());
    if (problem !== undefined) return reject('invalid_token', problem);
    if (token.x5c === undefined && token.jwk !== undefined) return fromJwkHeader(token, alg);
    const header: TokenHeader = { alg, ...(token.x5c !== undefined ? { x5c: token.x5c } : token.kid !== undefined ? { kid: token.kid } : {}) };
    const lookup = keyring.lookup(header);
    return lookup instanceof Promise ? lookup.then((l) => finish(l, token, alg, repository, unpinned)) : finish(lookup, token, alg, repository, unpinned);
  }

  return {
    check(authorization, repository) {
      if (authorization === undefined) return reject('missing', 'no Authorization header');
      // distribution: exactly `<scheme> <token>` split on single spaces, scheme case-insensitive.
      const parts = authorization.split(' ');
      if (parts.length !== 2 || parts[0]!.toLowerCase() !== 'bearer') return reject('missing', 'Authorization is not a Bearer token');
      const raw = parts[1]!;
      if (raw.length > MAX_TOKEN_LENGTH) return reject('unusual', `token longer than ${MAX_TOKEN_LENGTH} characters`);
      const token = parseRegistryToken(raw);
      if (typeof token === 'string') return reject('invalid_token', token);
      return evaluate(token, repository);
    },
    challenge(repository, error) {
      const suffix = error === 'invalid_token' || error === 'insufficient_scope' ? `",error="${error}"` : '"';
      return `${challengePrefix}${repository}:pull${suffix}`;
    },
  };
}

/** Writes distribution's 401 for a blob pull: the Bearer challenge and its `UNAUTHORIZED` body. */
export function sendTokenChallenge(res: ServerResponse, verifier: TokenVerifier, repository: string, error: TokenRejection): void {
  sendOciError(res, 401, 'UNAUTHORIZED', 'authentication required', [{ Type: 'repository', Class: '', Name: repository, Action: 'pull' }], {
    'WWW-Authenticate': verifier.challenge(repository, error),
  });
}

export interface TokenAuthorizerOptions {
  verifier: TokenVerifier;
  /** HEAD probe to the upstream, sent with the caller's token: confirms existence in the repository. */
  probe: UpstreamProbe;
  /** Existence cache keyed by (repository, digest); undefined when the cache is disabled. */
  cache: DecisionCache<UpstreamVerdict> | undefined;
  timeoutMs: number;
  logger: Logger;
}

/**
 * Token mode: the bearer token is verified locally on every request (no token, a bad one or one
 * without `pull` here -> the upstream's own 401 challenge, answered locally). Existence of the blob
 * in this repository is then confirmed by the upstream's HEAD, cached per (repository, digest).
 * A key source that cannot be reached (JWKS down) hands the request to the upstream unchanged.
 */
export function createTokenAuthorizer(opts: TokenAuthorizerOptions): Authorizer {
  const { verifier, probe, cache, logger } = opts;
  return async (req, res, target, path) => {
    const check = await verifier.check(req.headers.authorization, target.repository);
    if (!check.ok) {
      if (check.error === 'unavailable') {
        logger.warn({ repository: target.repository, reason: check.reason }, 'token keys unavailable; the upstream decides');
        return 'deny';
      }
      if (check.error === 'unusual') {
        logger.debug({ repository: target.repository, digest: target.digest, reason: check.reason }, 'token unusual; the upstream decides');
        return 'deny';
      }
      logger.debug({ repository: target.repository, digest: target.digest, error: check.error, reason: check.reason }, 'token rejected');
      sendTokenChallenge(res, verifier, target.repository, check.error);
      return 'answered';
    }
    try {
      const verdict = cache ? await cache.get(decisionKey(target), () => probe(req, target, path)) : await probe(req, target, path);
      return verdict.allowed ? { size: verdict.size, digest: verdict.digest } : 'deny';
    } catch (err) {
      logger.warn({ error: errorForLog(err), repository: target.repository, digest: target.digest }, 'existence HEAD failed');
      answerProbeFailure(res, err, opts.timeoutMs);
      return 'answered';
    }
  };
}
