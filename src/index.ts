export { registryRedirect } from './middleware.js';
export { azureSigner, type AzureSignerOptions } from './signers/azure.js';
export { parseBlobPath, blobPath, isValidDigest, isValidRepositoryName } from './routes.js';
export { resolveLayout } from './layouts.js';
export { RegistryRedirectError, type ErrorCode } from './errors.js';
export {
  compileRollout,
  stickyBucket,
  type CompiledRollout,
  type RolloutAction,
  type RolloutClientKey,
  type RolloutDecision,
  type RolloutDefault,
  type RolloutPolicy,
  type RolloutRule,
} from './rollout.js';
export { createClientIpResolver, type ClientAddress, type ClientIpResolver } from './client-ip.js';
export {
  prometheusMetrics,
  type AuthorizeOutcome,
  type CacheResult,
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
} from './types.js';
