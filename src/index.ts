export { registryRedirect } from './middleware.js';
export { azureSigner, type AzureSignerOptions } from './signers/azure.js';
export { parseBlobPath, blobPath, isValidDigest, isValidRepositoryName } from './routes.js';
export { resolveLayout } from './layouts.js';
export { RegistryRedirectError, type ErrorCode } from './errors.js';
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
