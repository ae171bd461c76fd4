import type * as NodeCrypto from 'node:crypto';
import type { SignRequest, SignedUrl, Signer } from '../types.js';
import { once, zod } from '../lazy.js';
import { blockKeys, signerKind } from './kind.js';
import { DEFAULT_EXPIRY_MS, SEVEN_DAYS_MS, configError, encodeKeyPath, layoutOf, parseBaseUrl, requireOptions, requireText, signerExpiry, urlPrefix, type LayoutOptions } from './common.js';

/** node:crypto, loaded by the first signer: importing it costs as much as the rest of the package. */
let nodeCrypto: typeof NodeCrypto | undefined;
const crypto = (): typeof NodeCrypto => (nodeCrypto ??= process.getBuiltinModule('node:crypto'));

/** How the token is computed: an HMAC keyed with `key`, or a plain hash over a message that contains `{key}`. */
export type HmacAlgorithm = 'hmac-sha256' | 'hmac-sha1' | 'hmac-sha512' | 'md5' | 'sha1' | 'sha256';
/** How the token bytes are written: `base64url` keeps `=` padding, `base64url-nopad` drops it. */
export type TokenEncoding = 'base64' | 'base64url' | 'base64url-nopad' | 'hex';
/** Ready-made settings for common CDN token schemes. */
export type HmacPreset = 'cloudflare' | 'nginx-secure-link' | 'google-cdn';

/** Options of {@link hmacSigner}; the same keys as the `signer.hmac` config block. */
export interface HmacSignerOptions extends LayoutOptions {
  /** The CDN URL the key is appended to, e.g. `https://cdn.example.com` (an optional path prefix is kept). */
  baseUrl: string;
  /** The shared secret. */
  key: string;
  /** How `key` is written: `utf8` (default), `base64`, `base64url` (Google Cloud CDN keys) or `hex`. */
  keyEncoding?: 'utf8' | 'base64' | 'base64url' | 'hex';
  /** A ready-made scheme; every other token option below overrides the preset's value. */
  preset?: HmacPreset;
  /** Hash: `hmac-sha256` (default), `hmac-sha1`, `hmac-sha512`, or plain `md5`, `sha1`, `sha256` over a message containing `{key}`. */
  algorithm?: HmacAlgorithm;
  /**
   * What is signed, a template: `{path}` (URL path as sent), `{url}` (URL without query),
   * `{expires}` (epoch seconds when it stops working), `{issued}` (epoch seconds when signed),
   * `{keyName}`, and `{key}` (plain hashes only). Example: `"{path}{issued}"`.
   */
  message?: string;
  /** The query string appended to the URL, a template with the placeholders above (not `{key}`) and `{token}`. Example: `"verify={issued}-{token}"`. */
  query?: string;
  /** How the token is written. Default `base64url-nopad`. */
  encoding?: TokenEncoding;
  /** Value of `{keyName}`, e.g. Google Cloud CDN's key name. */
  keyName?: string;
  /** Lifetime of a signed URL: milliseconds or a duration like `"20m"`. Default 20 minutes; at most 7 days. */
  expiry?: number | string;
  /** Clock, epoch milliseconds. Default `Date.now`; for tests. */
  now?: () => number;
}

interface Scheme {
  algorithm: HmacAlgorithm;
  message: string;
  query: string;
  encoding: TokenEncoding;
  keyEncoding: 'utf8' | 'base64' | 'base64url' | 'hex';
}

