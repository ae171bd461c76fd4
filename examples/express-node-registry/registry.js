/**
 * A small OCI registry in Express 5 that keeps its blobs in Azure Blob Storage and mounts
 * `registryRedirect()` in embedded mode, so blob pulls are answered with a 307 to a short-lived SAS
 * URL: layer bytes go from storage to the client, never through this process.
 *
 * It implements what `skopeo`, `docker` and `crane` need to push and pull: the `/v2/` check,
 * chunked and monolithic blob uploads (POST, PATCH, PUT), cross-repository mounts, HEAD/GET blobs,
 * PUT/GET/HEAD manifests by tag or digest, and the tag list.
 *
 * Storage uses distribution's layout in the container, so the same container could be read by
 * distribution and by the proxy with the `distribution` layout:
 *
 *   docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data                        blob bytes (one per digest)
 *   docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link         blob belongs to <name>
 *   docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
 *   docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link  content: the digest
 *
 * Limits (it is an example): sha256 digests only; upload sessions live in this process's temp
 * directory (run one replica, or route a session to one replica); users come from a plain object.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { clearInterval, setInterval } from 'node:timers';
import express from 'express';
import { isValidDigest, isValidRepositoryName, registryRedirect, resolveLayout } from 'registry-redirect';

const MAX_MANIFEST_BYTES = 4 << 20;
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const UPLOAD_IDLE_MS = 60 * 60_000;

/**
 * @typedef {object} User
 * @property {string} password  plain text here; use a hash (bcrypt) or your identity provider in production
 * @property {string[]} repositories  patterns this user may push and pull: `*`, `team/*` or an exact name
 */

/**
 * @typedef {object} RegistryOptions
 * @property {import('@azure/storage-blob').ContainerClient} container  where blobs and metadata are stored
 * @property {import('registry-redirect').Signer} [signer]  signs blob URLs for that container (same layout); none: the
 *   registry serves blob bytes itself (e.g. behind `registry-redirect serve`, which redirects them)
 * @property {Record<string, User>} [users]  Basic auth users; none: the registry is open to anyone
 * @property {boolean} [anonymousPull]  let unauthenticated callers pull every repository (default false)
 * @property {string} [rootDirectory]  key prefix inside the container (default "")
 */

/** @param {import('express').Response} res */
function ociError(res, status, code, message, headers = {}) {
  res.status(status).set(headers).json({ errors: [{ code, message, detail: null }] });
}

/** @param {unknown} err */
function isNotFound(err) {
  return typeof err === 'object' && err !== null && /** @type {{ statusCode?: number }} */ (err).statusCode === 404;
}

