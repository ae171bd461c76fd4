import type { KeyObject } from 'node:crypto';
import type { AgentOptions } from 'node:https';
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
   * The signed-URL cache's key: equal for two requests exactly when `sign` would sign the same
   * object. Optional; the cache uses `objectKey` without it. The built-in signers return the
   * digest with the default layout (where the object key depends on the digest alone), which is
   * cheaper to look up than the object key.
   */
  cacheKey?(request: SignRequest): string;
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

/**
 * What the cache did for one request: `hit` (a cached URL, or joined a signing already under way),
 * `miss` (nothing cached: signed), `refresh` (the cached URL was too close to its expiry: re-signed).
 */
export type CacheResult = 'hit' | 'miss' | 'refresh';

/** What happened to an authorized blob GET (label `action`). */
export type DecisionAction =
  /** 307 to a signed URL. */
  | 'redirect'
  /** Served from the upstream: by policy, override header, unhealthy or failing signer. */
  | 'proxy'
  /** Shadow mode: the policy chose redirect and signing worked, but the blob was proxied. */
  | 'shadow'
  /** The signer failed and `onSignerError: 'error'` answered 503. */
  | 'error';

/** The authorizing step's outcome (label `outcome`). */
export type AuthorizeOutcome = 'granted' | 'denied' | 'error';

/**
 * Why a redirect fell back (label `reason` of the fallbacks counter). `same_host`: the signed URL's
 * host is the registry's host or a subdomain of it, where clients send their registry credentials,
 * so the blob was proxied (see `allowRedirectToRegistryHost`).
 */
export type FallbackReason = 'signer_error' | 'signer_timeout' | 'signer_unhealthy' | 'same_host';

/**
 * The events the middleware reports. Every label value comes from configuration (signer names,
 * rule names) or a fixed set, never from the request: credentials, repositories and client
 * addresses never become labels. Implement it to feed another metrics system; `prometheusMetrics()`
 * is the built-in one. Every method is optional.
 */
export interface RedirectObserver {
  /** One per authorized blob GET: what was done, with which signer (`none` if none), and why. */
  decision?(action: DecisionAction, signer: string, reason: string): void;
  /** A signer call finished (`ok: false` on error or timeout). */
  signed?(signer: string, seconds: number, ok: boolean): void;
  /** The authorizing step (upstream HEAD or embedded hook) finished. */
  authorized?(seconds: number, outcome: AuthorizeOutcome): void;
  /** A redirect was replaced by a fallback: `onSignerError`, or proxying for `same_host`. */
  fallback?(signer: string, reason: FallbackReason): void;
  /** Blob bytes delivered: `redirected` (size of redirected blobs) or `proxied` (Content-Length served). */
  bytes?(delivery: 'redirected' | 'proxied', bytes: number): void;
  /** A signer's circuit breaker changed (or was first reported). */
  signerHealth?(signer: string, healthy: boolean): void;
  /** A storage probe through a signer finished. */
  probe?(signer: string, ok: boolean): void;
  /** A signed-URL cache lookup (wire `cachedSigner`'s `onResult` here). */
  cacheResult?(signer: string, result: CacheResult): void;
  /** Origin mode: one answered origin request (status 200, 206, 304, 403, 404, 405, 416) and the body bytes sent. */
  origin?(status: number, bytes: number): void;
  /** One per upload-start POST seen with `push` configured: what was done with it, and why (see `UploadReason`). */
  upload?(action: UploadAction, reason: string): void;
}

/**
 * A storage probe: fetch one known blob through a fresh signed URL (`Range: bytes=0-0`, so only
 * one byte moves). Any 2xx is a pass; anything else, a network error or a timeout is a failure.
 */
