import type { KeyObject, X509Certificate } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { RegistryRedirectError } from '../errors.js';
import type { TokenAlgorithm } from '../types.js';
import { createJwksSource } from './jwks.js';
import type { JwksSource } from './jwks.js';

/** node:crypto, loaded on first use: importing it costs as much as the rest of the package. */
const crypto = () => process.getBuiltinModule('node:crypto');

/** Every algorithm token mode can verify. `none` and `HS*` are deliberately absent. */
export const TOKEN_ALGORITHMS: readonly TokenAlgorithm[] = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'];

/** The JOSE header fields that select a key. Everything else in the header is ignored. */
export interface TokenHeader {
  alg: string;
  kid?: unknown;
  x5c?: unknown;
}

/**
 * Where the key of one token comes from:
 * - `key`: exactly this key (named by `kid` or carried in a verified `x5c` chain);
 * - `candidates`: no `kid`/`x5c`, try these configured keys;
 * - `invalid`: the token names a key that is not trusted (unknown `kid`, bad chain);
 * - `unavailable`: the key cannot be fetched now (JWKS endpoint down or rate limited).
 */
export type KeyLookup =
  | { readonly key: KeyObject }
  | { readonly candidates: readonly KeyObject[] }
  | { readonly invalid: string }
  | { readonly unavailable: string };

/** Resolves the verification key of a token from the configured key sources. */
export interface TokenKeyring {
  lookup(header: TokenHeader): KeyLookup | Promise<KeyLookup>;
}

export interface TokenKeyringOptions {
  publicKeys?: ReadonlyArray<string | Buffer | KeyObject> | undefined;
  rootCertBundle?: string | Buffer | undefined;
  jwksUrl?: string | undefined;
  jwksCacheMaxAge?: number | undefined;
  algorithms: readonly TokenAlgorithm[];
  /** Option path prefix for error messages, e.g. `tokenAuth` or `authorize.token`. */
  path: string;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
const MAX_X5C_LENGTH = 10;
/** Signature checks one `x5c` chain may cost; a real chain needs one per certificate. */
const MAX_X5C_SIGNATURE_CHECKS = 24;
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function invalidConfig(message: string): never {
  throw new RegistryRedirectError('CONFIG_INVALID', message);
}

/** Algorithms a key can verify: RSA keys the RS and PS families, RSA-PSS keys PS only, EC keys by curve. */
export function algorithmsForKey(key: KeyObject): readonly TokenAlgorithm[] {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
    case 'rsa-pss':
      return ['PS256', 'PS384', 'PS512'];
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1') return ['ES256'];
      if (curve === 'secp384r1') return ['ES384'];
      if (curve === 'secp521r1') return ['ES512'];
      return [];
    }
    default:
      return [];
  }
}

function describeKey(key: KeyObject): string {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  return curve ? `${key.asymmetricKeyType} (${curve})` : String(key.asymmetricKeyType);
}

function spki(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

function base32(bytes: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/**
 * The libtrust key ID docker token servers put in `kid` (distribution 2.x, docker_auth, GitLab,
 * Harbor): SHA-256 of the DER SubjectPublicKeyInfo, truncated to 240 bits, base32, 12 groups of 4.
 */
export function libtrustKeyId(key: KeyObject): string {
  const encoded = base32(crypto().createHash('sha256').update(spki(key)).digest().subarray(0, 30));
  return encoded.match(/.{4}/g)!.join(':');
}

/** RFC 7638 JWK thumbprint (base64url SHA-256), the `kid` distribution 3 derives from root certificates. */
export function jwkThumbprint(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  const canonical =
    jwk.kty === 'EC'
      ? JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })
      : JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n });
  return crypto().createHash('sha256').update(canonical).digest('base64url');
}

interface PemBlock {
  type: string;
  pem: string;
}

function pemBlocks(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) blocks.push({ type: m[1]!, pem: m[0] });
  return blocks;
}

