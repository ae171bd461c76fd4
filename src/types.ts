import type { KeyObject } from 'node:crypto';
import type { AgentOptions } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SignerHealth, SignerHealthOptions } from './health.js';
import type { RedirectObserver } from './metrics.js';
import type { PushOptions } from './push.js';
import type { RolloutPolicy } from './rollout.js';

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

/**
 * How to trust an `https://` upstream: the TLS options of the agents that send the authorizing
 * HEAD and the pass-through requests (an `https.Agent`'s own option names). Default: Node's
 * bundled CAs (plus `NODE_EXTRA_CA_CERTS`), full verification, no client certificate.
 *
 * @example
 * ```ts
 * upstreamTLS: { ca: readFileSync('/etc/registry-redirect/upstream-ca.pem') }
 * upstreamTLS: { ca, cert: readFileSync('client.crt'), key: readFileSync('client.key') }   // mTLS to the upstream
 * ```
 */
export type UpstreamTlsOptions = Pick<
  AgentOptions,
  'ca' | 'cert' | 'key' | 'passphrase' | 'pfx' | 'servername' | 'minVersion' | 'maxVersion' | 'ciphers' | 'checkServerIdentity'
> & {
  /**
   * `false` accepts any certificate the upstream presents. **Risk:** anyone on the path to the
   * upstream can then answer the authorizing HEAD (and so hand out signed URLs for private
   * blobs) and read every credential. Logged as a warning when the middleware is built. Default `true`.
   */
  rejectUnauthorized?: boolean;
};

/** Timeouts in milliseconds. */
export interface Timeouts {
  /**
   * The authorizing HEAD to the upstream: no answer within this -> 504. Measured from when the
   * HEAD is issued, waiting for a free upstream connection included. Default 10 000.
   */
  authorize?: number;
  /**
   * Pass-through: upstream response headers must arrive within this -> 504. Measured from when the
   * request arrives, waiting for a free upstream connection included; for a request with a body,
   * until its upstream connection is open. After that it bounds inactivity. Default 60 000.
   */
  upstream?: number;
  /** A signer must answer within this, else fall back per `onSignerError`. Default 5 000. */
  signer?: number;
}

/** JWT signature algorithms accepted in token mode: asymmetric only (never `none`, never `HS*`). */
export type TokenAlgorithm = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512';

/**
 * Token mode (proxy mode only): registry bearer tokens (Docker token auth, as distribution's
 * `auth: token`) are verified locally instead of asking the upstream on every blob GET. Existence of
 * the blob in the repository is still confirmed by a HEAD to the upstream (with the caller's token),
 * then cached per (repository, digest) in the decision cache. At least one key source is required:
 * `publicKeys`, `rootCertBundle` or `jwksUrl`. See docs/token-auth.md.
 *
 * @example
 * ```ts
 * tokenAuth: {
 *   issuer: 'my-issuer',
 *   service: 'my-registry',
 *   realm: 'https://auth.example.com/token',
 *   publicKeys: [readFileSync('/etc/registry-redirect/token.pem', 'utf8')],
 *   algorithms: ['RS256'],
 * }
 * ```
 */
export interface TokenAuthOptions {
  /** Expected `iss` claim, exactly. Example: `my-issuer`. Required. */
  issuer: string;
  /** Expected `aud` claim (one of, when `aud` is a list), and `service` in the challenge. Example: `my-registry`. Required. */
  service: string;
  /** Token server URL announced in the `WWW-Authenticate: Bearer realm=...` challenge. Example: `https://auth.example.com/token`. Required. */
  realm: string;
  /**
   * Trusted signing keys: PEM text of public keys (`PUBLIC KEY`, `RSA PUBLIC KEY`) or certificates
   * (`CERTIFICATE`, only its key is trusted), one or more blocks per entry, or `KeyObject`s. A
   * token's `kid` must name one of them (libtrust key ID or RFC 7638 thumbprint); a token whose
   * `x5c` leaf carries one of these keys is accepted too. Default: none.
   */
  publicKeys?: ReadonlyArray<string | Buffer | KeyObject>;
  /**
   * distribution's `rootcertbundle`: PEM text with one or more CA certificates. A token's `x5c`
   * chain must lead to one of them; a `kid` may also name one of their keys. Default: none.
   */
  rootCertBundle?: string | Buffer;
  /**
   * JWKS URL of the token server, e.g. `https://auth.example.com/.well-known/jwks.json`. The key
   * set is fetched on demand and cached (`jwksCacheMaxAge`); known keys are refreshed in the
   * background once half of that has passed. Unknown `kid`s fetch at most 10 times a minute, from
   * a budget the refresh of known keys does not share, and a `kid` the JWKS lacked is remembered
   * for 30 s. A JWK's own `alg`, when present, must equal the token's. Default: none.
   */
  jwksUrl?: string;
  /** How long a fetched JWKS key set is trusted, in milliseconds; refreshed in the background from half of it. Default 600 000 (10 min). */
  jwksCacheMaxAge?: number;
  /** Accepted signature algorithms. Default `['RS256']`. `none` and `HS*` are refused at construction. */
  algorithms?: readonly TokenAlgorithm[];
  /** Tolerated clock difference for `exp` and `nbf`, in milliseconds. Default 60 000 (distribution's leeway). */
  clockSkew?: number;
}