export interface SignerProbeOptions {
  /** Repository the blob belongs to (per-repository layouts need it). Example `library/alpine`. */
  repository: string;
  /** Digest of a blob that exists in every probed storage. Example `sha256:<64 hex>`. */
  digest: string;
  /** Milliseconds between probes. Default 30 000. */
  interval?: number;
  /** Milliseconds a probe may take (signing plus the fetch). Default 5 000. */
  timeout?: number;
  /** Names of the signers to probe (`default` is the `signer` option). Default: all. */
  signers?: readonly string[];
}

/**
 * Circuit breaker per signer (option `health`). After `failureThreshold` consecutive failures
 * (probe failures and signer errors during requests both count) the signer is unhealthy and the
 * blobs it would redirect fall back per `onSignerError` (default: proxied). It is healthy again
 * after the next passing probe or, for a signer without a probe, after `retryAfter` when the next
 * request signs successfully.
 */
export interface SignerHealthOptions {
  /** Consecutive failures that open the breaker. Default 3. */
  failureThreshold?: number;
  /** Signers without a probe: milliseconds before traffic tries the signer again. Default 30 000. */
  retryAfter?: number;
  /** Periodic storage probe. Default none. */
  probe?: SignerProbeOptions;
}

/** The outcome of one probe. */
export interface ProbeResult {
  readonly ok: boolean;
  /** Storage's HTTP status, when it answered. */
  readonly status?: number;
  /** Why it failed (redacted: never a signature). */
  readonly error?: string;
  /** Duration in milliseconds. */
  readonly ms: number;
}

/** The state of one signer as `/readyz` and `check` report it. */
export interface SignerStatus {
  readonly healthy: boolean;
  readonly consecutiveFailures: number;
  /** Epoch milliseconds of the last state change. */
  readonly since: number;
  readonly lastError?: string;
  readonly lastProbe?: ProbeResult & { readonly at: number };
}

/** Health of every configured signer. */
export interface SignerHealth {
  /** Hot path: may this signer be used now? */
  available(name: string): boolean;
  /** Report a successful signing (closes a half-open breaker). */
  success(name: string): void;
  /** Report a failed signing. */
  failure(name: string, err: unknown): void;
  /** True when at least one signer is healthy. */
  anyHealthy(): boolean;
  /** Snapshot of every signer. */
  status(): Record<string, SignerStatus>;
  /** Run the probe of every probed signer now and apply the results. */
  probeNow(): Promise<Record<string, ProbeResult>>;
  /** Publish the current state to the observer (after a reload made this instance current). */
  publish(): void;
  /** Stop probing. */
  close(): void;
}

/** What a rule (or the default) does with an authorized blob GET. */
export type RolloutAction = 'redirect' | 'proxy';

/**
 * How a client is identified for sticky `percent` rules. The key is only ever hashed into a
 * bucket; it is never logged, stored, or used as a metric label.
 * - `'ip'` (default): the client address (see `trustedProxies`).
 * - `'subject'`: the user name of Basic credentials, or the `sub` claim of a Bearer JWT (decoded,
 *   not verified: a client that forges its subject only picks its own bucket; `percent` is a
 *   rollout knob, never access control). Falls back to the client address for anonymous pulls
 *   and opaque tokens. The password or token itself never enters the key.
 * - a function `(req) => string | undefined` for anything else (`undefined` -> client address).
 */
export type RolloutClientKey = 'ip' | 'subject' | ((req: IncomingMessage) => string | undefined);

/**
 * One rollout rule: conditions plus an action. Every condition given must hold (AND); within a
 * list, any entry may match (OR). A rule without conditions matches every request.
 *
 * @example
 * ```ts
 * { networks: ['10.0.0.0/8'], action: 'redirect', signer: 's3' }
 * { repositories: ['internal/**'], action: 'proxy' }
 * { percent: 30, action: 'redirect', signer: 'cdn' }
 * ```
 */
