import type { ServerResponse } from 'node:http';

/** Stable codes for every failure this package reports. */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'DEPENDENCY_MISSING'
  | 'UPSTREAM_UNREACHABLE'
  | 'UPSTREAM_TIMEOUT'
  | 'AUTHORIZE_QUEUE_FULL'
  | 'SIGNER_FAILED'
  | 'SIGNER_TIMEOUT';

/** The one error type of this package: a stable `code`, a message that says what to do, a `cause`. */
export class RegistryRedirectError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RegistryRedirectError';
    this.code = code;
  }
}

/** Throws the construction-time error: the message names the key and the fix. */
export function configError(message: string, cause?: unknown): never {
  throw new RegistryRedirectError('CONFIG_INVALID', message, cause === undefined ? undefined : { cause });
}

/** OCI distribution error codes this package emits. */
export type OciErrorCode = 'UNAVAILABLE' | 'UNAUTHORIZED' | 'DENIED' | 'UNSUPPORTED' | 'TOOMANYREQUESTS';

/**
 * Writes an OCI error body `{"errors":[{"code","message","detail"}]}`. Never throws: when headers
 * are already out, the connection is reset instead, so a client never waits on a broken response.
 */
export function sendOciError(
  res: ServerResponse,
  status: number,
  code: OciErrorCode,
  message: string,
  detail?: unknown,
  extraHeaders?: Record<string, string>,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ errors: [{ code, message, detail: detail ?? null }] });
  res.writeHead(status, {
    ...extraHeaders,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Docker-Distribution-API-Version': 'registry/2.0',
  });
  res.end(body);
}
