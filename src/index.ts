export { registryRedirect } from './middleware.js';
export { azureSigner, type AzureSignerOptions } from './signers/azure.js';
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