/**
 * The decision cache (proxy mode, upstream and token authorization): positive answers are reused
 * for `ttl`; negative ones for at most one second. Upstream mode keys on (SHA-256 of the caller's
 * `Authorization` + `Cookie`, repository, digest); token mode on (repository, digest), the token
 * itself being verified on every request. Concurrent misses share one upstream HEAD.
 * Trade-off: a permission revoked upstream, or a blob deleted upstream other than through this
 * proxy, may still redirect for up to `ttl`. A `DELETE` of a blob or manifest that succeeds through
 * this proxy drops that blob's (manifest: that repository's) cached decisions at once, in this
 * process only: other replicas and `serve --workers` siblings keep theirs until `ttl`.
 */
export interface DecisionCacheOptions {
  /** How long a positive decision is reused, in milliseconds. Default 30 000. `0` disables the cache. */
  ttl?: number;
  /** Most decisions kept (least recently used are dropped). Default 10 000 (about 0.8 KiB each). */
  maxEntries?: number;
  /**
   * Most bytes the kept decisions may hold on the heap (600 bytes per entry plus its key and digest
   * text), least recently used dropped first. Default 16 MiB. Example `33554432`.
   */
  maxBytes?: number;
}

/**
 * Bounds on what hostile or merely numerous clients can hold (proxy mode; `maxUploadsPerClient`
 * also applies to uploads handed to `next()` in embedded mode).
 *
 * @example
 * ```ts
 * limits: { maxPendingAuthorizations: 1000, maxUploadsPerClient: 8, upstreamSockets: { authorize: 128, uploads: 256, passThrough: 256 } }
 * ```
 */
