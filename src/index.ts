export { registryRedirect } from './middleware.js';
export { azureSigner, type AzureSignerOptions } from './signers/azure.js';
export { s3Signer, type S3SignerOptions } from './signers/s3.js';
export { gcsSigner, type GcsSignerOptions } from './signers/gcs.js';
export { cloudfrontSigner, type CloudFrontSignerOptions } from './signers/cloudfront.js';
export { hmacSigner, HMAC_PRESETS, type HmacSignerOptions, type HmacAlgorithm, type HmacPreset, type TokenEncoding } from './signers/hmac.js';
export { defineSigner } from './signers/define.js';
export { cachedSigner, type CachedSignerOptions, type CacheResult } from './signers/cache.js';
export type { LayoutOptions } from './signers/common.js';
export { parseBlobPath, blobPath, isValidDigest, isValidRepositoryName } from './routes.js';
export { resolveLayout } from './layouts.js';
export { RegistryRedirectError, type ErrorCode } from './errors.js';
export type {
  BlobLayout,
  BlobTarget,
  EmbeddedAuthorize,
  EmbeddedGrant,
  Logger,
  RegistryRedirectMiddleware,
  RegistryRedirectOptions,
  SignRequest,
  SignedUrl,
  Signer,
  Timeouts,
} from './types.js';
