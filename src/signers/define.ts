import type { Signer } from '../types.js';
import { configError } from './common.js';

/**
 * Declares a custom signer (any storage or CDN this package does not ship), checking its shape at
 * construction so a typo fails at startup, not on the first pull. `sign` receives
 * `{ repository, digest, method: 'GET', size? }` after the caller was authorized and returns
 * `{ url, expiresAt }` (or a promise of it).
 *
 * @example
 * ```ts
 * const signer = defineSigner({
 *   name: 'my-cdn',
 *   sign: ({ digest }) => {
 *     const expiresAt = Date.now() + 10 * 60_000;
 *     return { url: `https://cdn.example.com/blobs/${digest}?exp=${expiresAt}&sig=${mySign(digest, expiresAt)}`, expiresAt };
 *   },
 * });
 * ```
 */
export function defineSigner<S extends Signer>(signer: S): S {
  if (signer === null || typeof signer !== 'object') configError('defineSigner(signer): pass an object { name, sign }');
  if (typeof signer.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(signer.name)) {
    configError(`defineSigner: name ${JSON.stringify(signer.name)} must be 1-64 letters, digits, dots, underscores or hyphens (it labels logs and metrics), e.g. "my-cdn"`);
  }
  if (typeof signer.sign !== 'function') configError(`defineSigner: signer "${signer.name}" needs a sign({ repository, digest, method, size }) function returning { url, expiresAt }`);
  for (const method of ['objectKey', 'cacheKey', 'ready', 'close'] as const) {
    if (signer[method] !== undefined && typeof signer[method] !== 'function') {
      configError(`defineSigner: signer "${signer.name}": ${method} must be a function when set`);
    }
  }
  return signer;
}
