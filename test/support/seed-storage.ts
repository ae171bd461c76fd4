/**
 * Copy a filesystem registry's blob tree into other storage, the way a real
 * deployment shares one bucket/container between the registry and the CDN.
 *
 * distribution has no Azure driver here (and its s3 driver cannot push to
 * s3rver), so e2e tests push through a filesystem registry and then copy
 * `docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data` into the target storage.
 *
 * @module
 */
import { cp, readFile, readdir, stat } from 'node:fs/promises';
import { join, posix, relative, sep } from 'node:path';
import type { ContainerClient } from '@azure/storage-blob';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';

/** Relative path of the blob tree inside a distribution storage root. */
export const REGISTRY_BLOBS_PREFIX = 'docker/registry/v2/blobs';

/** One copied object. */
export interface CopiedObject {
  /** Object/blob name in the target storage. */
  name: string;
  size: number;
}

/** Recursively list regular files under `dir` (absolute paths, sorted). */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/**
 * Object key of a digest in distribution's layout under `rootDirectory`:
 * `[root/]docker/registry/v2/blobs/sha256/ab/abcd.../data` (no leading slash).
 */
export function registryBlobKey(digest: string, rootDirectory = ''): string {
  const [alg, hex] = digest.split(':');
  if (!alg || !hex || hex.length < 2) throw new Error(`bad digest ${digest}`);
  return joinKey(rootDirectory, `${REGISTRY_BLOBS_PREFIX}/${alg}/${hex.slice(0, 2)}/${hex}/data`);
}

function joinKey(rootDirectory: string, key: string): string {
  const root = rootDirectory.replace(/^\/+|\/+$/g, '');
  return root === '' ? key : `${root}/${key}`;
}

/** Every file of the registry's blob tree with the object name it gets under `rootDirectory`. */
async function registryBlobFiles(storageRoot: string, rootDirectory: string): Promise<{ file: string; name: string }[]> {
  const base = join(storageRoot, ...REGISTRY_BLOBS_PREFIX.split('/'));
  return (await listFiles(base)).map((file) => ({
    file,
    name: joinKey(rootDirectory, `${REGISTRY_BLOBS_PREFIX}/${relative(base, file).split(sep).join(posix.sep)}`),
  }));
}

/**
 * Upload every file under `<storageRoot>/docker/registry/v2/blobs/` to `container`
 * as `<rootDirectory>/docker/registry/v2/blobs/...` (no leading slash; none of the
 * prefix when `rootDirectory` is empty). Creates the container if needed.
 * Blobs are stored as `application/octet-stream` without `Content-Encoding`.
 */
export async function copyRegistryBlobsToAzure(
  storageRoot: string,
  container: ContainerClient,
  rootDirectory = '',
): Promise<CopiedObject[]> {
  await container.createIfNotExists();
  const copied: CopiedObject[] = [];
  for (const { file, name } of await registryBlobFiles(storageRoot, rootDirectory)) {
    const { size } = await stat(file);
    await container.getBlockBlobClient(name).uploadFile(file, {
      blobHTTPHeaders: { blobContentType: 'application/octet-stream' },
    });
    copied.push({ name, size });
  }
  return copied;
}

/**
 * Upload every file under `<storageRoot>/docker/registry/v2/blobs/` to `bucket` through the S3
 * API, as `<rootDirectory>/docker/registry/v2/blobs/...` (the keys distribution's s3 driver writes).
 * The bucket must exist. Objects are `application/octet-stream` without `Content-Encoding`.
 */
export async function copyRegistryBlobsToS3(
  storageRoot: string,
  client: S3Client,
  bucket: string,
  rootDirectory = '',
): Promise<CopiedObject[]> {
  const copied: CopiedObject[] = [];
  for (const { file, name } of await registryBlobFiles(storageRoot, rootDirectory)) {
    const body = await readFile(file);
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: name, Body: body, ContentType: 'application/octet-stream' }));
    copied.push({ name, size: body.length });
  }
  return copied;
}

/**
 * Copy `<storageRoot>/docker/registry/v2/blobs/` to `<destDir>/docker/registry/v2/blobs/`
 * (e.g. to seed an emulator that serves files from disk). Returns the copied keys.
 */
export async function copyRegistryBlobsToDir(storageRoot: string, destDir: string): Promise<CopiedObject[]> {
  const src = join(storageRoot, ...REGISTRY_BLOBS_PREFIX.split('/'));
  const dest = join(destDir, ...REGISTRY_BLOBS_PREFIX.split('/'));
  await cp(src, dest, { recursive: true });
  const copied: CopiedObject[] = [];
  for (const file of await listFiles(dest)) {
    copied.push({ name: relative(destDir, file).split(sep).join(posix.sep), size: (await stat(file)).size });
  }
  return copied;
}
