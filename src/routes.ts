import type { BlobTarget } from './types.js';

// OCI distribution-spec grammar. The spec writes a component as
// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`; `[-]*` may be empty there, which nests two `+`
// quantifiers and backtracks exponentially on a near-miss. `-+` accepts exactly the same names.
const NAME_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);

/** Longest repository name the spec allows (names must be shorter than 256 characters). */
export const MAX_NAME_LENGTH = 255;

const DIGEST_HEX_LENGTH: Readonly<Record<string, number>> = { sha256: 64, sha512: 128 };
/** `sha256:` and `sha512:` are both this long. */
const ALGORITHM_PREFIX_LENGTH = 7;

const BLOBS = '/blobs/';
const PREFIX = '/v2/';

/** True when `name` is a valid OCI repository name. */
export function isValidRepositoryName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

/**
 * True when `digest` is `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`. Other
 * algorithms are valid in the spec but are never redirected: object keys are built from digests,
 * so only the registered algorithms with a fixed, safe alphabet are accepted.
 */
export function isValidDigest(digest: string): boolean {
  // Index arithmetic, no slice and no keyed lookup: it runs on every blob request.
  let hex: number;
  if (digest.startsWith('sha256:')) hex = DIGEST_HEX_LENGTH.sha256!;
  else if (digest.startsWith('sha512:')) hex = DIGEST_HEX_LENGTH.sha512!;
  else return false;
  if (digest.length !== ALGORITHM_PREFIX_LENGTH + hex) return false;
  for (let i = ALGORITHM_PREFIX_LENGTH; i < digest.length; i++) {
    const c = digest.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false; // [0-9a-f]
  }
  return true;
}

/**
 * Parses the path of `GET /v2/<name>/blobs/<digest>[?query]`. Returns `undefined` for anything
 * else (uploads, manifests, malformed or percent-encoded names), which is then passed through
 * untouched so the upstream gives its own answer.
 */
export function parseBlobPath(url: string): BlobTarget | undefined {
  if (!url.startsWith(PREFIX)) return undefined;
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const at = path.lastIndexOf(BLOBS);
  if (at <= PREFIX.length) return undefined;
  const digest = path.slice(at + BLOBS.length);
  if (!isValidDigest(digest)) return undefined;
  const repository = path.slice(PREFIX.length, at);
  if (!isValidRepositoryName(repository)) return undefined;
  return { repository, digest };
}

/** The canonical path of a blob; `parseBlobPath(blobPath(t))` equals `t`. */
export function blobPath(target: BlobTarget): string {
  return `${PREFIX}${target.repository}${BLOBS}${target.digest}`;
}

const MANIFESTS = '/manifests/';
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** A manifest path: `reference` is a tag or a validated digest. */
export interface ManifestTarget {
  readonly repository: string;
  readonly reference: string;
}

/**
 * Parses the path of `/v2/<name>/manifests/<reference>[?query]` (any method), where `reference`
 * is a tag or a `sha256`/`sha512` digest. Returns `undefined` for anything else.
 */
export function parseManifestPath(url: string): ManifestTarget | undefined {
  if (!url.startsWith(PREFIX)) return undefined;
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const at = path.lastIndexOf(MANIFESTS);
  if (at <= PREFIX.length) return undefined;
  const reference = path.slice(at + MANIFESTS.length);
  if (!isValidDigest(reference) && !TAG_RE.test(reference)) return undefined;
  const repository = path.slice(PREFIX.length, at);
  if (!isValidRepositoryName(repository)) return undefined;
  return { repository, reference };
}
