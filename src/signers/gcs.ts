import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Storage, type StorageOptions } from '@google-cloud/storage';
import type { SignRequest, SignedUrl, Signer } from '../types.js';
import { once, zod } from '../lazy.js';
import { blockKeys, signerKind } from './kind.js';
import { DEFAULT_EXPIRY_MS, SEVEN_DAYS_MS, configError, layoutOf, parseBaseUrl, requireOptions, requireText, signerExpiry, urlPrefix, type LayoutOptions } from './common.js';

/** Options of {@link gcsSigner}; the same keys as the `signer.gcs` config block. */
export interface GcsSignerOptions extends LayoutOptions {
  /** Bucket holding the registry's storage, e.g. `registry`. */
  bucket: string;
  /**
   * Path of a service account key file (JSON). Without it (and without `clientEmail`/`privateKey`)
   * Application Default Credentials are used and each URL is signed by the IAM Credentials
   * `signBlob` API (the service account needs `roles/iam.serviceAccountTokenCreator` on itself).
   */
  keyFile?: string;
  /** Service account email, with `privateKey` (e.g. both from environment variables). */
  clientEmail?: string;
  /** Service account private key (PEM), with `clientEmail`. */
  privateKey?: string;
  /** Storage endpoint. Default `https://storage.googleapis.com` (path-style URLs). */
  endpoint?: string;
  /** Virtual-hosted URLs: `https://<bucket>.storage.googleapis.com/<key>`. Default `false`. */
  virtualHostedStyle?: boolean;
  /**
   * A bucket-bound hostname (a CNAME or load balancer serving only this bucket), e.g.
   * `https://blobs.example.com`: URLs become `<bucketBoundHostname>/<key>`.
   */
  bucketBoundHostname?: string;
  /** Lifetime of a signed URL: milliseconds or a duration like `"20m"`. Default 20 minutes; at most 7 days. */
  expiry?: number | string;
  /** Clock, epoch milliseconds. Default `Date.now`; for tests. */
  now?: () => number;
}

interface ServiceAccount {
  client_email: string;
  private_key: string;
}

const CREDENTIALS_DEPRECATION = 'The `credentials` option is deprecated';

/**
 * google-auth-library 11 prints a deprecation line on stderr for every `credentials` option, yet
 * `getSignedUrl` with a service account key needs exactly that option: `GoogleAuth.getCredentials`
 * reads the signer's `client_email` from it (a `JWT` auth client instead makes it probe the GCE
 * metadata server). The key comes from our own validated config, which is what the warning is
 * about, so that one line is dropped (the constructor is synchronous: nothing else runs meanwhile).
 */
function withoutCredentialsWarning<T>(build: () => T): T {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].startsWith(CREDENTIALS_DEPRECATION)) return;
    warn(...args);
  };
  try {
    return build();
  } finally {
    console.warn = warn;
  }
}

/** GCS builds the whole path itself (`/<bucket>/<key>` or `/<key>`): endpoints are an origin only. */
function originOnly(value: string, key: string, example: string): string {
  const url = parseBaseUrl(value, key, example);
  if (urlPrefix(url) !== url.origin) configError(`${key}: write only scheme and host (GCS puts the bucket and key in the path), e.g. "${example}"`);
  return url.origin;
}

function checkPrivateKey(pem: string, key: string): void {
  try {
    createPrivateKey(pem);
  } catch (cause) {
    configError(`${key}: not a PEM private key (${(cause as Error).message}); write the service account's "private_key" (-----BEGIN PRIVATE KEY-----...)`, cause);
  }
}

function readKeyFile(path: string): ServiceAccount {
  let parsed: Partial<ServiceAccount>;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<ServiceAccount>;
  } catch (cause) {
    configError(`signer.gcs.keyFile: cannot read ${path} as JSON (${(cause as Error).message}); write the path of a service account key file`, cause);
  }
  if (typeof parsed.client_email !== 'string' || typeof parsed.private_key !== 'string') {
    configError(`signer.gcs.keyFile: ${path} has no client_email/private_key; write the path of a service account key file (not a user or external-account credential)`);
  }
  checkPrivateKey(parsed.private_key, 'signer.gcs.keyFile');
  return { client_email: parsed.client_email, private_key: parsed.private_key };
}

function credentialsOf(options: GcsSignerOptions): ServiceAccount | undefined {
  const { keyFile, clientEmail, privateKey } = options;
  if (keyFile !== undefined) {
    if (clientEmail !== undefined || privateKey !== undefined) configError('signer.gcs: set keyFile or clientEmail/privateKey, not both');
    return readKeyFile(requireText(keyFile, 'signer.gcs.keyFile', 'the path of a service account key file', '/etc/registry-redirect/sa.json'));
  }
  if (clientEmail === undefined && privateKey === undefined) return undefined;
  if (privateKey === undefined) configError('signer.gcs.privateKey: missing; clientEmail is set, so write its private key too, e.g. "${GCS_PRIVATE_KEY}" (or omit both to use Application Default Credentials)');
  if (clientEmail === undefined) configError('signer.gcs.clientEmail: missing; privateKey is set, so write the service account email too, e.g. "registry@my-project.iam.gserviceaccount.com"');
  requireText(clientEmail, 'signer.gcs.clientEmail', 'the service account email', 'registry@my-project.iam.gserviceaccount.com');
  // Environment variables often carry the PEM with literal "\n".
  const pem = requireText(privateKey, 'signer.gcs.privateKey', 'the PEM private key', '${GCS_PRIVATE_KEY}').replace(/\\n/g, '\n');
  checkPrivateKey(pem, 'signer.gcs.privateKey');
  return { client_email: clientEmail, private_key: pem };
}