export interface RolloutRule {
  /** Label used as the decision `reason` in metrics and logs (`rule:<name>`). Default `rules[<index>]`. Example `vpc`. */
  name?: string;
  /**
   * Sticky share of clients, 0-100 (two decimals). A client is in when the stable hash of its
   * key (see `clientKey`) falls below the share, so raising 5 -> 20 keeps the first 5% in and
   * every replica with the same `seed` agrees. Example `1`.
   */
  percent?: number;
  /**
   * Repository globs (picomatch: `*` stays inside one path segment, `**` spans segments and also
   * matches the prefix itself). A list includes; entries starting with `!` exclude. Or
   * `{ include, exclude }`. Example `["internal/**", "!internal/public/**"]`.
   */
  repositories?: readonly string[] | { include?: readonly string[]; exclude?: readonly string[] };
  /** Client networks, IPv4 and IPv6 CIDRs or single addresses. Example `["10.0.0.0/8", "fd00::/8"]`. */
  networks?: readonly string[];
  /**
   * User-Agent regular expressions, case-insensitive, tested against the first 1024 characters.
   * A list is an allow list; `{ allow, deny }` for both. Fragile: BuildKit and CRI send a bare
   * `containerd/<v>`; prefer `networks`. Example `{ deny: ["^regclient/"] }`.
   */
  userAgents?: readonly string[] | { allow?: readonly string[]; deny?: readonly string[] };
  /**
   * Matches only blobs at least this large: bytes, or a size like `"8MiB"`, `"10MB"`. The size is
   * the upstream's `Content-Length` on the authorizing HEAD; an unknown size never matches.
   */
  minSize?: number | string;
  /**
   * `false`: matches only requests without a `Range` header (so resumes are served by the
   * upstream, as zot does). `true`: matches only ranged requests. Omitted: both (the default is to
   * redirect ranged requests too).
   */
  range?: boolean;
  /** `redirect` (to a signed URL) or `proxy` (serve the bytes from the upstream). */
  action: RolloutAction;
  /** Redirect only: a key of the `signers` map. Omitted -> the default `signer`. */
  signer?: string;
}

/** The default decision: an action, or a redirect to a named signer. */
export type RolloutDefault = RolloutAction | { action: RolloutAction; signer?: string };

/**
 * The rollout policy (option `rollout`): ordered rules, first match wins, then `default`. Without
 * a policy every authorized blob GET is redirected with the default signer.
 *
 * @example
 * ```ts
 * rollout: {
 *   rules: [
 *     { networks: ['10.0.0.0/8'], action: 'proxy' },
 *     { percent: 30, action: 'redirect', signer: 'cdn' },
 *   ],
 *   default: 'proxy',
 * }
 * ```
 */
export interface RolloutPolicy {
  /** Rules, first match wins. Default none. */
  rules?: readonly RolloutRule[];
  /** Decision when no rule matches. Required: `"redirect"` (rules are exceptions) or `"proxy"` (rules opt in). */
  default: RolloutDefault;
  /**
   * `'enforce'` (default) acts on decisions. `'shadow'` computes each decision and signs, logs and
   * counts it (`action="shadow"`), but serves every blob from the upstream: validate a policy on
   * live traffic before any client sees a redirect.
   */
  mode?: 'enforce' | 'shadow';
  /** Client identity for `percent`. Default `'ip'`. See {@link RolloutClientKey}. */
  clientKey?: RolloutClientKey;
  /** Mixed into the `percent` hash; change it to draw a different cohort. Default `""`. Example `"2026-05"`. */
  seed?: string;
  /**
   * Name of a request header that forces `proxy` for that request (debugging: "is the CDN the
   * problem?"). Off by default. It can only ever turn a redirect off, so any client may send it.
   * Example `X-Registry-Redirect-Bypass`.
   */
  overrideHeader?: string;
}

/** A decision for one authorized blob GET. Frozen, shared between requests. */
export interface RolloutDecision {
  readonly action: RolloutAction;
  /** Signer name for a redirect (`default` or a key of `signers`); `none` for proxy. */
  readonly signer: string;
  /** Why: `default`, `rule:<name>`, `rules[<i>]` or `override_header`. Bounded: a metric label. */
  readonly reason: string;
}

