export { registryRedirect } from './middleware.js';
// Cloud signers are subpath exports (`registry-redirect/azure`, `/s3`, `/gcs`, `/cloudfront`): each
// imports its SDK, an optional peer dependency, so only the one a user imports must be installed.
export { hmacSigner, HMAC_PRESETS, type HmacSignerOptions, type HmacAlgorithm, type HmacPreset, type TokenEncoding } from './signers/hmac.js';
export { originSigner, ORIGIN_PATH_PREFIX, type OriginSigner, type OriginSignerOptions, type OriginDescriptor, type OriginToken } from './signers/origin.js';
export { createOriginHandler, type OriginHandler, type OriginHandlerOptions } from './origin/server.js';
export { hmacTokenVerifier, type HmacTokenVerifier, type TokenVerdict } from './signers/hmac.js';
export { defineSigner } from './signers/define.js';
export { cachedSigner, type CachedSignerOptions, type CacheResult } from './signers/cache.js';
export type { LayoutOptions } from './signers/common.js';
export { parseBlobPath, blobPath, isValidDigest, isValidRepositoryName } from './routes.js';
export { resolveLayout } from './layouts.js';
export { RegistryRedirectError, type ErrorCode } from './errors.js';
export {
  compileRollout,
  stickyBucket,
  type CompileRolloutOptions,
  type CompiledRollout,
  type RolloutAction,
  type RolloutClientKey,
  type RolloutDecision,
  type RolloutDefault,
  type RolloutPolicy,
  type RolloutRule,
} from './rollout.js';
export type { PushAction, PushOptions, PushRule, UploadAction, UploadReason } from './push.js';
export {
  prometheusMetrics,
  type AuthorizeOutcome,
  type DecisionAction,
  type FallbackReason,
  type PrometheusMetrics,
  type PrometheusMetricsOptions,
  type RedirectObserver,
} from './metrics.js';
export { probeSigner, type ProbeResult, type SignerHealth, type SignerHealthOptions, type SignerProbeOptions, type SignerStatus } from './health.js';
export type {
  BlobLayout,
  BlobTarget,
  DecisionCacheOptions,
  Limits,
  EmbeddedAuthorize,
  EmbeddedGrant,
  Logger,
  RegistryRedirectMiddleware,
  RegistryRedirectOptions,
  SignRequest,
  SignedUrl,
  Signer,
  Timeouts,
  TokenAlgorithm,
  TokenAuthOptions,
  UpstreamTlsOptions,
} from './types.js';
