import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { azureSigner } from '../../src/signers/azure.js';
import { cloudfrontSigner } from '../../src/signers/cloudfront.js';
import type { LayoutOptions } from '../../src/signers/common.js';
import { gcsSigner } from '../../src/signers/gcs.js';
import { hmacSigner } from '../../src/signers/hmac.js';
import { s3Signer } from '../../src/signers/s3.js';
import type { Signer } from '../../src/types.js';

const HEX = '9f'.repeat(32);
const req = { repository: 'library/alpine', digest: `sha256:${HEX}`, method: 'GET' as const };
const req512 = { repository: 'team/app', digest: `sha512:${'1a'.repeat(64)}`, method: 'GET' as const };
const PEM = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const FUTURE = () => Date.UTC(2036, 0, 1);

/** Every signer, with the URL prefix its object paths go under. */
const SIGNERS: [string, (layout: LayoutOptions) => Signer, string][] = [
  ['azure', (l) => azureSigner({ account: 'acct', accountKey: 'a2V5', container: 'registry', ...l }), 'https://acct.blob.core.windows.net/registry/'],
  ['s3', (l) => s3Signer({ bucket: 'registry', region: 'us-east-1', accessKeyId: 'AK', secretAccessKey: 'SK', ...l }), 'https://registry.s3.us-east-1.amazonaws.com/'],
  ['gcs', (l) => gcsSigner({ bucket: 'registry', clientEmail: 'sa@p.iam.gserviceaccount.com', privateKey: PEM, now: FUTURE, ...l }), 'https://storage.googleapis.com/registry/'],
  ['cloudfront', (l) => cloudfrontSigner({ baseUrl: 'https://d1.cloudfront.net', keyPairId: 'K2JCJMDEHXQW5F', privateKey: PEM, ...l }), 'https://d1.cloudfront.net/'],
  ['hmac', (l) => hmacSigner({ baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare', ...l }), 'https://cdn.example.com/'],
];

const LAYOUTS: [string, LayoutOptions, string, string][] = [
  ['distribution (default)', {}, `docker/registry/v2/blobs/sha256/9f/${HEX}/data`, `docker/registry/v2/blobs/sha512/1a/${'1a'.repeat(64)}/data`],
  ['distribution under a rootDirectory', { layout: 'distribution', rootDirectory: '/registry/' }, `registry/docker/registry/v2/blobs/sha256/9f/${HEX}/data`, `registry/docker/registry/v2/blobs/sha512/1a/${'1a'.repeat(64)}/data`],
  ['oci-per-repo (zot)', { layout: 'oci-per-repo' }, `library/alpine/blobs/sha256/${HEX}`, `team/app/blobs/sha512/${'1a'.repeat(64)}`],
  ['oci-per-repo under a rootDirectory', { layout: 'oci-per-repo', rootDirectory: 'zot/data' }, `zot/data/library/alpine/blobs/sha256/${HEX}`, `zot/data/team/app/blobs/sha512/${'1a'.repeat(64)}`],
  ['a custom function', { layout: (repository, digest) => `cas/${digest.replace(':', '/')}` }, `cas/sha256/${HEX}`, `cas/sha512/${'1a'.repeat(64)}`],
];

describe.each(SIGNERS)('%s signer layouts', (_name, make, prefix) => {
  it.each(LAYOUTS)('%s', async (_layout, options, key256, key512) => {
    const signer = make(options);
    expect(signer.objectKey!(req)).toBe(key256);
    expect(signer.objectKey!(req512)).toBe(key512);
    const { url } = await signer.sign(req);
    expect(url.startsWith(`${prefix}${key256}?`)).toBe(true);
    await signer.close?.();
  });

  // The signed-URL cache keys by cacheKey: two requests may share one only when they name one object.
  it.each(LAYOUTS)('%s: cacheKey is equal exactly when the object key is', (_layout, options) => {
    const signer = make(options);
    const requests = [req, req512, { ...req, repository: 'team/app' }, { ...req512, repository: 'library/alpine' }, { ...req, digest: `sha256:${'0e'.repeat(32)}` }];
    for (const a of requests) {
      for (const b of requests) expect(signer.cacheKey!(a) === signer.cacheKey!(b)).toBe(signer.objectKey!(a) === signer.objectKey!(b));
    }
  });
});

describe('cacheKey of the layouts', () => {
  it('is the digest with the default layout, where the object key depends on the digest alone', () => {
    expect(hmacSigner({ baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare' }).cacheKey!(req)).toBe(req.digest);
    expect(hmacSigner({ baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare', rootDirectory: 'r' }).cacheKey!(req)).toBe(req.digest);
  });

  it('is the object key with a per-repository or custom layout', () => {
    const perRepo = hmacSigner({ baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare', layout: 'oci-per-repo' });
    expect(perRepo.cacheKey!(req)).toBe(`library/alpine/blobs/sha256/${HEX}`);
    const custom = hmacSigner({ baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare', layout: (repository, digest) => `${repository}/${digest}` });
    expect(custom.cacheKey!(req)).toBe(`library/alpine/sha256:${HEX}`);
  });
});
