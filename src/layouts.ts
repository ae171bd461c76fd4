import { RegistryRedirectError } from './errors.js';
import type { BlobLayout } from './types.js';

/** Function form of a layout: (repository, digest) -> object key (no leading slash). */
export type LayoutFn = (repository: string, digest: string) => string;

/** Strips leading/trailing slashes so `"/registry/"`, `"registry"` and `""` all join cleanly. */
export function normalizeRoot(rootDirectory: string | undefined): string {
  return (rootDirectory ?? '').replace(/^\/+|\/+$/g, '');
}

function splitDigest(digest: string): [string, string] {
  const colon = digest.indexOf(':');
  return [digest.slice(0, colon), digest.slice(colon + 1)];
}

/**
 * Whether a layout's object key depends on the digest alone (`distribution`, the default): then
 * the digest names the object exactly, across repositories.
 */
export function isDigestAddressed(layout: BlobLayout | undefined): boolean {
  return layout === undefined || layout === 'distribution';
}

/**
 * Builds the key function for a layout once, at construction. Digests reaching it are already
 * validated (`sha256`/`sha512`, lowercase hex), so no path traversal can come from them.
 */
export function resolveLayout(layout: BlobLayout | undefined, rootDirectory?: string): LayoutFn {
  const root = normalizeRoot(rootDirectory);
  const prefix = root ? `${root}/` : '';
  if (isDigestAddressed(layout)) {
    return (_repository, digest) => {
      const [alg, hex] = splitDigest(digest);
      return `${prefix}docker/registry/v2/blobs/${alg}/${hex.slice(0, 2)}/${hex}/data`;
    };
  }
  if (layout === 'oci-per-repo') {
    return (repository, digest) => {
      const [alg, hex] = splitDigest(digest);
      return `${prefix}${repository}/blobs/${alg}/${hex}`;
    };
  }
  if (typeof layout === 'function') return layout;
  throw new RegistryRedirectError(
    'CONFIG_INVALID',
    `layout: unknown value ${JSON.stringify(layout)}; write "distribution", "oci-per-repo" or pass a function (repository, digest) => key`,
  );
}