function publicKeyFromBlock(block: PemBlock, where: string): KeyObject | undefined {
  if (block.type.includes('PRIVATE KEY')) {
    invalidConfig(`${where}: holds a private key; configure only the public key or certificate (e.g. openssl pkey -in key.pem -pubout -out token.pem)`);
  }
  try {
    if (block.type === 'CERTIFICATE') return new (crypto().X509Certificate)(block.pem).publicKey;
    if (block.type === 'PUBLIC KEY' || block.type === 'RSA PUBLIC KEY') return crypto().createPublicKey(block.pem);
  } catch (cause) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${where}: cannot parse the ${block.type}: ${(cause as Error).message}`, { cause });
  }
  if (block.type === 'EC PARAMETERS') return undefined;
  return invalidConfig(`${where}: unsupported PEM block "${block.type}"; write PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE blocks`);
}

function checkUsable(key: KeyObject, algorithms: readonly TokenAlgorithm[], where: string): void {
  if (key.type !== 'public') {
    invalidConfig(`${where}: a ${key.type} key was given; token mode verifies with public keys only (HS* shared secrets are refused)`);
  }
  const usable = algorithmsForKey(key);
  if (!usable.some((alg) => algorithms.includes(alg))) {
    invalidConfig(
      `${where}: this ${describeKey(key)} key cannot verify any of the configured algorithms (${algorithms.join(', ')}); add one of ${usable.join(', ') || '(none: unsupported key type)'} to algorithms`,
    );
  }
}

/** Parses `publicKeys` entries into keys; each entry may hold several PEM blocks. */
export function parsePublicKeys(entries: ReadonlyArray<string | Buffer | KeyObject>, algorithms: readonly TokenAlgorithm[], path: string): KeyObject[] {
  const keys: KeyObject[] = [];
  entries.forEach((entry, i) => {
    const where = `${path}[${i}]`;
    if (entry instanceof crypto().KeyObject) {
      checkUsable(entry, algorithms, where);
      keys.push(entry);
      return;
    }
    if (typeof entry !== 'string' && !Buffer.isBuffer(entry)) invalidConfig(`${where}: write PEM text (a public key or certificate) or a KeyObject`);
    const blocks = pemBlocks(entry.toString());
    if (blocks.length === 0) invalidConfig(`${where}: no PEM block found; write the text of a "-----BEGIN PUBLIC KEY-----" or "-----BEGIN CERTIFICATE-----" file`);
    for (const block of blocks) {
      const key = publicKeyFromBlock(block, where);
      if (key === undefined) continue;
      checkUsable(key, algorithms, where);
      keys.push(key);
    }
  });
  return keys;
}

/** Parses a `rootcertbundle`: one or more CERTIFICATE blocks. */
export function parseRootCertBundle(text: string | Buffer, path: string): X509Certificate[] {
  const blocks = pemBlocks(text.toString()).filter((b) => b.type === 'CERTIFICATE');
  if (blocks.length === 0) invalidConfig(`${path}: no "-----BEGIN CERTIFICATE-----" block found; write the PEM certificate(s) the token server's signing chain leads to`);
  return blocks.map((b, i) => {
    try {
      return new (crypto().X509Certificate)(b.pem);
    } catch (cause) {
      throw new RegistryRedirectError('CONFIG_INVALID', `${path}: certificate #${i + 1} cannot be parsed: ${(cause as Error).message}`, { cause });
    }
  });
}

function validAt(cert: X509Certificate, now: number): boolean {
  return cert.validFromDate.getTime() <= now && now <= cert.validToDate.getTime();
}

/**
 * Verifies an `x5c` chain (base64 DER, leaf first) against the trust anchors the way Go's
 * x509.Verify does for distribution: the other certificates are a pool of intermediates in any
 * order, and some path from the leaf through CA certificates, each issuing and signing the one
 * before and each currently valid, must end at a root (or at a certificate a root signed). A
 * leaf whose key is one of the configured `publicKeys` is trusted directly. Returns the leaf key
 * and when the path used stops being valid.
 */
function verifyX5c(x5c: unknown, roots: readonly X509Certificate[], trustedSpki: ReadonlySet<string>, now: number): { key: KeyObject; notAfter: number } | string {
  if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > MAX_X5C_LENGTH || !x5c.every((c) => typeof c === 'string')) {
    return `x5c must be a list of 1-${MAX_X5C_LENGTH} base64 certificates`;
  }
  let certs: X509Certificate[];
  try {
    certs = (x5c as string[]).map((c) => new (crypto().X509Certificate)(Buffer.from(c, 'base64')));
  } catch {
    return 'x5c holds a certificate that cannot be parsed';
  }
  const leaf = certs[0]!;
  if (!validAt(leaf, now)) return 'x5c leaf certificate is outside its validity period';
  if (trustedSpki.has(spki(leaf.publicKey).toString('base64'))) return { key: leaf.publicKey, notAfter: leaf.validToDate.getTime() };
  const pool = certs.slice(1);
  // Every certificate is expanded once (reachability does not depend on the path), and signature
  // checks are capped: a chain of mutually issuing certificates must not cost more than a real one.
  let checks = MAX_X5C_SIGNATURE_CHECKS;
  const signs = (issuer: X509Certificate, cert: X509Certificate) =>
    issuer.ca && validAt(issuer, now) && cert.checkIssued(issuer) && checks-- > 0 && cert.verify(issuer.publicKey);
  const expanded = new Set<X509Certificate>([leaf]);
  /** Depth-first over the pool; returns the earliest expiry on a path that reaches a root. */
  const anchor = (cert: X509Certificate, notAfter: number): number | undefined => {
    const until = Math.min(notAfter, cert.validToDate.getTime());
    for (const root of roots) {
      if (root.raw.equals(cert.raw)) return until;
      if (signs(root, cert)) return Math.min(until, root.validToDate.getTime());
    }
    for (const next of pool) {
      if (expanded.has(next) || !signs(next, cert)) continue;
      expanded.add(next);
      const found = anchor(next, until);
      if (found !== undefined) return found;
    }
    return undefined;
  };
  const notAfter = anchor(leaf, Number.POSITIVE_INFINITY);
  return notAfter === undefined ? 'x5c chain does not lead to a trusted root certificate' : { key: leaf.publicKey, notAfter };
}

