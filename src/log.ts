import type { Logger } from './types.js';

const noop = (): void => {};

/** The library default: logs nothing. */
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };

// Parameters that carry a signature or credential in the URLs we produce or receive. Error texts
// quote them in many shapes (`?sig=`, `&sig=`, `boom sig=`, `a;sig=`, `"sig=`, `%26sig%3D`), so a
// name counts wherever it is not the tail of a longer name, and `=` may be percent-encoded.
const SECRET_PARAMS =
  /((?:(?<![A-Za-z0-9_.~-])|(?<=%26|%3F))(?:sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|policy|key-pair-id|verify|token|md5|skoid|sktid|skt|ske|sks|skv|sdd)(?:=|%3D))[^&\s"';,<>]*/gi;
const AUTH_HEADER_VALUE = /\b(authorization|cookie|bearer|basic)(["']?\s*[:=]?\s*["']?)(?:bearer\s+|basic\s+)?[A-Za-z0-9._~+/=-]{6,}/gi;
const ACCOUNT_KEY = /(AccountKey=)[^;\s"']+/gi;

/**
 * Removes signatures, credentials and account keys from free text (error messages of SDKs may
 * quote the request URL). Applied to everything this package logs that it did not write itself.
 */
export function redact(text: string): string {
  return text
    .replace(SECRET_PARAMS, '$1REDACTED')
    .replace(ACCOUNT_KEY, '$1REDACTED')
    .replace(AUTH_HEADER_VALUE, '$1$2REDACTED');
}

/** A signed URL without its query string: safe to log. */
export function urlForLog(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : `${url.slice(0, q)}?REDACTED`;
}

/** A loggable summary of an unknown error: code and redacted message only. */
export function errorForLog(err: unknown): { code?: string; message: string } {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { ...(typeof code === 'string' ? { code } : {}), message: redact(err.message) };
  }
  return { message: redact(String(err)) };
}