/** The presets, documented with worked examples in docs/signers.md (which the tests run). */
export const HMAC_PRESETS: Readonly<Record<HmacPreset, Scheme>> = {
  // Cloudflare WAF is_timed_hmac_valid_v0 / Workers "sign requests"; Docker Hub's blob URLs look like this.
  cloudflare: { algorithm: 'hmac-sha256', message: '{path}{issued}', query: 'verify={issued}-{token}', encoding: 'base64', keyEncoding: 'utf8' },
  // nginx secure_link with `secure_link $arg_md5,$arg_expires; secure_link_md5 "$secure_link_expires$uri <key>";`
  'nginx-secure-link': { algorithm: 'md5', message: '{expires}{path} {key}', query: 'md5={token}&expires={expires}', encoding: 'base64url-nopad', keyEncoding: 'utf8' },
  // Google Cloud CDN signed URLs.
  'google-cdn': {
    algorithm: 'hmac-sha1',
    message: '{url}?Expires={expires}&KeyName={keyName}',
    query: 'Expires={expires}&KeyName={keyName}&Signature={token}',
    encoding: 'base64url',
    keyEncoding: 'base64url',
  },
};

const ALGORITHMS: Readonly<Record<HmacAlgorithm, { hmac: boolean; hash: string }>> = {
  'hmac-sha256': { hmac: true, hash: 'sha256' },
  'hmac-sha1': { hmac: true, hash: 'sha1' },
  'hmac-sha512': { hmac: true, hash: 'sha512' },
  md5: { hmac: false, hash: 'md5' },
  sha1: { hmac: false, hash: 'sha1' },
  sha256: { hmac: false, hash: 'sha256' },
};
const ENCODINGS: readonly TokenEncoding[] = ['base64', 'base64url', 'base64url-nopad', 'hex'];
const KEY_ENCODINGS = ['utf8', 'base64', 'base64url', 'hex'] as const;

type Field = 'path' | 'url' | 'expires' | 'issued' | 'keyName' | 'key' | 'token';
const FIELDS: readonly Field[] = ['path', 'url', 'expires', 'issued', 'keyName', 'key', 'token'];
type Values = Record<Field, string>;
/** A template compiled once: literal text and field names, alternating. */
type Part = { text: string } | { field: Field };

function compile(template: unknown, key: string, allowed: readonly Field[]): Part[] {
  if (typeof template !== 'string' || template.length === 0) configError(`${key}: write a template, e.g. "{path}{expires}"`);
  const parts: Part[] = [];
  const re = /\{([^{}]*)\}/g;
  let last = 0;
  for (let m = re.exec(template); m; m = re.exec(template)) {
    const name = m[1] as Field;
    if (!FIELDS.includes(name) || !allowed.includes(name)) {
      configError(`${key}: {${m[1]}} is not allowed here; use ${allowed.map((f) => `{${f}}`).join(', ')}`);
    }
    if (m.index > last) parts.push({ text: template.slice(last, m.index) });
    parts.push({ field: name });
    last = m.index + m[0].length;
  }
  if (last < template.length) parts.push({ text: template.slice(last) });
  return parts;
}

function uses(parts: Part[], field: Field): boolean {
  return parts.some((p) => 'field' in p && p.field === field);
}

function render(parts: Part[], values: Values, escape: (s: string) => string): string {
  let out = '';
  for (const p of parts) out += 'text' in p ? p.text : escape(values[p.field]);
  return out;
}

const asIs = (s: string): string => s;

function encodeToken(digest: Buffer, encoding: TokenEncoding): string {
  switch (encoding) {
    case 'hex':
      return digest.toString('hex');
    case 'base64':
      return digest.toString('base64');
    case 'base64url-nopad':
      return digest.toString('base64url');
    case 'base64url':
      return digest.toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
  }
}

function decodeKey(key: string, encoding: Scheme['keyEncoding']): Buffer {
  if (encoding === 'utf8') return Buffer.from(key, 'utf8');
  const valid = encoding === 'hex' ? /^(?:[0-9a-fA-F]{2})+$/ : encoding === 'base64' ? /^[A-Za-z0-9+/]+={0,2}$/ : /^[A-Za-z0-9_-]+={0,2}$/;
  if (!valid.test(key)) configError(`signer.hmac.key: not ${encoding}; write the key as ${encoding} or set signer.hmac.keyEncoding`);
  return Buffer.from(key, encoding);
}