/** @param {string} a @param {string} b */
function sameSecret(a, b) {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

/** @param {string[]} patterns @param {string} repository */
function matches(patterns, repository) {
  return patterns.some((p) => p === '*' || p === repository || (p.endsWith('/*') && repository.startsWith(p.slice(0, -1))));
}

/**
 * Build the registry. Returns the Express app and `close()` (removes upload temp files, stops the
 * middleware's timers).
 *
 * @param {RegistryOptions} options
 */
export async function createRegistry(options) {
  const { container, signer, users, anonymousPull = false } = options;
  const root = (options.rootDirectory ?? '').replace(/^\/+|\/+$/g, '');
  const prefix = root ? `${root}/` : '';
  const blobKey = resolveLayout('distribution', root);
  const open = !users || Object.keys(users).length === 0;
  const uploadDir = await mkdtemp(join(tmpdir(), 'node-registry-uploads-'));

  /** Who is calling: a user name, `null` (anonymous) or `false` (bad credentials). */
  const callers = new WeakMap();

  /** @param {string} repository */
  const repoKey = (repository) => `${prefix}docker/registry/v2/repositories/${repository}`;
  /** @param {string} repository @param {string} digest */
  const layerLinkKey = (repository, digest) => `${repoKey(repository)}/_layers/${digest.replace(':', '/')}/link`;
  /** @param {string} repository @param {string} digest */
  const revisionLinkKey = (repository, digest) => `${repoKey(repository)}/_manifests/revisions/${digest.replace(':', '/')}/link`;
  /** @param {string} repository @param {string} tag */
  const tagLinkKey = (repository, tag) => `${repoKey(repository)}/_manifests/tags/${tag}/current/link`;

  /** Size of `digest` in `repository`, or undefined when the blob is not linked there. */
  async function layerSize(repository, digest) {
    try {
      const props = await container.getBlobClient(layerLinkKey(repository, digest)).getProperties();
      return Number(props.metadata?.size ?? NaN);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async function exists(key) {
    return container.getBlobClient(key).exists();
  }

  async function writeLink(key, digest, metadata = {}) {
    await container.getBlockBlobClient(key).upload(digest, Buffer.byteLength(digest), { metadata, blobHTTPHeaders: { blobContentType: 'text/plain' } });
  }

  /**
   * May the caller do `action` on `repository`? Answers 401/403 itself when not.
   * @param {import('express').Request} req @param {import('express').Response} res
   * @param {string} repository @param {'pull' | 'push'} action
   */
  function allowed(req, res, repository, action) {
    if (canAccess(callers.get(req), repository, action)) return true;
    if (callers.get(req)) ociError(res, 403, 'DENIED', `requested access to ${repository} is denied`);
    else ociError(res, 401, 'UNAUTHORIZED', 'authentication required', { 'WWW-Authenticate': 'Basic realm="registry"' });
    return false;
  }

  /** @param {string | null | false | undefined} user @param {string} repository @param {'pull' | 'push'} action */
  function canAccess(user, repository, action) {
    if (open) return true;
    if (!user) return action === 'pull' && anonymousPull && user === null;
    return matches(users[user]?.repositories ?? [], repository);
  }

  // ---- upload sessions --------------------------------------------------------------------------
  /** @type {Map<string, { repository: string, path: string, hash: import('node:crypto').Hash, size: number, touched: number }>} */
  const sessions = new Map();
  const sweeper = setInterval(() => {
    const cutoff = Date.now() - UPLOAD_IDLE_MS;
    for (const [id, s] of sessions) if (s.touched < cutoff) void dropSession(id);
  }, 60_000);
  sweeper.unref();

  async function dropSession(id) {
    const s = sessions.get(id);
    sessions.delete(id);
    if (s) await rm(s.path, { force: true });
  }

  function newSession(repository) {
    const id = randomUUID();
    sessions.set(id, { repository, path: join(uploadDir, id), hash: createHash('sha256'), size: 0, touched: Date.now() });
    return id;
  }

  /** Appends the request body to the session file while hashing it. */
  async function appendBody(req, session) {
    session.touched = Date.now();
    const tee = new Transform({
      transform(chunk, _encoding, callback) {
        session.hash.update(chunk);
        session.size += chunk.length;
        callback(null, chunk);
      },
    });
    await pipeline(req, tee, createWriteStream(session.path, { flags: 'a' }));
  }

  function uploadHeaders(res, repository, id, size) {
    res.set({
      Location: `/v2/${repository}/blobs/uploads/${id}`,
      'Docker-Upload-UUID': id,
      Range: `0-${Math.max(size - 1, 0)}`,
      'Content-Length': '0',
    });
  }

  /** Verifies the digest, stores the bytes once per digest, links the blob into the repository. */
  async function commitBlob(res, id, expected) {
    const session = sessions.get(id);
    const actual = `sha256:${session.hash.digest('hex')}`;
    try {
      if (actual !== expected) {
        ociError(res, 400, 'DIGEST_INVALID', `uploaded content has digest ${actual}, not ${expected}`);
        return;
      }
      const key = blobKey(session.repository, actual);
      if (!(await exists(key))) {
        await container.getBlockBlobClient(key).uploadFile(session.path, { blobHTTPHeaders: { blobContentType: 'application/octet-stream' } });
      }
      await writeLink(layerLinkKey(session.repository, actual), actual, { size: String(session.size) });
      res.status(201).set({ Location: `/v2/${session.repository}/blobs/${actual}`, 'Docker-Content-Digest': actual, 'Content-Length': '0' }).end();
    } finally {
      await dropSession(id);
    }
  }

  // ---- the app ----------------------------------------------------------------------------------
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  // Every answer says which API it speaks; every caller is identified once (Basic auth).
  app.use('/v2', (req, res, next) => {
    res.set('Docker-Distribution-API-Version', 'registry/2.0');
    const header = req.headers.authorization;
    if (!header || open) {
      callers.set(req, open ? 'anonymous' : null);
      next();
      return;
    }
    const m = /^Basic ([A-Za-z0-9+/=]+)$/.exec(header);
    const decoded = m ? Buffer.from(m[1], 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    const name = colon > 0 ? decoded.slice(0, colon) : '';
    const user = Object.hasOwn(users, name) ? users[name] : undefined;
    if (!user || !sameSecret(decoded.slice(colon + 1), user.password)) {
      ociError(res, 401, 'UNAUTHORIZED', 'invalid credentials', { 'WWW-Authenticate': 'Basic realm="registry"' });
      return;
    }
    callers.set(req, name);
    next();
  });

  // Blob pulls: a 307 to a SAS URL when this caller may pull the repository AND the blob is linked
  // there. Anything else (no access, unknown blob, signer down) falls through to the routes below.
  const redirect = signer
    ? registryRedirect({
        signer,
        authorize: async (req, { repository, digest }) => {
          if (!canAccess(callers.get(req), repository, 'pull')) return undefined;
          const size = await layerSize(repository, digest);
          return size === undefined ? undefined : { size: Number.isSafeInteger(size) ? size : undefined };
        },
      })
    : undefined;
  if (redirect) app.use(redirect);

  app.get(/^\/v2\/?$/, (req, res) => {
    if (!open && !callers.get(req) && !anonymousPull) {
      ociError(res, 401, 'UNAUTHORIZED', 'authentication required', { 'WWW-Authenticate': 'Basic realm="registry"' });
      return;
    }
    res.json({});
  });

  /** Validated repository name from the first capture group, or a 404 NAME_INVALID. */
  function repositoryOf(req, res) {
    const repository = req.params[0];
    if (typeof repository === 'string' && isValidRepositoryName(repository)) return repository;
    ociError(res, 404, 'NAME_INVALID', 'invalid repository name');
    return undefined;
  }

  // Start an upload: a session (202), a monolithic upload (?digest=, 201) or a mount (?mount=&from=, 201).
  app.post(/^\/v2\/(.+)\/blobs\/uploads\/?$/, async (req, res) => {
    const repository = repositoryOf(req, res);
    if (!repository || !allowed(req, res, repository, 'push')) return;
    const { mount, from, digest } = req.query;
    if (typeof mount === 'string' && typeof from === 'string' && isValidDigest(mount) && isValidRepositoryName(from) && canAccess(callers.get(req), from, 'pull')) {
      const size = await layerSize(from, mount);
      if (size !== undefined) {
        await writeLink(layerLinkKey(repository, mount), mount, { size: String(size) });
        res.status(201).set({ Location: `/v2/${repository}/blobs/${mount}`, 'Docker-Content-Digest': mount, 'Content-Length': '0' }).end();
        return;
      }
    }
    const id = newSession(repository);
    if (typeof digest === 'string') {
      await appendBody(req, sessions.get(id));
      await commitBlob(res, id, digest);
      return;
    }
    uploadHeaders(res, repository, id, 0);
    res.status(202).end();
  });

  /** The upload session named in the path, checked against the repository; answers 404 itself. */
  function sessionOf(req, res) {
    const repository = repositoryOf(req, res);
    if (!repository || !allowed(req, res, repository, 'push')) return undefined;
    const session = sessions.get(req.params[1]);
    if (!session || session.repository !== repository) {
      ociError(res, 404, 'BLOB_UPLOAD_UNKNOWN', 'upload unknown');
      return undefined;
    }
    return session;
  }

  const UPLOAD = /^\/v2\/(.+)\/blobs\/uploads\/([0-9a-f-]{36})$/;

  app.patch(UPLOAD, async (req, res) => {
    const session = sessionOf(req, res);
    if (!session) return;
    const range = /^(\d+)-(\d+)$/.exec(req.headers['content-range'] ?? '');
    if (range && Number(range[1]) !== session.size) {
      uploadHeaders(res, session.repository, req.params[1], session.size);
      res.status(416).end();
      return;
    }
    await appendBody(req, session);
    uploadHeaders(res, session.repository, req.params[1], session.size);
    res.status(202).end();
  });

  app.put(UPLOAD, async (req, res) => {
    const session = sessionOf(req, res);
    if (!session) return;
    const digest = req.query.digest;
    if (typeof digest !== 'string' || !isValidDigest(digest)) {
      ociError(res, 400, 'DIGEST_INVALID', 'write ?digest=sha256:<hex>');
      return;
    }
    await appendBody(req, session);
    await commitBlob(res, req.params[1], digest);
  });

  app.get(UPLOAD, (req, res) => {
    const session = sessionOf(req, res);
    if (!session) return;
    uploadHeaders(res, session.repository, req.params[1], session.size);
    res.status(204).end();
  });

  app.delete(UPLOAD, async (req, res) => {
    if (!sessionOf(req, res)) return;
    await dropSession(req.params[1]);
    res.status(204).end();
  });

  // Blobs that were not redirected: HEAD (never redirected) and GET fallbacks, served from storage.
  const BLOB = /^\/v2\/(.+)\/blobs\/([a-z0-9]+:[a-f0-9]+)$/;
  async function serveBlob(req, res) {
    const repository = repositoryOf(req, res);
    if (!repository || !allowed(req, res, repository, 'pull')) return;
    const digest = req.params[1];
    const size = isValidDigest(digest) ? await layerSize(repository, digest) : undefined;
    if (size === undefined) {
      ociError(res, 404, 'BLOB_UNKNOWN', 'blob unknown to registry');
      return;
    }
    res.set({ 'Docker-Content-Digest': digest, 'Content-Type': 'application/octet-stream', 'Content-Length': String(size), 'Accept-Ranges': 'none' });
    if (req.method === 'HEAD') {
      res.status(200).end();
      return;
    }
    const download = await container.getBlobClient(blobKey(repository, digest)).download();
    res.status(200);
    await pipeline(download.readableStreamBody, res);
  }
  app.head(BLOB, serveBlob);
  app.get(BLOB, serveBlob);

  // Manifests, by tag or digest.
  const MANIFEST = /^\/v2\/(.+)\/manifests\/([A-Za-z0-9_.:+-]+)$/;

  /** Digest a reference points at in `repository`, or undefined. */
  async function resolveReference(repository, reference) {
    if (isValidDigest(reference)) return (await exists(revisionLinkKey(repository, reference))) ? reference : undefined;
    if (!TAG_RE.test(reference)) return undefined;
    try {
      const digest = (await container.getBlobClient(tagLinkKey(repository, reference)).downloadToBuffer()).toString('utf8');
      return isValidDigest(digest) ? digest : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async function serveManifest(req, res) {
    const repository = repositoryOf(req, res);
    if (!repository || !allowed(req, res, repository, 'pull')) return;
    const digest = await resolveReference(repository, req.params[1]);
    if (!digest) {
      ociError(res, 404, 'MANIFEST_UNKNOWN', 'manifest unknown');
      return;
    }
    const blob = container.getBlobClient(blobKey(repository, digest));
    const body = await blob.downloadToBuffer();
    const { contentType } = await blob.getProperties();
    res.status(200).set({ 'Content-Type': contentType ?? 'application/vnd.oci.image.manifest.v1+json', 'Docker-Content-Digest': digest, 'Content-Length': String(body.length) });
    if (req.method === 'HEAD') res.end();
    else res.end(body);
  }
  app.head(MANIFEST, serveManifest);
  app.get(MANIFEST, serveManifest);

  app.put(MANIFEST, express.raw({ type: () => true, limit: MAX_MANIFEST_BYTES }), async (req, res) => {
    const repository = repositoryOf(req, res);
    if (!repository || !allowed(req, res, repository, 'push')) return;
    const reference = req.params[1];
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (isValidDigest(reference) ? reference !== digest : !TAG_RE.test(reference)) {
      ociError(res, 400, isValidDigest(reference) ? 'DIGEST_INVALID' : 'TAG_INVALID', 'the reference does not match the manifest');
      return;
    }
    let manifest;
    try {
      manifest = JSON.parse(body.toString('utf8'));
    } catch {
      ociError(res, 400, 'MANIFEST_INVALID', 'manifest is not JSON');
      return;
    }
    // Everything a manifest references must already be in this repository.
    const blobs = [manifest.config, ...(manifest.layers ?? [])].filter(Boolean).map((d) => d.digest);
    const children = (manifest.manifests ?? []).map((d) => d.digest);
    for (const ref of blobs) {
      if (typeof ref !== 'string' || !isValidDigest(ref) || (await layerSize(repository, ref)) === undefined) {
        ociError(res, 400, 'MANIFEST_BLOB_UNKNOWN', `blob ${String(ref)} is not in ${repository}`);
        return;
      }
    }
    for (const ref of children) {
      if (typeof ref !== 'string' || !isValidDigest(ref) || !(await exists(revisionLinkKey(repository, ref)))) {
        ociError(res, 400, 'MANIFEST_BLOB_UNKNOWN', `manifest ${String(ref)} is not in ${repository}`);
        return;
      }
    }
    const contentType = req.headers['content-type'] ?? manifest.mediaType ?? 'application/vnd.oci.image.manifest.v1+json';
    await container.getBlockBlobClient(blobKey(repository, digest)).upload(body, body.length, { blobHTTPHeaders: { blobContentType: contentType } });
    await writeLink(revisionLinkKey(repository, digest), digest);
    if (!isValidDigest(reference)) await writeLink(tagLinkKey(repository, reference), digest);
    res.status(201).set({ Location: `/v2/${repository}/manifests/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' }).end();
  });

  app.get(/^\/v2\/(.+)\/tags\/list$/, async (req, res) => {
    const repository = repositoryOf(req, res);
    if (!repository || !allowed(req, res, repository, 'pull')) return;
    const tagsPrefix = `${repoKey(repository)}/_manifests/tags/`;
    const tags = [];
    for await (const item of container.listBlobsByHierarchy('/', { prefix: tagsPrefix })) {
      if (item.kind === 'prefix') tags.push(item.name.slice(tagsPrefix.length, -1));
    }
    if (tags.length === 0) {
      ociError(res, 404, 'NAME_UNKNOWN', 'repository name not known to registry');
      return;
    }
    res.json({ name: repository, tags: tags.sort() });
  });

  app.use('/v2', (_req, res) => ociError(res, 404, 'UNSUPPORTED', 'not implemented by this registry'));

  // Express 5 hands rejected promises of async handlers here.
  app.use((err, _req, res, _next) => {
    console.error(`registry error: ${err instanceof Error ? err.message : String(err)}`);
    if (res.headersSent) res.destroy();
    else ociError(res, 500, 'UNKNOWN', 'internal error');
  });

  return {
    app,
    async close() {
      clearInterval(sweeper);
      await redirect?.close();
      await rm(uploadDir, { recursive: true, force: true });
    },
  };
}
