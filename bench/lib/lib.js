// The package under test, from dist/ (`npm run bench` builds first), and the signers the bench
// knows how to build. Features that land from other branches (more signers, the signed-URL cache)
// are detected here, so the bench measures whatever the build contains and says what it measured.
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = fileURLToPath(new URL('../../dist/server/cli.js', import.meta.url));

if (!existsSync(CLI)) throw new Error('bench: dist/ is missing; run `npm run bench` (it builds first) or `npm run build`');

// The core entry plus the cloud signers' subpath modules (registry-redirect/azure, /s3, /gcs, /cloudfront).
export const lib = {
  ...(await import('../../dist/index.js')),
  ...(await import('../../dist/signers/azure.js')),
  ...(await import('../../dist/signers/s3.js')),
  ...(await import('../../dist/signers/gcs.js')),
  ...(await import('../../dist/signers/cloudfront.js')),
};
const signerConfig = await import('../../dist/server/signer-config.js');

/** Signer kinds the config file (and so `serve`) accepts in this build. */
export const CONFIG_SIGNER_KINDS = Object.keys(signerConfig.SIGNER_KINDS);

/** True when this build has the signed-URL cache (`cachedSigner`; `serve` wraps signers in it by default). */
export const HAS_URL_CACHE = typeof lib.cachedSigner === 'function';

/** Azurite's well-known public development key (documented by Microsoft; not a secret). */
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
export const S3RVER_KEYS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

/** `signer:` block for an Azure(ite) endpoint. */
export function azureBlock(endpoint = 'http://127.0.0.2:10000/devstoreaccount1') {
  return { azure: { account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry', endpoint } };
}

/** `signer:` block for s3rver when this build has an S3 signer, else undefined. */
export function s3Block(endpoint, bucket = 'registry') {
  if (!CONFIG_SIGNER_KINDS.includes('s3')) return undefined;
  return { s3: { bucket, region: 'us-east-1', endpoint, forcePathStyle: true, accessKeyId: S3RVER_KEYS.accessKeyId, secretAccessKey: S3RVER_KEYS.secretAccessKey } };
}

let rsaPem;
function pem() {
  rsaPem ??= generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return rsaPem;
}

/**
 * Scenario 6's table: one line per signer. `needs` names the export the factory uses; a signer
 * this build does not have is reported as "not in this build" instead of failing the run. To add
 * a signer: one line with its factory and throwaway credentials.
 */
export const SIGNER_FACTORIES = [
  { name: 'azure (SAS, account key)', needs: 'azureSigner', create: () => lib.azureSigner({ account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry' }) },
  { name: 's3 (SigV4 presign)', needs: 's3Signer', create: () => lib.s3Signer({ bucket: 'registry', region: 'us-east-1', accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' }) },
  { name: 'gcs (V4, RSA key)', needs: 'gcsSigner', create: () => lib.gcsSigner({ bucket: 'registry', clientEmail: 'bench@example.iam.gserviceaccount.com', privateKey: pem() }) },
  { name: 'cloudfront (canned policy)', needs: 'cloudfrontSigner', create: () => lib.cloudfrontSigner({ baseUrl: 'https://d111111abcdef8.cloudfront.net', keyPairId: 'K2JCJMDEHXQW5F', privateKey: pem() }) },
  { name: 'hmac (cloudflare preset)', needs: 'hmacSigner', create: () => lib.hmacSigner({ baseUrl: 'https://cdn.example.com', key: 'bench-key', preset: 'cloudflare' }) },
];

/**
 * The signer the in-process "URL cached" variants use: `cachedSigner(azure)` when this build has
 * the cache, else a stand-in that returns one precomputed URL (what a cache hit costs: no signing),
 * labelled as such in the results.
 */
export function fastPathSigner() {
  const azure = lib.azureSigner({ account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' });
  if (HAS_URL_CACHE) return { signer: lib.cachedSigner(azure), label: 'cachedSigner(azureSigner(...))' };
  const fixed = azure.sign({ repository: 'bench/app', digest: `sha256:${'a'.repeat(64)}`, method: 'GET' });
  return { signer: { name: 'stand-in', sign: () => ({ url: fixed.url, expiresAt: Date.now() + 600_000 }) }, label: 'stand-in: one precomputed URL (no URL cache in this build)' };
}

/** A real signed URL of the same shape and length as the proxy's, for the fixed-307 baselines. */
export function sampleLocation() {
  const azure = lib.azureSigner({ account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' });
  return azure.sign({ repository: 'bench/app', digest: `sha256:${'a'.repeat(64)}`, method: 'GET' }).url;
}
