import { resolve } from 'node:path';
import { resolveLayout, type LayoutFn } from '../layouts.js';
import type { Signer } from '../types.js';
import { hmacSigner, hmacTokenVerifier, type HmacSignerOptions, type HmacTokenVerifier } from './hmac.js';
import { configError, parseBaseUrl, requireOptions, requireText } from './common.js';

/**
 * URL token formats of origin mode. `hmac-sha256` (default) is the origin's own:
 * `?expires=<epoch s>&sig=<base64url HMAC-SHA256 of "<path><expires>">`. The others are the
 * {@link hmacSigner} presets, so a CDN in front can verify tokens at the edge with its own feature.
 */
export type OriginToken = 'hmac-sha256' | 'cloudflare' | 'nginx-secure-link' | 'google-cdn';

/** The reserved path prefix of an origin on the main listener (no `listen`, no `baseUrl`). */
export const ORIGIN_PATH_PREFIX = '/_origin';

/** Options of {@link originSigner}; the same keys as the `signer.origin` config block. */
export interface OriginSignerOptions {
  /** The registry's storage root directory (distribution's `rootdirectory`, zot's `rootDirectory`), read only. */
  root: string;
  /** HMAC secret of the URLs the origin issues and verifies. At least 16 characters. */
  key: string;
  /** `distribution` (default): `docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data`; `oci-per-repo` (zot): `<repository>/blobs/<alg>/<hex>`. */
  layout?: 'distribution' | 'oci-per-repo';
  /**
   * Public URL clients are sent to, e.g. a CDN pull zone `https://blobs.example.com` that forwards
   * the path and query unchanged to the origin. An optional path prefix is kept, and the origin
   * serves under it. Default: `http://<listen>` (the separate origin listener).
   */
  baseUrl?: string;
  /** A separate origin listener, `{ host, port }`. Required by the library unless `baseUrl` is set. */
  listen?: { host: string; port: number };
  /** Token format. Default `hmac-sha256`. */
  token?: OriginToken;
  /** `{keyName}` of the `google-cdn` format. */
  keyName?: string;
  /** How `key` is written: `utf8` (default), `base64`, `base64url` (Google Cloud CDN keys) or `hex`. */
  keyEncoding?: HmacSignerOptions['keyEncoding'];
  /** Origin shield: a header the CDN adds to every request it forwards; requests without it get 403. */
  originSecretHeader?: { name: string; value: string };
  /** Lifetime of a signed URL: milliseconds or a duration like `"20m"`. Default 20 minutes. */
  expiry?: number | string;
  /** Clock, epoch milliseconds. Default `Date.now`; for tests. */
  now?: () => number;
}

/** What an origin serves and how it checks requests: everything {@link createOriginHandler} needs. */
export interface OriginDescriptor {
  /** Absolute root directory. */
  readonly root: string;
  readonly layout: 'distribution' | 'oci-per-repo';
  /** Key function of the layout, without a root prefix (URL paths are relative to `root`). */
  readonly keyOf: LayoutFn;
  /** Path prefix the origin serves under (`""` or `/prefix`, no trailing slash). */
  readonly pathPrefix: string;
  /** The public URL signed URLs start with. */
  readonly baseUrl: string;
  /** The separate listener, when configured. */
  readonly listen?: { host: string; port: number } | undefined;
  readonly token: OriginToken;
  readonly verifier: HmacTokenVerifier;
  /** Lower-cased header name and expected value of the origin shield. */
  readonly secretHeader?: { name: string; value: string } | undefined;
}

/** A signer whose URLs point at an origin this package serves itself. */
export interface OriginSigner extends Signer {
  readonly origin: OriginDescriptor;
}

const ORIGIN_HMAC: Pick<HmacSignerOptions, 'message' | 'query' | 'algorithm' | 'encoding'> = {
  algorithm: 'hmac-sha256',
  message: '{path}{expires}',
  query: 'expires={expires}&sig={token}',
  encoding: 'base64url-nopad',
};
const TOKENS: readonly OriginToken[] = ['hmac-sha256', 'cloudflare', 'nginx-secure-link', 'google-cdn'];
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/** `http://host:port`, brackets for IPv6. */
export function listenUrl(listen: { host: string; port: number }): string {
  return `http://${process.getBuiltinModule('node:net').isIP(listen.host) === 6 ? `[${listen.host}]` : listen.host}:${listen.port}`;
}

