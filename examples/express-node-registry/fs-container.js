/**
 * A local directory behind the small part of the `@azure/storage-blob` ContainerClient API that
 * registry.js uses, so the example registry can keep its blobs on a filesystem, in distribution's
 * layout (`docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data`): what registry-redirect's origin
 * mode serves. Blob metadata and content types live beside the tree, under `<root>/.meta/`, so the
 * blob tree holds exactly what distribution would write.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomUUID } from 'node:crypto';

const KEY_RE = /^(?:[A-Za-z0-9._-]+\/)*[A-Za-z0-9._-]+$/;

function notFound(key) {
  return Object.assign(new Error(`no blob ${key}`), { statusCode: 404 });
}

/** @param {string} root  directory to keep blobs in (created if missing) */
export function fsContainer(root) {
  const pathOf = (key) => {
    if (!KEY_RE.test(key) || key.split('/').some((part) => part === '.' || part === '..')) throw new Error(`not a blob key: ${key}`);
    return join(root, ...key.split('/'));
  };
  const metaOf = (key) => join(root, '.meta', `${key}.json`);

  /** Writes atomically (temp file + rename): a reader never sees half a blob. */
  async function put(key, write, options = {}) {
    const path = pathOf(key);
    await mkdir(dirname(path), { recursive: true });
    const temp = `${path}.${randomUUID()}.tmp`;
    await write(temp);
    await rename(temp, path);
    const meta = { metadata: options.metadata ?? {}, contentType: options.blobHTTPHeaders?.blobContentType };
    await mkdir(dirname(metaOf(key)), { recursive: true });
    await writeFile(metaOf(key), JSON.stringify(meta));
  }

  function blobClient(key) {
    return {
      async exists() {
        try {
          return (await stat(pathOf(key))).isFile();
        } catch {
          return false;
        }
      },
      async getProperties() {
        if (!(await this.exists())) throw notFound(key);
        const meta = JSON.parse(await readFile(metaOf(key), 'utf8').catch(() => '{}'));
        return { metadata: meta.metadata ?? {}, contentType: meta.contentType };
      },
      async downloadToBuffer() {
        try {
          return await readFile(pathOf(key));
        } catch (err) {
          if (err.code === 'ENOENT') throw notFound(key);
          throw err;
        }
      },
      async download() {
        if (!(await this.exists())) throw notFound(key);
        return { readableStreamBody: createReadStream(pathOf(key)) };
      },
      upload(body, _length, options) {
        return put(key, (temp) => writeFile(temp, typeof body === 'string' ? body : Buffer.from(body)), options);
      },
      uploadFile(file, options) {
        return put(key, (temp) => copyFile(file, temp), options);
      },
    };
  }

  return {
    getBlobClient: blobClient,
    getBlockBlobClient: blobClient,
    async createIfNotExists() {
      await mkdir(root, { recursive: true });
    },
    /** Lists the direct children of `prefix` (which ends in `/`): directories as prefixes. */
    async *listBlobsByHierarchy(delimiter, { prefix }) {
      if (delimiter !== '/' || !prefix.endsWith('/')) throw new Error('fsContainer lists by "/" under a "dir/" prefix only');
      let entries;
      try {
        entries = await readdir(pathOf(prefix.slice(0, -1)), { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        if (e.isDirectory()) yield { kind: 'prefix', name: `${prefix}${e.name}/` };
        else if (e.isFile() && !e.name.endsWith('.tmp')) yield { kind: 'blob', name: `${prefix}${e.name}` };
      }
    },
  };
}