/**
 * Builds the keyring from the configured sources. Validates everything at construction: unknown
 * PEM blocks, private keys, keys that no configured algorithm can use, a malformed JWKS URL.
 */
export function createTokenKeyring(options: TokenKeyringOptions): TokenKeyring {
  const { path, algorithms } = options;
  const publicKeys = options.publicKeys === undefined ? [] : parsePublicKeys(options.publicKeys, algorithms, `${path}.publicKeys`);
  const roots = options.rootCertBundle === undefined ? [] : parseRootCertBundle(options.rootCertBundle, `${path}.rootCertBundle`);
  let jwks: JwksSource | undefined;
  if (options.jwksUrl !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(options.jwksUrl);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
      invalidConfig(`${path}.jwksUrl: ${JSON.stringify(options.jwksUrl)} is not an http(s) URL; write e.g. "https://auth.example.com/.well-known/jwks.json"`);
    }
    const maxAge = options.jwksCacheMaxAge ?? 600_000;
    if (!Number.isFinite(maxAge) || maxAge <= 0) invalidConfig(`${path}.jwksCacheMaxAge: write a positive number of milliseconds, e.g. 600000`);
    jwks = createJwksSource(url.href, maxAge);
  }
  if (publicKeys.length === 0 && roots.length === 0 && jwks === undefined) {
    invalidConfig(`${path}: no signing keys; set publicKeys (PEM public keys or certificates), rootCertBundle (distribution's rootcertbundle) or jwksUrl`);
  }

  // Keys a `kid` may name: configured public keys and root certificate keys, by libtrust key ID
  // (distribution 2.x and docker token servers) and by RFC 7638 thumbprint (distribution 3).
  const byKid = new Map<string, KeyObject>();
  for (const key of [...publicKeys, ...roots.map((r) => r.publicKey)]) {
    byKid.set(libtrustKeyId(key), key);
    byKid.set(jwkThumbprint(key), key);
  }
  const trustedSpki = new Set(publicKeys.map((k) => spki(k).toString('base64')));
  // A token naming no key is tried against `publicKeys` only: like distribution, root certificates
  // are trusted through an `x5c` chain or a `kid`, never by trial.
  const candidates: readonly KeyObject[] = publicKeys;
  // Chain verification costs a few signature checks: remember verified chains (successes only).
  const verifiedChains = new LRUCache<string, { key: KeyObject; notAfter: number }>({ max: 64 });

  return {
    lookup(header) {
      if (header.x5c !== undefined) {
        const id = Array.isArray(header.x5c) ? header.x5c.join('.') : '';
        const now = Date.now();
        const cached = id ? verifiedChains.get(id) : undefined;
        if (cached && cached.notAfter >= now) return { key: cached.key };
        const result = verifyX5c(header.x5c, roots, trustedSpki, now);
        if (typeof result === 'string') return { invalid: result };
        verifiedChains.set(id, result);
        return { key: result.key };
      }
      if (header.kid !== undefined) {
        if (typeof header.kid !== 'string' || header.kid.length === 0 || header.kid.length > 256) return { invalid: 'kid is not a short string' };
        const key = byKid.get(header.kid);
        if (key) return { key };
        return jwks ? jwks.lookup(header.kid, header.alg) : { invalid: 'kid names no trusted key' };
      }
      if (candidates.length > 0) return { candidates };
      return jwks ? jwks.lookup(undefined, header.alg) : { invalid: 'token names no key (no kid, no x5c)' };
    },
  };
}
