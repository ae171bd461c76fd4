import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * What a signer is asked to sign: one blob, for one repository, for one HTTP method.
 * `digest` is the digest the upstream says it stored (its `Docker-Content-Digest`), already
 * validated against the OCI digest grammar, so it is safe to build an object key from.
 */
export interface SignRequest {
  /** Repository name as in the request path, e.g. `library/alpine`. Validated. */
  readonly repository: string;
  /** Validated digest, e.g. `sha256:<64 hex>`. */
  readonly digest: string;
  /** Always `GET`: HEAD is never redirected (S3/GCS signatures are method-bound). */
  readonly method: 'GET';
  /** Blob size in bytes when known (from the upstream's HEAD or the embedded authorize hook). */
  readonly size?: number | undefined;
}

/** A signed, short-lived, read-only URL for exactly one object. */
export interface SignedUrl {
  /** Absolute URL the client is redirected to. */
  readonly url: string;
  /** When the signature stops being accepted by storage (epoch milliseconds). */
  readonly expiresAt: number;
}

/**
 * The signer contract: a small structural interface, not a class hierarchy.
 * `sign` may return synchronously (shared-key signers) or a promise (credential-backed signers).
 *
 * @example
 * ```ts
 * const signer: Signer = { name: 'mine', sign: ({ digest }) => ({ url: `https://cdn.example/${digest}`, expiresAt: Date.now() + 60_000 }) };
 * ```
 */
export interface Signer {
  /** Short name used in logs and metrics, e.g. `azure`. */
  readonly name: string;
  sign(request: SignRequest): SignedUrl | Promise<SignedUrl>;
  /**
   * The storage object key `sign` would sign for this request (its layout applied), e.g.
   * `docker/registry/v2/blobs/sha256/ab/<hex>/data`. Optional: the signed-URL cache keys its entries
   * by it, so one digest in many repositories of a global store is signed once.
   */
  objectKey?(request: SignRequest): string;
  /**
   * Resolve credentials now (default credential chains, key files) so a misconfiguration fails at
   * startup with a message naming the config key, not on the first pull. Optional.
   */
  ready?(): Promise<void>;
  /** Release timers or clients the signer holds. Optional. */
  close?(): void | Promise<void>;
}

/**
 * Maps a (repository, digest) pair to the object key in storage.
 * - `'distribution'` (default): `<rootDirectory>/docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data`
 * - `'oci-per-repo'` (zot, OCI layouts): `<rootDirectory>/<repository>/blobs/<alg>/<hex>`
 * - a function for anything else.
 */
export type BlobLayout = 'distribution' | 'oci-per-repo' | ((repository: string, digest: string) => string);

/** pino-compatible logger (object first, message second). The library default logs nothing. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** The blob a request asks for, parsed from `GET /v2/<name>/blobs/<digest>`. */
export interface BlobTarget {
  readonly repository: string;
  readonly digest: string;
}

/** A positive answer from an embedded `authorize` hook: the caller may read this blob here. */
export interface EmbeddedGrant {
  /** Blob size in bytes, when the host registry knows it. */
  size?: number;
  /** Digest the host registry stored the blob under, when it differs from the requested one. */
  digest?: string;
}

/**
 * Embedded mode: the host registry decides. Return a grant when the caller may read `digest` in
 * `repository` AND it exists there; return `undefined` for anything else (the request then goes to
 * `next()` and the host registry answers it, e.g. with its own 401/404).
 */
export type EmbeddedAuthorize = (
  req: IncomingMessage,
  target: BlobTarget,
) => EmbeddedGrant | undefined | Promise<EmbeddedGrant | undefined>;

/** Timeouts in milliseconds. */
export interface Timeouts {
  /** The authorizing HEAD to the upstream: no answer within this -> 504. Default 10 000. */
  authorize?: number;
  /** Pass-through: upstream response headers must arrive within this -> 504. Default 60 000. */
  upstream?: number;
  /** A signer must answer within this, else fall back per `onSignerError`. Default 5 000. */
  signer?: number;
}

/** Options of {@link registryRedirect}. */
export interface RegistryRedirectOptions {
  /**
   * Upstream registry base URL (proxy mode), e.g. `http://127.0.0.1:5000`. Every route except
   * blob GETs is streamed there; blob GETs are authorized by a HEAD there with the caller's
   * credentials. Omit for embedded mode (then `authorize` is required).
   */
  upstream?: string | URL;
  /** The default signer. Example: `azureSigner({ account, accountKey, container })`. */
  signer: Signer;
  /** Embedded mode only: the host registry's authorization + existence check. */
  authorize?: EmbeddedAuthorize;
  /**
   * What to do when the signer throws or times out. `'proxy'` (default): serve the blob from the
   * upstream (embedded mode: call `next()`), so the pull still works. `'error'`: answer 503 with an
   * OCI error body.
   */
  onSignerError?: 'proxy' | 'error';
  /** Timeouts in milliseconds; see {@link Timeouts}. */
  timeouts?: Timeouts;
  /** pino-compatible logger. Default: logs nothing. Credentials and signatures are never logged. */
  logger?: Logger;
}

/** Connect/Express-style middleware typed on `node:http`. */
export type RegistryRedirectMiddleware = ((
  req: IncomingMessage,
  res: ServerResponse,
  next?: (err?: unknown) => void,
) => void) & {
  /** Stop keep-alive agents and release signer resources. */
  close(): Promise<void>;
};