/**
 * Google Cloud Storage: a V4 signed GET (`GOOG4-RSA-SHA256`) for exactly one object, signed
 * headers `host` only, by `@google-cloud/storage`'s `getSignedUrl`. V4 signatures are bound to the
 * method, so these URLs serve GET only (the middleware never redirects HEAD).
 */
export function gcsSigner(options: GcsSignerOptions): Signer {
  requireOptions(options, 'gcsSigner');
  const bucketName = requireText(options.bucket, 'signer.gcs.bucket', 'the bucket name', 'registry');
  if (!/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/.test(bucketName)) {
    configError(`signer.gcs.bucket: ${JSON.stringify(bucketName)} is not a bucket name; write lowercase letters, digits, dots, hyphens and underscores, e.g. "registry"`);
  }
  const endpoint = originOnly(options.endpoint ?? 'https://storage.googleapis.com', 'signer.gcs.endpoint', 'https://storage.googleapis.com');
  const cname = options.bucketBoundHostname === undefined ? undefined : originOnly(options.bucketBoundHostname, 'signer.gcs.bucketBoundHostname', 'https://blobs.example.com');
  if (options.virtualHostedStyle !== undefined && typeof options.virtualHostedStyle !== 'boolean') {
    configError('signer.gcs.virtualHostedStyle: write true (https://<bucket>.storage.googleapis.com/<key>) or false (path style, default)');
  }
  if (cname && options.virtualHostedStyle) configError('signer.gcs: set bucketBoundHostname or virtualHostedStyle, not both');
  if (options.virtualHostedStyle && options.endpoint !== undefined) {
    configError('signer.gcs: virtualHostedStyle URLs always use <bucket>.storage.googleapis.com; drop signer.gcs.endpoint or virtualHostedStyle');
  }
  const credentials = credentialsOf(options);
  const expiryMs = signerExpiry(options.expiry, SEVEN_DAYS_MS, 'a GCS V4 signed URL');
  const expirySeconds = Math.floor(expiryMs / 1_000);
  const now = options.now ?? Date.now;
  const { keyOf, objectKey, cacheKey } = layoutOf(options);

  const storageOptions: StorageOptions = { apiEndpoint: endpoint, ...(credentials ? { credentials } : {}) };
  const storage = withoutCredentialsWarning(() => new Storage(storageOptions));
  const bucket = storage.bucket(bucketName);
  const urlOptions = {
    version: 'v4' as const,
    action: 'read' as const,
    ...(cname ? { cname } : {}),
    ...(options.virtualHostedStyle ? { virtualHostedStyle: true } : {}),
  };

  async function sign(request: SignRequest): Promise<SignedUrl> {
    // V4 timestamps have second precision; start on a whole second so expiresAt is exact.
    const accessibleAt = Math.floor(now() / 1_000) * 1_000;
    const expiresAt = accessibleAt + expirySeconds * 1_000;
    const [url] = await bucket.file(keyOf(request.repository, request.digest)).getSignedUrl({
      ...urlOptions,
      accessibleAt: new Date(accessibleAt),
      expires: expiresAt,
    });
    return { url, expiresAt };
  }

  return {
    name: 'gcs',
    objectKey,
    cacheKey,
    sign,
    async ready(): Promise<void> {
      let email: string | undefined;
      try {
        email = (await storage.authClient.getCredentials()).client_email;
      } catch (cause) {
        configError(
          `signer.gcs: no Google credentials: ${(cause as Error).message}. Set signer.gcs.keyFile (or clientEmail and privateKey), or run with Application Default Credentials of a service account`,
          cause,
        );
      }
      if (!email) {
        configError('signer.gcs: the Application Default Credentials name no service account to sign with (user credentials cannot sign URLs); set signer.gcs.keyFile, or run as a service account with iam.serviceAccounts.signBlob');
      }
    },
  };
}

/** Defaults of {@link gcsSigner} and the `signer.gcs` block. */
export const GCS_DEFAULTS = { expiry: DEFAULT_EXPIRY_MS, endpoint: 'https://storage.googleapis.com', virtualHostedStyle: false, rootDirectory: '', layout: 'distribution' } as const;

/** The `signer.gcs` config block. */
export const gcsConfig = once(() => {
  const { z } = zod();
  const k = blockKeys(z);
  return z
    .object({
      bucket: k.text('the bucket name', 'registry'),
      keyFile: k.text('the path of a service account key file', '/etc/registry-redirect/sa.json').optional(),
      clientEmail: k.text('the service account email', 'registry@my-project.iam.gserviceaccount.com').optional(),
      privateKey: k.text('the PEM private key of the service account', '${GCS_PRIVATE_KEY}').optional(),
      endpoint: k.url('https://storage.googleapis.com').optional(),
      virtualHostedStyle: k.flag('true: https://<bucket>.storage.googleapis.com/<key>').optional(),
      bucketBoundHostname: k.url('https://blobs.example.com').optional(),
      ...k.layout,
    })
    .strict();
});

/** `signer: { gcs: {...} }`. */
export const gcsKind = signerKind({ schema: gcsConfig, create: (block, common) => gcsSigner({ ...block, expiry: common.expiry, ...(common.now ? { now: common.now } : {}) }) });
