import type { KeyObject } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type jwt from 'jsonwebtoken';
import { RegistryRedirectError, sendOciError } from '../errors.js';
import { errorForLog } from '../log.js';
import type { Logger, TokenAlgorithm, TokenAuthOptions } from '../types.js';
import type { DecisionCache } from './cache.js';
import { decisionKey } from './cache.js';
import { TOKEN_ALGORITHMS, algorithmsForKey, createTokenKeyring } from './token-keys.js';
import type { KeyLookup, TokenHeader } from './token-keys.js';
import type { Authorizer } from './types.js';
import { answerProbeFailure } from './upstream.js';
import type { UpstreamProbe, UpstreamVerdict } from './upstream.js';
import { requireOptional } from '../lazy.js';

/** distribution's leeway for `exp`/`nbf`. */
export const DEFAULT_CLOCK_SKEW_MS = 60_000;
/** Longer tokens are rejected before any parsing (Node caps all headers at 16 KiB anyway). */
const MAX_TOKEN_LENGTH = 8_192;
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
 * - `unavailable`: the key could not be fetched (JWKS down): the upstream decides instead.
 */
export type TokenRejection = 'missing' | 'invalid_token' | 'insufficient_scope' | 'unavailable';

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

function decodeHeader(token: string): TokenHeader | undefined {
  const dot = token.indexOf('.');
  if (dot <= 0) return undefined;
  try {
    const header: unknown = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8'));
    if (header === null || typeof header !== 'object' || typeof (header as TokenHeader).alg !== 'string') return undefined;
    return header as TokenHeader;
  } catch {
    return undefined;
  }
}

/** True when the `access` claim grants `pull` (or `*`) on `repository`, as distribution reads it. */
export function grantsPull(access: unknown, repository: string): boolean {
  if (!Array.isArray(access)) return false;
  for (const entry of access) {
    if (entry === null || typeof entry !== 'object') continue;
    const { type, name, actions, class: klass } = entry as { type?: unknown; name?: unknown; actions?: unknown; class?: unknown };
    if (type !== 'repository' || name !== repository || (klass !== undefined && klass !== '')) continue;
    if (Array.isArray(actions) && (actions.includes('pull') || actions.includes('*'))) return true;
  }
  return false;
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
  // Token mode is optional: its JWT library is an optional peer dependency, loaded here.
  const { verify } = requireOptional<typeof jwt>('jsonwebtoken', path);
  const keyring = createTokenKeyring({
    publicKeys: options.publicKeys,
    rootCertBundle: options.rootCertBundle,
    jwksUrl: options.jwksUrl,
    jwksCacheMaxAge: options.jwksCacheMaxAge,
    algorithms,
    path,
  });
  const clockTolerance = Math.floor(skew / 1_000);
  const challengePrefix = `Bearer realm="${realm}",service="${service}",scope="repository:`;

  function verifyWith(token: string, key: KeyObject, alg: TokenAlgorithm, repository: string): TokenCheck {
    if (!algorithmsForKey(key).includes(alg)) return reject('invalid_token', `${alg} cannot be verified with this key`);
    let claims: jwt.JwtPayload | string;
    try {
      claims = verify(token, key, { algorithms: [alg], issuer, audience: service, clockTolerance });
    } catch (err) {
      return reject('invalid_token', (err as Error).message);
    }
    if (typeof claims !== 'object' || typeof claims.exp !== 'number') return reject('invalid_token', 'token has no exp claim');
    if (!grantsPull((claims as { access?: unknown }).access, repository)) return reject('insufficient_scope', 'token grants no pull on this repository');
    return ACCEPTED;
  }

  function finish(lookup: KeyLookup, token: string, alg: TokenAlgorithm, repository: string): TokenCheck {
    if ('invalid' in lookup) return reject('invalid_token', lookup.invalid);
    if ('unavailable' in lookup) return reject('unavailable', lookup.unavailable);
    if ('key' in lookup) return verifyWith(token, lookup.key, alg, repository);
    let last = reject('invalid_token', 'no configured key verifies this token');
    for (const key of lookup.candidates) {
      if (!algorithmsForKey(key).includes(alg)) continue;
      const result = verifyWith(token, key, alg, repository);
      // A signature match decides; other keys are only tried when this one did not sign it.
      if (result.ok || result.reason !== 'invalid signature') return result;
      last = result;
    }
    return last;
  }

  return {
    check(authorization, repository) {
      if (authorization === undefined) return reject('missing', 'no Authorization header');
      const space = authorization.indexOf(' ');
      if (space < 0 || authorization.slice(0, space).toLowerCase() !== 'bearer' || space === authorization.length - 1) {
        return reject('missing', 'Authorization is not a Bearer token');
      }
      const token = authorization.slice(space + 1);
      if (token.length > MAX_TOKEN_LENGTH) return reject('invalid_token', 'token too long');
      const header = decodeHeader(token);
      if (header === undefined) return reject('invalid_token', 'malformed token');
      const alg = header.alg as TokenAlgorithm;
      if (!algorithms.includes(alg)) return reject('invalid_token', `algorithm ${header.alg.slice(0, 16)} is not accepted`);
      const lookup = keyring.lookup(header);
      return lookup instanceof Promise ? lookup.then((l) => finish(l, token, alg, repository)) : finish(lookup, token, alg, repository);
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
