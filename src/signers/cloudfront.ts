import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { getSignedUrl } from '@aws-sdk/cloudfront-signer';
import type { SignRequest, SignedUrl, Signer } from '../types.js';
import { once, zod } from '../lazy.js';
import { blockKeys, signerKind } from './kind.js';
import { DEFAULT_EXPIRY_MS, SEVEN_DAYS_MS, configError, encodeKeyPath, layoutOf, parseBaseUrl, requireOptions, requireText, signerExpiry, urlPrefix, type LayoutOptions } from './common.js';

/** Options of {@link cloudfrontSigner}; the same keys as the `signer.cloudfront` config block. */
export interface CloudFrontSignerOptions extends LayoutOptions {
  /**
   * The distribution's URL, e.g. `https://d111111abcdef8.cloudfront.net` or a custom domain, with
   * an optional path prefix. URLs are `<baseUrl>/<key>`; the distribution maps them to the bucket.
   */
  baseUrl: string;
  /** Id of the public key in the distribution's trusted key group (e.g. `K2JCJMDEHXQW5F`), or a legacy key pair id (`APKA...`). */
  keyPairId: string;
  /** The matching RSA private key (PEM). Set this or `privateKeyFile`. */
  privateKey?: string;
  /** Path of the PEM private key file (distribution's `privatekey`). Set this or `privateKey`. */
  privateKeyFile?: string;
  /** Signature hash: `SHA1` (default, what CloudFront has always accepted) or `SHA256`. */
  algorithm?: 'SHA1' | 'SHA256';
  /** Lifetime of a signed URL: milliseconds or a duration like `"20m"`. Default 20 minutes; at most 7 days. */
  expiry?: number | string;
  /** Clock, epoch milliseconds. Default `Date.now`; for tests. */
  now?: () => number;
}

function privateKeyOf(options: CloudFrontSignerOptions): string {
  const { privateKey, privateKeyFile } = options;
  if ((privateKey === undefined) === (privateKeyFile === undefined)) {
    configError('signer.cloudfront.privateKey: write the PEM private key of the key pair (privateKey: ${CLOUDFRONT_PRIVATE_KEY}) or its file (privateKeyFile: /etc/cloudfront/pk.pem), exactly one of the two');
  }
  let pem: string;
  let key: string;
  if (privateKeyFile !== undefined) {
    key = 'signer.cloudfront.privateKeyFile';
    try {
      pem = readFileSync(requireText(privateKeyFile, key, 'the path of the PEM private key', '/etc/cloudfront/pk.pem'), 'utf8');
    } catch (cause) {
      configError(`${key}: cannot read ${privateKeyFile}: ${(cause as Error).message}`, cause);
    }
  } else {
    key = 'signer.cloudfront.privateKey';
    pem = requireText(privateKey, key, 'the PEM private key', '${CLOUDFRONT_PRIVATE_KEY}').replace(/\\n/g, '\n');
  }
  let type: string | undefined;
  try {
    type = createPrivateKey(pem).asymmetricKeyType;
  } catch (cause) {
    configError(`${key}: not a PEM private key (${(cause as Error).message}); write the private key whose public key is in the distribution's key group`, cause);
  }
  if (type !== 'rsa') configError(`${key}: a ${type} key; CloudFront signed URLs need an RSA key (2048 bit)`);
  return pem;
}

/**
 * Amazon CloudFront: a signed URL with a canned policy (`Expires`, `Signature`, `Key-Pair-Id`)
 * for exactly one object URL, by `@aws-sdk/cloudfront-signer`, like distribution's `cloudfront`
 * storage middleware (`baseurl`, `privatekey`, `keypairid`).
 */
export function cloudfrontSigner(options: CloudFrontSignerOptions): Signer {
  requireOptions(options, 'cloudfrontSigner');
  const base = urlPrefix(parseBaseUrl(requireText(options.baseUrl, 'signer.cloudfront.baseUrl', 'the distribution URL', 'https://d111111abcdef8.cloudfront.net'), 'signer.cloudfront.baseUrl', 'https://d111111abcdef8.cloudfront.net'));
  const keyPairId = requireText(options.keyPairId, 'signer.cloudfront.keyPairId', 'the public key id from the key group', 'K2JCJMDEHXQW5F');
  if (!/^[A-Z0-9]{8,64}$/.test(keyPairId)) {
    configError(`signer.cloudfront.keyPairId: ${JSON.stringify(keyPairId)} is not a CloudFront key id; write the id of the public key (uppercase letters and digits), e.g. "K2JCJMDEHXQW5F"`);
  }
  const algorithm = options.algorithm ?? 'SHA1';
  if (algorithm !== 'SHA1' && algorithm !== 'SHA256') configError(`signer.cloudfront.algorithm: write "SHA1" (default) or "SHA256", got ${JSON.stringify(algorithm)}`);
  const privateKey = privateKeyOf(options);
  const expiryMs = signerExpiry(options.expiry, SEVEN_DAYS_MS, 'a blob URL signed by this package');
  const now = options.now ?? Date.now;
  const { keyOf, objectKey, cacheKey } = layoutOf(options);

  return {
    name: 'cloudfront',
    objectKey,
    cacheKey,
    sign(request: SignRequest): SignedUrl {
      // Canned policies carry whole epoch seconds.
      const expiresAt = Math.floor((now() + expiryMs) / 1_000) * 1_000;
      const url = getSignedUrl({
        url: `${base}/${encodeKeyPath(keyOf(request.repository, request.digest))}`,
        keyPairId,
        privateKey,
        dateLessThan: expiresAt,
        ...(algorithm === 'SHA256' ? { algorithm } : {}),
      });
      return { url, expiresAt };
    },
  };
}

/** Defaults of {@link cloudfrontSigner} and the `signer.cloudfront` block. */
export const CLOUDFRONT_DEFAULTS = { expiry: DEFAULT_EXPIRY_MS, algorithm: 'SHA1', rootDirectory: '', layout: 'distribution' } as const;

/** The `signer.cloudfront` config block. */
export const cloudfrontConfig = once(() => {
  const { z } = zod();
  const k = blockKeys(z);
  return z
    .object({
      baseUrl: k.url('https://d111111abcdef8.cloudfront.net'),
      keyPairId: k.text('the public key id from the key group', 'K2JCJMDEHXQW5F'),
      privateKey: k.text('the PEM private key', '${CLOUDFRONT_PRIVATE_KEY}').optional(),
      privateKeyFile: k.text('the path of the PEM private key', '/etc/cloudfront/pk.pem').optional(),
      algorithm: z.enum(['SHA1', 'SHA256'], { error: 'write "SHA1" (default) or "SHA256"' }).optional(),
      ...k.layout,
    })
    .strict();
});

/** `signer: { cloudfront: {...} }`. */
export const cloudfrontKind = signerKind({ schema: cloudfrontConfig, create: (block, common) => cloudfrontSigner({ ...block, expiry: common.expiry, ...(common.now ? { now: common.now } : {}) }) });