export interface Limits {
  /**
   * Authorizing HEADs in flight or waiting for an upstream connection. A blob GET that would need
   * one more is answered at once with 503, `Retry-After` (`timeouts.authorize` in seconds, within
   * which the queue drains at worst) and an OCI error body, instead of queueing
   * behind a slow or hung upstream. Requests sharing one HEAD (decision cache) count once.
   * Default 1000. Example `200`.
   */
  maxPendingAuthorizations?: number;
  /**
   * Concurrent uploads (`POST`, `PATCH`, `PUT`) per client address, the address being resolved
   * with `trustedProxies` (a client's own `X-Forwarded-For` is not believed). One more gets 429
   * `TOOMANYREQUESTS` with `Retry-After`. Default `0`: no cap. Example `8`.
   */
  maxUploadsPerClient?: number;
  /**
   * Upstream connections per pool: `authorize` (the authorizing HEADs; more wait, bounded by
   * `maxPendingAuthorizations`), `uploads` (requests with a body), `passThrough` (everything else
   * that streams through). Requests beyond a pool's size wait in order; every wait counts against
   * `timeouts.authorize` / `timeouts.upstream`. Default `{ authorize: 128, uploads: 256, passThrough: 256 }`.
   */
  upstreamSockets?: { authorize?: number; uploads?: number; passThrough?: number };
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
  /** Proxy mode, `https://` upstream only: a private CA, a client certificate, other TLS agent options. See {@link UpstreamTlsOptions}. */
  upstreamTLS?: UpstreamTlsOptions;
  /** Embedded mode only: the host registry's authorization + existence check. */
  authorize?: EmbeddedAuthorize;
  /** Proxy mode only: verify registry bearer tokens locally (token mode). Default: off (the upstream's HEAD decides). See {@link TokenAuthOptions}. */
  tokenAuth?: TokenAuthOptions;
  /** Proxy mode: reuse authorization decisions for a short time. Default `{ ttl: 30000, maxEntries: 10000, maxBytes: 16777216 }`; `false` or `{ ttl: 0 }` disables. See {@link DecisionCacheOptions}. */
  decisionCache?: DecisionCacheOptions | false;
  /**
   * Proxy mode: take a `3xx` on the authorizing HEAD as "authorized and present". Default `false`:
   * only a `2xx` is a grant, and a `3xx` sends the real GET upstream and relays its answer.
   * **Risk:** fronts answer anonymous requests with `302 /login` (SSO) or `301 https://...`
   * (plain-http port); with this on, such an answer hands out a signed URL for a private blob to
   * anyone. Turn it on only when the upstream itself redirects blob HEADs (to its own storage) and
   * nothing in front of it answers unauthenticated requests with a redirect. Example `true`.
   */
  acceptUpstreamRedirect?: boolean;
  /**
   * Redirect even when the signed URL's host name equals the registry's (the request's `Host`, or
   * a trusted proxy's `X-Forwarded-Host`) or is a subdomain of it, ports ignored. Default `false`:
   * such a blob is proxied instead (logged once per signer, counted as fallback reason
   * `same_host`), because skopeo, podman, CRI-O, containerd and oras send the registry's
   * `Authorization` along on such redirects. **Risk:** with `true`, storage or CDN logs receive
   * registry passwords and tokens. Example `true` (only for storage you trust with them).
   */
  allowRedirectToRegistryHost?: boolean;
  /**
   * What to do when the signer throws or times out. `'proxy'` (default): serve the blob from the
   * upstream (embedded mode: call `next()`), so the pull still works. `'error'`: answer 503 with an
   * OCI error body.
   */
  onSignerError?: 'proxy' | 'error';
  /** Timeouts in milliseconds; see {@link Timeouts}. */
  timeouts?: Timeouts;
  /** Connection pools, queue bounds and the per-client upload cap; see {@link Limits}. */
  limits?: Limits;
  /** pino-compatible logger. Default: logs nothing. Credentials and signatures are never logged. */
  logger?: Logger;
  /**
   * Named signers in addition to the default `signer` (which is named `default`), for rollout
   * rules to pick by name. Example `{ s3: s3Signer({...}), cdn: azureSigner({...}) }`. Default none.
   */
  signers?: Readonly<Record<string, Signer>>;
  /**
   * Rollout policy: which authorized blob GETs are redirected, with which signer, and which are
   * proxied. Default: none, i.e. every authorized blob GET is redirected with `signer`.
   * See `docs/rollout.md`. Example `{ rules: [{ percent: 1, action: 'redirect' }], default: 'proxy' }`.
   */
  rollout?: RolloutPolicy;
  /**
   * Peers whose `X-Forwarded-For` is believed (CIDRs). The client address used by `networks` and
   * `percent` is then the right-most untrusted hop. Default none: the socket peer is the client
   * and the header is ignored. Upstream (pass-through and the authorizing HEAD) always gets this
   * proxy's own `X-Forwarded-For` (the incoming list plus the peer from a trusted peer, only the
   * peer otherwise), and `X-Forwarded-Host/-Proto/-Port`, `Forwarded` and `X-Real-IP` from a
   * client that is not a trusted peer are replaced or dropped. Example `["127.0.0.1/32", "10.0.0.0/8"]`.
   */
  trustedProxies?: readonly string[];
  /** Metrics observer, e.g. `prometheusMetrics()`. Default: none. See {@link RedirectObserver}. */
  metrics?: RedirectObserver;
  /**
   * Per-signer circuit breaker and optional storage probe. Default: breaker on (3 consecutive
   * signer failures -> unhealthy, traffic falls back per `onSignerError`, retried after 30 s), no probe.
   */
  health?: SignerHealthOptions;
  /**
   * Push steering (proxy mode only): upload sessions go straight to the registry's direct write
   * address, so layer bytes never pass through this proxy. Default: off (uploads stream through).
   * See {@link PushOptions}. Example `{ endpoint: 'https://registry-direct.example.com' }`.
   */
  push?: PushOptions;
}

/** Connect/Express-style middleware typed on `node:http`. */
export type RegistryRedirectMiddleware = ((
  req: IncomingMessage,
  res: ServerResponse,
  next?: (err?: unknown) => void,
) => void) & {
  /** Stop keep-alive agents and release signer resources. */
  close(): Promise<void>;
  /** Circuit breakers of the signers (for readiness checks and on-demand probes). */
  readonly health: SignerHealth;
};