const WILDCARDS = new Set(['0.0.0.0', '::', '']);

/** True for any-address binds, which are no host name a client can be sent to. */
export function isWildcardHost(host: string): boolean {
  return WILDCARDS.has(host);
}

/**
 * Origin mode: signs URLs for blobs on the registry's own filesystem, which this package then
 * serves itself (see {@link createOriginHandler}, and `signer.origin` in the server config), so a
 * filesystem registry gets blob redirects and a CDN can cache them.
 */
export function originSigner(options: OriginSignerOptions): OriginSigner {
  requireOptions(options, 'originSigner');
  const root = resolve(requireText(options.root, 'signer.origin.root', "the registry's storage root directory", '/var/lib/registry'));
  const key = requireText(options.key, 'signer.origin.key', 'the HMAC secret of the origin URLs', '${ORIGIN_KEY}');
  if ((options.keyEncoding ?? 'utf8') === 'utf8' && key.length < 16) configError('signer.origin.key: shorter than 16 characters; write a long random secret, e.g. the output of `openssl rand -hex 32`');
  const layout = options.layout ?? 'distribution';
  if (layout !== 'distribution' && layout !== 'oci-per-repo') configError(`signer.origin.layout: ${JSON.stringify(layout)}; write "distribution" (default) or "oci-per-repo"`);
  const token = options.token ?? 'hmac-sha256';
  if (!TOKENS.includes(token)) configError(`signer.origin.token: ${JSON.stringify(token)}; write one of ${TOKENS.join(', ')}`);
  if (options.listen && isWildcardHost(options.listen.host) && options.baseUrl === undefined) {
    configError(`signer.origin.baseUrl: missing; the origin listens on ${options.listen.host}, which is no address clients can be sent to: write the URL they reach it at, e.g. "https://blobs.example.com"`);
  }
  let baseUrl: string;
  if (options.baseUrl !== undefined) {
    baseUrl = parseBaseUrl(options.baseUrl, 'signer.origin.baseUrl', 'https://blobs.example.com').href.replace(/\/+$/, '');
  } else if (options.listen) {
    baseUrl = listenUrl(options.listen);
  } else {
    configError('signer.origin: write listen (a separate origin listener, e.g. "127.0.0.2:15081") or baseUrl (the URL clients reach the origin at)');
  }
  const pathPrefix = new URL(baseUrl).pathname.replace(/\/+$/, '');
  let secretHeader: OriginDescriptor['secretHeader'];
  if (options.originSecretHeader !== undefined) {
    const { name, value } = options.originSecretHeader;
    if (typeof name !== 'string' || !HEADER_NAME.test(name)) configError('signer.origin.originSecretHeader.name: write a header name, e.g. "X-Origin-Secret"');
    if (typeof value !== 'string' || value.length < 16) configError('signer.origin.originSecretHeader.value: write a secret of at least 16 characters, e.g. "${ORIGIN_SHIELD_SECRET}"');
    secretHeader = { name: name.toLowerCase(), value };
  }
  const scheme: HmacSignerOptions = {
    baseUrl,
    key,
    layout,
    ...(token === 'hmac-sha256' ? ORIGIN_HMAC : { preset: token }),
    ...(options.keyName !== undefined ? { keyName: options.keyName } : {}),
    ...(options.keyEncoding !== undefined ? { keyEncoding: options.keyEncoding } : {}),
    ...(options.expiry !== undefined ? { expiry: options.expiry } : {}),
    ...(options.now ? { now: options.now } : {}),
  };
  const signer = hmacSigner(scheme);
  const origin: OriginDescriptor = {
    root,
    layout,
    keyOf: resolveLayout(layout),
    pathPrefix,
    baseUrl,
    listen: options.listen,
    token,
    verifier: hmacTokenVerifier(scheme),
    secretHeader,
  };
  return { name: 'origin', objectKey: signer.objectKey!, cacheKey: signer.cacheKey!, sign: signer.sign, origin };
}

/** True when `signer` serves its own blobs (origin mode). */
export function isOriginSigner(signer: Signer): signer is OriginSigner {
  return typeof (signer as Partial<OriginSigner>).origin === 'object' && (signer as Partial<OriginSigner>).origin !== null;
}
