import { parseDuration } from '../duration.js';
import { configError } from '../errors.js';
import { isDigestAddressed, resolveLayout, type LayoutFn } from '../layouts.js';
import type { BlobLayout, SignRequest } from '../types.js';

/** Default lifetime of a signed URL: 20 minutes. */
export const DEFAULT_EXPIRY_MS = 20 * 60_000;
/** SigV4 (S3), GCS V4 and Azure user delegation SAS all stop at 7 days. */
export const SEVEN_DAYS_MS = 7 * 86_400_000;

/** Where and how a signer finds a blob: the keys every signer block shares. */
export interface LayoutOptions {
  /** The registry's storage `rootdirectory`, prefixed to every key. Default `""`. */
  rootDirectory?: string;
  /**
   * How object keys are built from digests. Default `distribution`
   * (`docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data`); `oci-per-repo` for zot and OCI layouts
   * (`<repository>/blobs/<alg>/<hex>`); or a function `(repository, digest) => key`.
   */
  layout?: BlobLayout;
}

export { configError };

/** `1200000` -> `"20m"`: the largest unit that divides the value, for messages. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1_000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/**
 * Parses a signer's `expiry` (milliseconds, like every duration in the library's options, or a
 * duration string such as `"20m"`) and checks it against the provider's limit. `what` says whose
 * limit it is, e.g. "an S3 presigned URL (SigV4)".
 */
export function signerExpiry(expiry: number | string | undefined, maxMs: number, what: string): number {
  let ms: number;
  if (expiry === undefined) ms = DEFAULT_EXPIRY_MS;
  else if (typeof expiry === 'string') ms = parseDuration(expiry, 'expiry');
  else if (Number.isFinite(expiry) && expiry > 0) ms = Math.round(expiry);
  else configError(`expiry: ${JSON.stringify(expiry)} is not a duration; write milliseconds (e.g. 1200000) or a string such as "20m"`);
  if (ms > maxMs) {
    const limit = maxMs % 86_400_000 === 0 ? `${maxMs / 86_400_000} days` : formatDuration(maxMs);
    configError(`expiry: ${formatDuration(ms)} is longer than ${limit}, the longest ${what} can live; write a shorter duration, e.g. "20m"`);
  }
  if (ms < 1_000) configError(`expiry: ${formatDuration(ms)} is shorter than one second, the shortest a signed URL can live; write e.g. "20m"`);
  return ms;
}

/**
 * Parses a base URL option (`endpoint`, `baseUrl`): http or https only, no query, fragment or
 * credentials, trailing slashes dropped. `key` is the config key path for messages.
 */
export function parseBaseUrl(value: unknown, key: string, example: string): URL {
  let url: URL;
  try {
    url = new URL(String(value));
  } catch {
    configError(`${key}: ${JSON.stringify(value)} is not a URL; write e.g. "${example}"`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    configError(`${key}: protocol ${url.protocol} is not supported; write an https:// URL (http:// only for a local emulator), e.g. "${example}"`);
  }
  if (url.search || url.hash || url.username || url.password) {
    configError(`${key}: write only scheme, host, port and optional path (no query, fragment or credentials), e.g. "${example}"`);
  }
  url.pathname = url.pathname.replace(/\/+$/, '');
  return url;
}

/** `https://h/p/` -> `https://h/p` (no trailing slash), the prefix object paths are appended to. */
export function urlPrefix(url: URL): string {
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/** Percent-encodes each path segment of an object key, keeping the slashes. */
export function encodeKeyPath(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

/** A non-empty string option, or a message naming the key and an example. */
export function requireText(value: unknown, key: string, what: string, example: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    configError(`${key}: ${value === undefined ? 'missing' : 'must be a non-empty string'}; write ${what}, e.g. ${JSON.stringify(example)}`);
  }
  return value;
}

/** Checks the options argument of a signer factory. */
export function requireOptions(options: unknown, factory: string): void {
  if (options === null || typeof options !== 'object') configError(`${factory}(options): options must be an object`);
}

/**
 * The layout of a signer: its key function, and the `objectKey` and `cacheKey` methods signers
 * expose. The default layout's object key is a function of the digest alone, so the digest names
 * the object exactly and the signed-URL cache keys by it: building and hashing the ~110-character
 * object key on every cache hit costs about 0.7 µs of a 17 µs redirect (bench scenario 1).
 */
export function layoutOf(options: LayoutOptions): { keyOf: LayoutFn; objectKey: (request: SignRequest) => string; cacheKey: (request: SignRequest) => string } {
  const keyOf = resolveLayout(options.layout, options.rootDirectory);
  const objectKey = (request: SignRequest): string => keyOf(request.repository, request.digest);
  return { keyOf, objectKey, cacheKey: isDigestAddressed(options.layout) ? (request) => request.digest : objectKey };
}
