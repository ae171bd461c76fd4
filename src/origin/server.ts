import { constants, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join, sep } from 'node:path';
import { errorForLog } from '../log.js';
import { completeObserver, type RedirectObserver } from '../metrics.js';
import { isValidDigest, isValidRepositoryName } from '../routes.js';
import type { OriginDescriptor } from '../signers/origin.js';
import type { Logger } from '../types.js';

// node:crypto, node:fs/promises and node:stream/promises load with the first origin request: importing
// them would cost as much as the rest of the package, and most users never run an origin.
const crypto = () => process.getBuiltinModule('node:crypto');
const fsp = () => process.getBuiltinModule('node:fs/promises');
const streams = () => process.getBuiltinModule('node:stream/promises');

/** Options of {@link createOriginHandler}. */
export interface OriginHandlerOptions {
  /** Receives `origin(status, bytes)` per answered request; `prometheusMetrics()` fits. */
  metrics?: RedirectObserver;
  logger?: Logger;
}

/**
 * Serves one origin request. Returns false, without touching `res`, when the path is not under the
 * origin's prefix (the caller then answers it some other way).
 */
export type OriginHandler = (req: IncomingMessage, res: ServerResponse) => boolean;

/** A blob the layout can produce: where it is and what it is. */
interface OriginTarget {
  digest: string;
  /** Path relative to the root, `/`-separated, exactly the layout's key. */
  key: string;
}

const DISTRIBUTION_KEY = /^docker\/registry\/v2\/blobs\/(sha256|sha512)\/([0-9a-f]{2})\/([0-9a-f]+)\/data$/;
const OCI_KEY = /^(.+)\/blobs\/(sha256|sha512)\/([0-9a-f]+)$/;

/**
 * The blob a URL path names, or undefined. Only a key the layout itself produces for a valid
 * digest (and, for `oci-per-repo`, a valid repository name) is accepted: the key is rebuilt from
 * the parsed digest and must equal the request byte for byte, so percent-encoding, `..`, doubled
 * slashes or upload and manifest directories never reach the filesystem.
 */
export function parseOriginKey(origin: Pick<OriginDescriptor, 'layout' | 'keyOf'>, key: string): OriginTarget | undefined {
  let repository = '';
  let digest: string;
  if (origin.layout === 'distribution') {
    const m = DISTRIBUTION_KEY.exec(key);
    if (!m) return undefined;
    digest = `${m[1]}:${m[3]}`;
  } else {
    const m = OCI_KEY.exec(key);
    if (!m || !isValidRepositoryName(m[1]!)) return undefined;
    repository = m[1]!;
    digest = `${m[2]}:${m[3]}`;
  }
  if (!isValidDigest(digest) || origin.keyOf(repository, digest) !== key) return undefined;
  return { digest, key };
}

function sameSecret(given: string, expected: string): boolean {
  return crypto().timingSafeEqual(crypto().createHash('sha256').update(given).digest(), crypto().createHash('sha256').update(expected).digest());
}

type RangeResult = { kind: 'all' } | { kind: 'part'; start: number; end: number } | { kind: 'unsatisfiable' };