/** A scheme compiled from options once: what {@link hmacSigner} signs with and {@link hmacTokenVerifier} checks. */
interface CompiledScheme {
  base: string;
  basePath: string;
  origin: string;
  key: string;
  secret: Buffer;
  hmac: boolean;
  hash: string;
  encoding: TokenEncoding;
  message: Part[];
  query: Part[];
  keyName: string;
  expiryMs: number;
  now: () => number;
}

function compileScheme(options: HmacSignerOptions, factory: string): CompiledScheme {
  requireOptions(options, factory);
  const baseUrl = parseBaseUrl(requireText(options.baseUrl, 'signer.hmac.baseUrl', 'the CDN URL', 'https://cdn.example.com'), 'signer.hmac.baseUrl', 'https://cdn.example.com');
  const base = urlPrefix(baseUrl);
  const key = requireText(options.key, 'signer.hmac.key', 'the shared secret', '${CDN_KEY}');
  if (options.preset !== undefined && !(options.preset in HMAC_PRESETS)) {
    configError(`signer.hmac.preset: ${JSON.stringify(options.preset)} is not a preset; write one of ${Object.keys(HMAC_PRESETS).join(', ')}, or describe the scheme with message, query and algorithm`);
  }
  const preset = options.preset === undefined ? undefined : HMAC_PRESETS[options.preset];
  if (!preset && (options.message === undefined || options.query === undefined)) {
    configError(`signer.hmac: write a preset (${Object.keys(HMAC_PRESETS).join(', ')}) or both message and query, e.g. message: "{path}{expires}", query: "expires={expires}&token={token}"`);
  }
  const algorithm = options.algorithm ?? preset?.algorithm ?? 'hmac-sha256';
  const alg = ALGORITHMS[algorithm];
  if (!alg) configError(`signer.hmac.algorithm: ${JSON.stringify(algorithm)} is not supported; write one of ${Object.keys(ALGORITHMS).join(', ')}`);
  const encoding = options.encoding ?? preset?.encoding ?? 'base64url-nopad';
  if (!ENCODINGS.includes(encoding)) configError(`signer.hmac.encoding: write one of ${ENCODINGS.join(', ')}`);
  const keyEncoding = options.keyEncoding ?? preset?.keyEncoding ?? 'utf8';
  if (!KEY_ENCODINGS.includes(keyEncoding)) configError(`signer.hmac.keyEncoding: write one of ${KEY_ENCODINGS.join(', ')}`);
  const secret = decodeKey(key, keyEncoding);

  const messageFields: Field[] = ['path', 'url', 'expires', 'issued', 'keyName', ...(alg.hmac ? [] : ['key' as const])];
  const message = compile(options.message ?? preset?.message, 'signer.hmac.message', messageFields);
  const query = compile(options.query ?? preset?.query, 'signer.hmac.query', ['path', 'url', 'expires', 'issued', 'keyName', 'token']);
  if (!uses(query, 'token')) configError('signer.hmac.query: must contain {token}, e.g. "expires={expires}&token={token}"');
  if (!alg.hmac && !uses(message, 'key')) configError(`signer.hmac.message: a plain ${algorithm} hash must include {key}, or anyone could compute the token; use an hmac-* algorithm or add {key}`);
  if (!uses(message, 'expires') && !uses(message, 'issued')) configError('signer.hmac.message: must include {expires} or {issued}, or a token would never expire');
  const keyName = options.keyName ?? '';
  if ((uses(message, 'keyName') || uses(query, 'keyName')) && !keyName) configError('signer.hmac.keyName: missing; the scheme uses {keyName}, so write the key name configured at the CDN, e.g. "registry-key"');

  return {
    base,
    basePath: new URL(base).pathname.replace(/\/$/, ''),
    origin: baseUrl.origin,
    key,
    secret,
    hmac: alg.hmac,
    hash: alg.hash,
    encoding,
    message,
    query,
    keyName,
    expiryMs: signerExpiry(options.expiry, SEVEN_DAYS_MS, 'a blob URL signed by this package'),
    now: options.now ?? Date.now,
  };
}

