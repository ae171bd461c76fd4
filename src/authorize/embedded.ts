import type { EmbeddedAuthorize } from '../types.js';
import type { Authorizer } from './types.js';

/** Embedded mode: the host registry's own hook decides; anything but a grant is `deny` (-> `next()`). */
export function createEmbeddedAuthorizer(hook: EmbeddedAuthorize): Authorizer {
  return async (req, _res, target) => {
    const grant = await hook(req, target);
    if (!grant) return 'deny';
    const size = typeof grant.size === 'number' && Number.isSafeInteger(grant.size) && grant.size >= 0 ? grant.size : undefined;
    return { size, digest: grant.digest ?? target.digest };
  };
}
