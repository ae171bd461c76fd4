import type { BlobTarget, EmbeddedAuthorize, EmbeddedGrant } from '../types.js';
import { isPromiseLike } from '../promise.js';
import type { AuthOutcome, Authorizer } from './types.js';

function toOutcome(grant: EmbeddedGrant | undefined, target: BlobTarget): AuthOutcome {
  if (!grant) return 'deny';
  const size = typeof grant.size === 'number' && Number.isSafeInteger(grant.size) && grant.size >= 0 ? grant.size : undefined;
  return { size, digest: grant.digest ?? target.digest };
}

/**
 * Embedded mode: the host registry's own hook decides; anything but a grant is `deny` (-> `next()`).
 * A synchronous hook gets a synchronous answer (no promise on the hot path).
 */
export function createEmbeddedAuthorizer(hook: EmbeddedAuthorize): Authorizer {
  return (req, _res, target) => {
    const grant = hook(req, target);
    // Any thenable is awaited: only a plain object is a grant.
    return isPromiseLike(grant) ? Promise.resolve(grant).then((g) => toOutcome(g, target)) : toOutcome(grant, target);
  };
}