function tokenOf(scheme: CompiledScheme, values: Values): string {
  const text = render(scheme.message, values, asIs);
  const digest = scheme.hmac ? crypto().createHmac(scheme.hash, scheme.secret).update(text).digest() : crypto().createHash(scheme.hash).update(text).digest();
  return encodeToken(digest, scheme.encoding);
}

// Values go into the query percent-encoded (base64 `+` and `/` must not reach the CDN as a space
// or a path separator), except `=`: base64 padding stays as the CDNs' own samples write it.
const escapeQuery = (s: string): string => encodeURIComponent(s).replace(/%3D/g, '=');

/**
 * A generic CDN token signer (node:crypto): appends a query with an expiry and a keyed hash of the
 * path, in the format the CDN's verifier expects. Presets cover Cloudflare (`?verify=<issued>-<mac>`),
 * nginx `secure_link` and Google Cloud CDN; `message`/`query`/`algorithm` describe any other.
 */
export function hmacSigner(options: HmacSignerOptions): Signer {
  const scheme = compileScheme(options, 'hmacSigner');
  const { keyOf, objectKey, cacheKey } = layoutOf(options);
  const expirySeconds = Math.floor(scheme.expiryMs / 1_000);

  return {
    name: 'hmac',
    objectKey,
    cacheKey,
    sign(request: SignRequest): SignedUrl {
      const encodedKey = encodeKeyPath(keyOf(request.repository, request.digest));
      const issued = Math.floor(scheme.now() / 1_000);
      const expires = issued + expirySeconds;
      const values: Values = {
        path: `${scheme.basePath}/${encodedKey}`,
        url: `${scheme.base}/${encodedKey}`,
        expires: String(expires),
        issued: String(issued),
        keyName: scheme.keyName,
        key: scheme.key,
        token: '',
      };
      values.token = tokenOf(scheme, values);
      return { url: `${values.url}?${render(scheme.query, values, escapeQuery)}`, expiresAt: expires * 1_000 };
    },
  };
}

/** Why a token was refused by {@link hmacTokenVerifier}; `ok` when it was accepted. */
export type TokenVerdict = 'ok' | 'missing' | 'malformed' | 'expired' | 'mismatch';

/** Checks URLs signed by {@link hmacSigner} with the same options: the origin side of a scheme. */
export interface HmacTokenVerifier {
  /** `path` as received (percent-encoded, no query), `query` without the `?`. */
  verify(path: string, query: string): TokenVerdict;
}

/** Issued-only schemes (Cloudflare) allow this much clock difference into the future. */
const ISSUED_SKEW_S = 60;
const FIELD_PATTERN: Readonly<Record<Field, string>> = {
  expires: '(\\d{1,15})',
  issued: '(\\d{1,15})',
  token: '([^&]+)',
  keyName: '([^&]*)',
  path: '([^&]*)',
  url: '([^&]*)',
  key: '',
};
const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The verifier for a scheme: the query must match the scheme's query template exactly, not be
 * expired (`{expires}` in the past, or `{issued}` older than `expiry`), and carry the token that
 * the message over this path computes (compared in constant time). Schemes whose message uses a
 * value the query does not carry (other than path, url, key and keyName) cannot be verified and
 * are refused at construction.
 */
