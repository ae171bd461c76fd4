/**
 * Build a small, valid, deterministic OCI image layout on disk without docker.
 *
 * Each layer is a gzip'ed ustar archive holding one regular file whose content
 * is pseudo-random bytes derived from the layer's seed (AES-256-CTR keystream
 * keyed by sha256(seed)): incompressible, so an 8 MiB layer is really ~8 MiB on
 * the wire, and fast to generate. Everything is deterministic (mtime 0, uid/gid 0,
 * fixed names, gzip header without a timestamp), so the same options always yield
 * the same digests.
 *
 * @module
 */
import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export const MEDIA_TYPE_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MEDIA_TYPE_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_TYPE_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_TYPE_INDEX = 'application/vnd.oci.image.index.v1+json';

/** Layer request: `size` is the size of the file inside the tar (payload bytes). */
export interface LayerSpec {
  size: number;
  /** Seed for the content (default `layer-<index>`). */
  seed?: string;
}

/** A blob written into the layout. */
export interface BlobInfo {
  /** `sha256:<hex>` */
  digest: string;
  /** Size in bytes of the blob as stored/pushed (compressed size for layers). */
  size: number;
}

/** Result of {@link makeOciImage}. */
export interface OciImage {
  /** The layout directory. */
  dir: string;
  /** skopeo/containers-image reference: `oci:DIR:TAG`. */
  ref: string;
  tag: string;
  manifestDigest: string;
  manifestSize: number;
  configDigest: string;
  configSize: number;
  /** Layers in manifest order; `diffId` is the sha256 of the uncompressed tar. */
  layers: Array<BlobInfo & { diffId: string }>;
}

/** `sha256:<hex>` of `data`. */
export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Deterministic incompressible bytes from `seed` (AES-256-CTR keystream). */
export function pseudoRandomBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(`registry-redirect-test:${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

function octal(value: number, width: number): string {
  // width includes the trailing NUL
  const s = value.toString(8);
  if (s.length > width - 1) throw new Error(`tar: value ${value} too large for ${width}-byte field`);
  return s.padStart(width - 1, '0') + '\0';
}

/** A 512-byte POSIX ustar header for a regular file (mode 0644, uid/gid 0, mtime 0). */
function ustarHeader(name: string, size: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`tar: name too long: ${name}`);
  const h = Buffer.alloc(512, 0);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(0o644, 8), 100, 8, 'ascii'); // mode
  h.write(octal(0, 8), 108, 8, 'ascii'); // uid
  h.write(octal(0, 8), 116, 8, 'ascii'); // gid
  h.write(octal(size, 12), 124, 12, 'ascii'); // size
  h.write(octal(0, 12), 136, 12, 'ascii'); // mtime
  h.write('        ', 148, 8, 'ascii'); // chksum placeholder: 8 spaces
  h.write('0', 156, 1, 'ascii'); // typeflag: regular file
  h.write('ustar\0', 257, 6, 'ascii'); // magic
  h.write('00', 263, 2, 'ascii'); // version
  h.write('root', 265, 32, 'ascii'); // uname
  h.write('root', 297, 32, 'ascii'); // gname
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}

/** An uncompressed tar with a single regular file, terminated by two zero blocks. */
export function singleFileTar(name: string, content: Buffer): Buffer {
  const pad = (512 - (content.length % 512)) % 512;
  return Buffer.concat([ustarHeader(name, content.length), content, Buffer.alloc(pad), Buffer.alloc(1024)]);
}

/** Compact JSON bytes (key order as written, so output is deterministic). */
function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

async function writeBlob(dir: string, data: Buffer): Promise<BlobInfo> {
  const digest = sha256Digest(data);
  await writeFile(join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length)), data);
  return { digest, size: data.length };
}

/**
 * Write an OCI image layout into `dir` (created if needed) and return its digests.
 *
 * @param dir - target directory (should be empty or new).
 * @param opts.layers - layers to create (default: one 4 KiB layer).
 * @param opts.tag - tag in `index.json` (default `latest`).
 */
export async function makeOciImage(
  dir: string,
  opts: { layers?: LayerSpec[]; tag?: string } = {},
): Promise<OciImage> {
  const specs = opts.layers ?? [{ size: 4096 }];
  const tag = opts.tag ?? 'latest';
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });

  const layers: OciImage['layers'] = [];
  for (const [i, spec] of specs.entries()) {
    const seed = spec.seed ?? `layer-${i}`;
    const tar = singleFileTar(`layer-${i}.bin`, pseudoRandomBytes(seed, spec.size));
    // Level 1: content is incompressible anyway; node's gzip header has mtime 0.
    const gz = gzipSync(tar, { level: 1 });
    const blob = await writeBlob(dir, gz);
    layers.push({ ...blob, diffId: sha256Digest(tar) });
  }

  const config = json({
    architecture: 'amd64',
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created_by: `registry-redirect test layer ${i}` })),
  });
  const configBlob = await writeBlob(dir, config);

  const manifest = json({
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_MANIFEST,
    config: { mediaType: MEDIA_TYPE_CONFIG, digest: configBlob.digest, size: configBlob.size },
    layers: layers.map((l) => ({ mediaType: MEDIA_TYPE_LAYER_GZIP, digest: l.digest, size: l.size })),
  });
  const manifestBlob = await writeBlob(dir, manifest);

  await writeFile(
    join(dir, 'index.json'),
    json({
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_INDEX,
      manifests: [
        {
          mediaType: MEDIA_TYPE_MANIFEST,
          digest: manifestBlob.digest,
          size: manifestBlob.size,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  await writeFile(join(dir, 'oci-layout'), json({ imageLayoutVersion: '1.0.0' }));

  return {
    dir,
    ref: `oci:${dir}:${tag}`,
    tag,
    manifestDigest: manifestBlob.digest,
    manifestSize: manifestBlob.size,
    configDigest: configBlob.digest,
    configSize: configBlob.size,
    layers,
  };
}