/** A compiled policy; `decide` does no parsing or compiling. */
export interface CompiledRollout {
  readonly mode: 'enforce' | 'shadow';
  decide(req: IncomingMessage, repository: string, size: number | undefined): RolloutDecision;
}

/** What a push rule (or the default) does with an upload-session POST. */
export type PushAction = 'steer' | 'proxy';

/**
 * One push rule: the conditions of a rollout rule (`percent`, `repositories`, `networks`,
 * `userAgents`; every condition given must hold) plus an action. First match wins.
 *
 * @example
 * ```ts
 * { networks: ['10.0.0.0/8'], action: 'steer' }
 * { repositories: ['mirror/**'], action: 'proxy' }
 * ```
 */
export interface PushRule extends Pick<RolloutRule, 'name' | 'percent' | 'repositories' | 'networks' | 'userAgents'> {
  /** `steer` (the upload goes to `endpoint`) or `proxy` (it streams through this proxy). */
  action: PushAction;
}

/**
 * Push steering (option `push`, proxy mode only): upload sessions are sent straight to the
 * registry's direct write address, so layer bytes never pass through this proxy.
 *
 * Only `POST /v2/<name>/blobs/uploads/` without a body and without `mount`/`from`/`digest` is
 * steered; the upstream still answers that POST with the caller's credentials, so no session
 * opens without its yes.
 *
 * @example
 * ```ts
 * push: {
 *   endpoint: 'https://registry-direct.example.com',
 *   rules: [{ repositories: ['mirror/**'], action: 'proxy' }],
 *   default: 'steer',
 * }
 * ```
 */
export interface PushOptions {
  /**
   * The registry's direct write address: scheme, host, port and an optional path prefix, e.g.
   * `https://registry-direct.example.com` or `http://10.0.0.5:5000/registry`. Clients send their
   * registry credentials there (see the README's security notes). Required.
   */
  endpoint: string | URL;
  /**
   * `'steer'` (default): the POST goes upstream as any other request and the `Location` of its
   * `202` is pointed at `endpoint`, so PATCH/PUT go there with the client's credentials.
   * `'redirect'`: answer the POST itself with `307` to `endpoint`. Go clients (skopeo, podman,
   * containerd) drop `Authorization` on a redirect to another host, so this works only for
   * anonymous pushes or an endpoint on the same host name.
   */
  mode?: 'steer' | 'redirect';
  /** Rules, first match wins. Default none. */
  rules?: readonly PushRule[];
  /** Action when no rule matches. Default `'steer'`. */
  default?: PushAction;
  /** Decide, log and count (`action="shadow"`), but stream every upload through the proxy. Default `false`. */
  shadow?: boolean;
  /** Client identity for `percent` rules, as `rollout.clientKey`. Default `'ip'`. */
  clientKey?: RolloutPolicy['clientKey'];
  /** Mixed into the `percent` hash, as `rollout.seed`. Default `""`. */
  seed?: string;
}

/** What happened to an upload-session POST (label `action` of the upload decisions counter). */
export type UploadAction =
  /** The 202's `Location` now names the write endpoint. */
  | 'steer'
  /** `mode: redirect`: the POST was answered with 307 to the write endpoint. */
  | 'redirect'
  /** The upload streams through the proxy (policy, mount, monolithic, upstream's refusal). */
  | 'proxy'
  /** Shadow mode: it would have been steered. */
  | 'shadow';

/**
 * Why (label `reason`): `default`, `rule:<name>` or `rules[<i>]` from the policy; `mount`
 * (cross-repository mount), `monolithic` (a POST carrying the blob), `not_accepted` (the upstream
 * answered something other than 202, e.g. its 401), `unexpected_location` (a 202 whose `Location`
 * is not this repository's upload session, left alone).
 */
export type UploadReason = string;