export function hmacTokenVerifier(options: HmacSignerOptions): HmacTokenVerifier {
  const scheme = compileScheme(options, 'hmacTokenVerifier');
  const captured: Field[] = [];
  let pattern = '^';
  for (const part of scheme.query) {
    if ('text' in part) pattern += escapeRegExp(part.text);
    else {
      captured.push(part.field);
      pattern += FIELD_PATTERN[part.field];
    }
  }
  const queryRe = new RegExp(`${pattern}$`);
  for (const field of ['expires', 'issued'] as const) {
    if (uses(scheme.message, field) && !captured.includes(field)) {
      configError(`signer.hmac.query: the message signs {${field}}, so the query must carry it too, or the origin cannot check the token`);
    }
  }
  const expirySeconds = Math.floor(scheme.expiryMs / 1_000);
  const checksExpires = captured.includes('expires');

  return {
    verify(path, query) {
      if (query.length === 0) return 'missing';
      const m = queryRe.exec(query);
      if (!m) return 'malformed';
      const values: Values = { path, url: `${scheme.origin}${path}`, expires: '', issued: '', keyName: scheme.keyName, key: scheme.key, token: '' };
      const given: Partial<Record<Field, string>> = {};
      for (let i = 0; i < captured.length; i++) {
        let value: string;
        try {
          value = decodeURIComponent(m[i + 1]!);
        } catch {
          return 'malformed';
        }
        const field = captured[i]!;
        if (given[field] !== undefined && given[field] !== value) return 'malformed';
        given[field] = value;
      }
      // The path and key name come from the request and the config, never from the query.
      if ((given.path !== undefined && given.path !== path) || (given.url !== undefined && given.url !== values.url)) return 'mismatch';
      if (given.keyName !== undefined && given.keyName !== scheme.keyName) return 'mismatch';
      values.expires = given.expires ?? '';
      values.issued = given.issued ?? '';
      const now = Math.floor(scheme.now() / 1_000);
      if (checksExpires) {
        if (now > Number(values.expires)) return 'expired';
      } else {
        const issued = Number(values.issued);
        if (now - issued > expirySeconds || issued > now + ISSUED_SKEW_S) return 'expired';
      }
      const expected = Buffer.from(tokenOf(scheme, values));
      const actual = Buffer.from(given.token ?? '');
      return expected.length === actual.length && crypto().timingSafeEqual(expected, actual) ? 'ok' : 'mismatch';
    },
  };
}

/** Defaults of {@link hmacSigner} and the `signer.hmac` block (a preset's values override them). */
export const HMAC_DEFAULTS = { expiry: DEFAULT_EXPIRY_MS, algorithm: 'hmac-sha256', encoding: 'base64url-nopad', keyEncoding: 'utf8', rootDirectory: '', layout: 'distribution' } as const;

/** The `signer.hmac` config block. */
export const hmacConfig = once(() => {
  const { z } = zod();
  const k = blockKeys(z);
  return z
    .object({
      baseUrl: k.url('https://cdn.example.com'),
      key: k.text('the shared secret', '${CDN_KEY}'),
      keyEncoding: z.enum(KEY_ENCODINGS, { error: 'write utf8 (default), base64, base64url or hex' }).optional(),
      preset: z.enum(Object.keys(HMAC_PRESETS) as [HmacPreset, ...HmacPreset[]], { error: `write one of ${Object.keys(HMAC_PRESETS).join(', ')}` }).optional(),
      algorithm: z.enum(Object.keys(ALGORITHMS) as [HmacAlgorithm, ...HmacAlgorithm[]], { error: 'write hmac-sha256 (default), hmac-sha1, hmac-sha512, md5, sha1 or sha256' }).optional(),
      message: k.text('the signed message template', '{path}{expires}').optional(),
      query: k.text('the query template', 'expires={expires}&token={token}').optional(),
      encoding: z.enum(ENCODINGS as [TokenEncoding, ...TokenEncoding[]], { error: 'write base64, base64url, base64url-nopad or hex' }).optional(),
      keyName: k.text('the key name configured at the CDN', 'registry-key').optional(),
      ...k.layout,
    })
    .strict();
});

/** `signer: { hmac: {...} }`. */
export const hmacKind = signerKind({ schema: hmacConfig, create: (block, common) => hmacSigner({ ...block, expiry: common.expiry, ...(common.now ? { now: common.now } : {}) }) });
