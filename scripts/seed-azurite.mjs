#!/usr/bin/env node
/**
 * Copies a filesystem registry's blobs into an Azure Blob container (Azurite or real Azure), at the
 * keys distribution's azure driver would write: `[<root-directory>/]docker/registry/v2/blobs/...`.
 * That is the shared storage the `azure` signer redirects to, for a registry that writes to disk
 * (Debian's distribution has no azure driver). Blobs already there with the same size are skipped,
 * so running it again after a push copies only the new ones.
 *
 *   node scripts/seed-azurite.mjs --from /tmp/registry-redirect-quickstart \
 *     [--endpoint http://127.0.0.2:10000/devstoreaccount1] [--account devstoreaccount1] \
 *     [--container registry] [--root-directory ""]
 *
 * The account key comes from AZURE_STORAGE_KEY; default: Azurite's public development key.
 */
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';

/** Azurite's well-known development account key (public, documented by Microsoft). */
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const BLOBS = 'docker/registry/v2/blobs';

async function* files(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* files(path);
    else if (entry.isFile()) yield path;
  }
}

/**
 * @param {{ from: string, endpoint: string, account: string, accountKey: string, container: string, rootDirectory?: string }} options
 * @returns {Promise<{ copied: number, skipped: number }>}
 */
export async function seedAzure(options) {
  const service = new BlobServiceClient(options.endpoint, new StorageSharedKeyCredential(options.account, options.accountKey));
  const container = service.getContainerClient(options.container);
  await container.createIfNotExists();
  const root = (options.rootDirectory ?? '').replace(/^\/+|\/+$/g, '');
  const base = join(options.from, ...BLOBS.split('/'));
  let copied = 0;
  let skipped = 0;
  for await (const file of files(base)) {
    const name = `${root ? `${root}/` : ''}${BLOBS}/${relative(base, file).split(sep).join('/')}`;
    const blob = container.getBlockBlobClient(name);
    const { size } = await stat(file);
    const existing = await blob.getProperties().catch(() => undefined);
    if (existing?.contentLength === size) {
      skipped++;
      continue;
    }
    await blob.uploadFile(file, { blobHTTPHeaders: { blobContentType: 'application/octet-stream' } });
    copied++;
  }
  return { copied, skipped };
}

async function main() {
  const { values } = parseArgs({
    options: {
      from: { type: 'string' },
      endpoint: { type: 'string', default: 'http://127.0.0.2:10000/devstoreaccount1' },
      account: { type: 'string', default: 'devstoreaccount1' },
      container: { type: 'string', default: 'registry' },
      'root-directory': { type: 'string', default: '' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help || !values.from) {
    console.log('Usage: node scripts/seed-azurite.mjs --from REGISTRY_ROOTDIRECTORY [--endpoint URL] [--account NAME] [--container NAME] [--root-directory PREFIX]\n(account key: AZURE_STORAGE_KEY, default Azurite\'s development key)');
    return values.help ? 0 : 2;
  }
  const { copied, skipped } = await seedAzure({
    from: values.from,
    endpoint: values.endpoint,
    account: values.account,
    accountKey: process.env.AZURE_STORAGE_KEY || AZURITE_KEY,
    container: values.container,
    rootDirectory: values['root-directory'],
  });
  console.log(`seeded ${values.endpoint}/${values.container}: ${copied} blobs copied, ${skipped} already there`);
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().then(
    (code) => (process.exitCode = code),
    (err) => {
      console.error(`seed-azurite: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    },
  );
}