/** One `bytes=` range; several ranges, other units and malformed values are ignored (RFC 9110 allows it). */
function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'all' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'all' };
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'part', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? Number.MAX_SAFE_INTEGER : Number(m[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return { kind: 'all' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'part', start, end: Math.min(end, size - 1) };
}

/** `If-None-Match` matches this entity (weak comparison, as RFC 9110 wants for it). */
function noneMatch(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

/** `If-Range` still describes this entity (strong comparison for tags, exact date otherwise). */
function rangeStillValid(header: string | undefined, etag: string, lastModified: string): boolean {
  if (header === undefined) return true;
  const value = header.trim();
  return value.startsWith('"') || value.startsWith('W/') ? value === etag : value === lastModified;
}

/** 64 KiB chunks (the fs default) cost a syscall and a write each; 1 MiB is where throughput levels off. */
const READ_CHUNK = 1 << 20;

/**
 * The origin: serves blobs from the registry's filesystem for URLs signed by {@link originSigner}.
 * GET and HEAD only; token verified (expiry, HMAC over the path, constant-time compare) before any
 * file is touched; files opened without following a final symlink, then checked by `realpath` to
 * be the same inode under `root`. Answers 200/206/304/416 with `Docker-Content-Digest`, a strong
 * `ETag` (the digest) and immutable caching; 403 (bad token, missing shield header) and 404 (not a
 * blob the layout produces, or not on disk) with an OCI error body and `Cache-Control: no-store`.
 * Bodies are streamed with back-pressure from a file handle, in constant memory.
 */
export function createOriginHandler(origin: OriginDescriptor, options: OriginHandlerOptions = {}): OriginHandler {
  const observer = completeObserver(options.metrics);
  const prefix = `${origin.pathPrefix}/`;
  let rootReal: Promise<string> | undefined;
  const rootPath = (): Promise<string> => {
    rootReal ??= fsp().realpath(origin.root).catch((err: unknown) => {
      rootReal = undefined;
      throw err;
    });
    return rootReal;
  };

  const refuse = (res: ServerResponse, status: 403 | 404 | 405, code: string, message: string): void => {
    const body = JSON.stringify({ errors: [{ code, message, detail: null }] });
    res.writeHead(status, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
      ...(status === 405 ? { Allow: 'GET, HEAD' } : {}),
    });
    res.end(body);
    observer.origin(status, 0);
  };

  /** The opened blob, or undefined when it is not a regular file inside the root. */
  async function openBlob(key: string): Promise<{ handle: FileHandle; stats: Stats } | undefined> {
    const root = await rootPath();
    const path = join(root, ...key.split('/'));
    let handle: FileHandle;
    try {
      handle = await fsp().open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch {
      return undefined;
    }
    try {
      const stats = await handle.stat();
      // A directory on the way may be a symlink: the file must really be under the root.
      const real = await fsp().realpath(path);
      if (!stats.isFile() || !real.startsWith(root + sep)) throw new Error('outside the root');
      const again = await fsp().stat(real);
      if (again.ino !== stats.ino || again.dev !== stats.dev) throw new Error('replaced while opening');
      return { handle, stats };
    } catch {
      await handle.close();
      return undefined;
    }
  }

  async function serve(req: IncomingMessage, res: ServerResponse, target: OriginTarget): Promise<void> {
    const opened = await openBlob(target.key);
    if (!opened) {
      refuse(res, 404, 'BLOB_UNKNOWN', 'blob unknown to the origin');
      return;
    }
    const { handle, stats } = opened;
    let streaming = false;
    try {
      const size = stats.size;
      const etag = `"${target.digest}"`;
      const lastModified = stats.mtime.toUTCString();
      const common = {
        'Docker-Content-Digest': target.digest,
        ETag: etag,
        'Last-Modified': lastModified,
        'Cache-Control': 'public, max-age=31536000, immutable',
        'Accept-Ranges': 'bytes',
      };
      const inm = req.headers['if-none-match'];
      const ims = req.headers['if-modified-since'];
      if (inm !== undefined ? noneMatch(inm, etag) : ims !== undefined && Math.floor(stats.mtimeMs / 1_000) * 1_000 <= Date.parse(ims)) {
        res.writeHead(304, common);
        res.end();
        observer.origin(304, 0);
        return;
      }
      const range = rangeStillValid(req.headers['if-range'] as string | undefined, etag, lastModified) ? parseRange(req.headers.range, size) : ({ kind: 'all' } as const);
      if (range.kind === 'unsatisfiable') {
        res.writeHead(416, { ...common, 'Content-Range': `bytes */${size}`, 'Content-Length': '0' });
        res.end();
        observer.origin(416, 0);
        return;
      }
      const start = range.kind === 'part' ? range.start : 0;
      const end = range.kind === 'part' ? range.end : size - 1;
      const length = size === 0 ? 0 : end - start + 1;
      const status = range.kind === 'part' ? 206 : 200;
      res.writeHead(status, {
        ...common,
        'Content-Type': 'application/octet-stream',
        'Content-Length': String(length),
        ...(status === 206 ? { 'Content-Range': `bytes ${start}-${end}/${size}` } : {}),
      });
      if (req.method === 'HEAD' || length === 0) {
        res.end();
        observer.origin(status, 0);
        return;
      }
      streaming = true;
      res.once('finish', () => observer.origin(status, length));
      await streams().pipeline(handle.createReadStream({ start, end, highWaterMark: READ_CHUNK }), res);
    } finally {
      // createReadStream closes the handle itself when it ends or is destroyed.
      if (!streaming) await handle.close();
    }
  }

  return (req, res) => {
    const url = req.url ?? '/';
    if (!url.startsWith(prefix)) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      refuse(res, 405, 'UNSUPPORTED', 'the origin serves GET and HEAD only');
      return true;
    }
    if (origin.secretHeader) {
      const given = req.headers[origin.secretHeader.name];
      if (typeof given !== 'string' || !sameSecret(given, origin.secretHeader.value)) {
        refuse(res, 403, 'DENIED', 'this origin answers its CDN only');
        return true;
      }
    }
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const target = parseOriginKey(origin, path.slice(prefix.length));
    if (!target) {
      refuse(res, 404, 'BLOB_UNKNOWN', 'not a blob this origin serves');
      return true;
    }
    const verdict = origin.verifier.verify(path, q < 0 ? '' : url.slice(q + 1));
    if (verdict !== 'ok') {
      refuse(res, 403, 'DENIED', verdict === 'expired' ? 'the signed URL has expired; ask the registry again' : 'the URL is not signed for this blob');
      return true;
    }
    serve(req, res, target).catch((err: unknown) => {
      // A client that goes away mid-body ends the pipeline with an error: nothing to answer.
      if (res.headersSent) {
        res.destroy();
        return;
      }
      options.logger?.warn({ error: errorForLog(err) }, 'origin: cannot serve a blob');
      refuse(res, 404, 'BLOB_UNKNOWN', 'blob unknown to the origin');
    });
    return true;
  };
}

/**
 * A warning when the origin's public host name is the registry's own (the main listener's host):
 * containers/image (podman, skopeo), containerd and oras send the registry's `Authorization` along
 * a redirect to the same host name or a subdomain, whatever the port.
 */
export function sharedHostWarning(origin: Pick<OriginDescriptor, 'baseUrl'>, main: { host: string; port: number }): string | undefined {
  const host = new URL(origin.baseUrl).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const mainHost = main.host.toLowerCase();
  if (host !== mainHost && !host.endsWith(`.${mainHost}`)) return undefined;
  return `the origin URL ${origin.baseUrl} has the registry's host name ${main.host}: Go clients (podman, skopeo, containerd) would send registry credentials to it, so blob GETs from clients that reach the registry by that name are proxied (same_host), not redirected. Give the origin another host name (signer.origin.listen on another address, or baseUrl of a CDN host)`;
}
