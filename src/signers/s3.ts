import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { S3RequestPresigner } from '@aws-sdk/s3-request-presigner';
import type { SignRequest, SignedUrl, Signer } from '../types.js';
import { once, zod } from '../lazy.js';
import { blockKeys, signerKind } from './kind.js';
import { DEFAULT_EXPIRY_MS, SEVEN_DAYS_MS, configError, layoutOf, parseBaseUrl, requireOptions, requireText, signerExpiry, type LayoutOptions } from './common.js';

/** Options of {@link s3Signer}; the same keys as the `signer.s3` config block. */
export interface S3SignerOptions extends LayoutOptions {
  /** Bucket holding the registry's storage, e.g. `registry`. */
  bucket: string;
  /** The bucket's region, e.g. `us-east-1`. Required for AWS; default `us-east-1` with `endpoint`. */
  region?: string;
  /**
   * S3-compatible endpoint (MinIO, Ceph RGW, Cloudflare R2, s3rver), e.g. `http://127.0.0.2:4568`
   * or `https://<account>.r2.cloudflarestorage.com`. Omit for AWS. URLs use its scheme.
   */
  endpoint?: string;
  /** Path-style URLs (`<endpoint>/<bucket>/<key>`) instead of virtual-hosted (`<bucket>.<host>/<key>`). Default `false`. */
  forcePathStyle?: boolean;
  /** Static access key id. Omit it and `secretAccessKey` to use the default credential chain. */
  accessKeyId?: string;
  /** Static secret access key; set together with `accessKeyId`. */
  secretAccessKey?: string;
  /** Session token for temporary static credentials. */
  sessionToken?: string;
  /**
   * Credentials provider, for library users (e.g. `fromTemporaryCredentials(...)`). Default: the
   * AWS SDK's default chain (environment, SSO/shared config, web identity/IRSA, ECS, instance role).
   */
  credentials?: S3ClientConfig['credentials'];
  /** Lifetime of a signed URL: milliseconds or a duration like `"20m"`. Default 20 minutes; at most 7 days. */
  expiry?: number | string;
  /** Clock, epoch milliseconds. Default `Date.now`; for tests. */
  now?: () => number;
}

// AWS region names (us-east-1, eu-central-2, us-gov-west-1, cn-north-1, ap-southeast-5, ...).
const AWS_REGION = /^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$/;
// S3-compatible stores name regions freely (auto, garage, default); still a DNS-safe token.
const ANY_REGION = /^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$/;
// AWS bucket naming rules; S3-compatible stores are laxer (uppercase, underscores).
const AWS_BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const ANY_BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

/** RFC 3986 encoding as the SDK writes it (`extendedEncodeURIComponent`): also escapes !'()*. */
function escapeStrict(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** An object key as a URL path: each segment encoded, the slashes kept. */
function encodeS3Key(key: string): string {
  return key.split('/').map(escapeStrict).join('/');
}

/**
 * Amazon S3 and S3-compatible storage: a SigV4 presigned GET for exactly one object, signed
 * headers `host` only.
 *
 * The endpoint (virtual-hosted or path style, the region's host, the signing region) is resolved
 * once, at construction, by the S3 client's own endpoint rules; each URL is then signed by the
 * SDK's `S3RequestPresigner` directly: the same SigV4 as `getSignedUrl`, without building a command
 * and running the client's middleware stack per call (about 5x the URLs per second of
 * `getSignedUrl`: `node bench/signers.js`).
 */
export function s3Signer(options: S3SignerOptions): Signer {
  requireOptions(options, 's3Signer');
  const bucket = requireText(options.bucket, 'signer.s3.bucket', 'the bucket name', 'registry');
  const endpoint = options.endpoint === undefined ? undefined : parseBaseUrl(options.endpoint, 'signer.s3.endpoint', 'http://127.0.0.2:4568');
  if (!(endpoint ? ANY_BUCKET : AWS_BUCKET).test(bucket) || bucket.endsWith('--x-s3')) {
    configError(
      `signer.s3.bucket: ${JSON.stringify(bucket)} is not a bucket name${bucket.endsWith('--x-s3') ? ' this signer supports (S3 Express directory buckets need session auth)' : ''}; write 3-63 lowercase letters, digits, dots and hyphens, e.g. "registry"`,
    );
  }
  if (options.region === undefined && !endpoint) {
    configError('signer.s3.region: missing; write the bucket\'s region, e.g. "us-east-1" (only S3-compatible stores with `endpoint` may omit it)');
  }
  const region = options.region ?? 'us-east-1';
  if (typeof region !== 'string' || !(endpoint ? ANY_REGION : AWS_REGION).test(region)) {
    configError(`signer.s3.region: ${JSON.stringify(region)} is not ${endpoint ? 'a region name' : 'an AWS region'}; write e.g. "us-east-1" or "eu-central-1"`);
  }
  if (options.forcePathStyle !== undefined && typeof options.forcePathStyle !== 'boolean') {
    configError('signer.s3.forcePathStyle: write true (URLs <endpoint>/<bucket>/<key>, MinIO, s3rver) or false (virtual-hosted, default)');
  }
  const credentials = staticCredentials(options);
  const expiryMs = signerExpiry(options.expiry, SEVEN_DAYS_MS, 'an S3 presigned URL (SigV4)');
  const expiresIn = Math.floor(expiryMs / 1_000);
  const now = options.now ?? Date.now;
  const { keyOf, objectKey, cacheKey } = layoutOf(options);

  const client = new S3Client({
    region,
    ...(endpoint ? { endpoint: endpoint.href.replace(/\/$/, '') } : {}),
    forcePathStyle: options.forcePathStyle ?? false,
    ...(credentials ? { credentials } : {}),
  });

  // The S3 client's endpoint rules, evaluated once for this bucket: the same host, path prefix and
  // signing region getSignedUrl would use for every GetObject on it.
  let resolved;
  try {
    resolved = client.config.endpointProvider({
      Bucket: bucket,
      Region: region,
      UseFIPS: false,
      UseDualStack: false,
      Accelerate: false,
      ForcePathStyle: options.forcePathStyle ?? false,
      ...(endpoint ? { Endpoint: endpoint.href.replace(/\/$/, '') } : {}),
    });
  } catch (cause) {
    client.destroy();
    configError(`signer.s3: the AWS SDK cannot build an endpoint for bucket ${JSON.stringify(bucket)} in region ${JSON.stringify(region)}: ${(cause as Error).message}; check signer.s3.region and signer.s3.endpoint`, cause);
  }
  const base = resolved.url;
  const scheme = (resolved.properties?.authSchemes as { name?: string; signingRegion?: string; signingName?: string }[] | undefined)?.[0];
  if (scheme?.name !== undefined && scheme.name !== 'sigv4') {
    client.destroy();
    configError(`signer.s3: bucket ${JSON.stringify(bucket)} needs ${scheme.name} signing, which this signer does not produce; use a regional bucket name`);
  }
  const signingRegion = scheme?.signingRegion ?? region;
  const signingService = scheme?.signingName ?? 's3';
  const protocol = base.protocol;
  const hostname = base.hostname;
  const port = base.port ? Number(base.port) : undefined;
  const host = base.host;
  const basePath = base.pathname.replace(/\/+$/, '');
  const origin = `${protocol}//${host}`;

  const presigner = new S3RequestPresigner({
    ...client.config,
    region: async () => signingRegion,
    signingName: signingService,
  });

  const credentialsOf = client.config.credentials;

  async function sign(request: SignRequest): Promise<SignedUrl> {
    const path = `${basePath}/${encodeS3Key(keyOf(request.repository, request.digest))}`;
    // SigV4 dates have second precision; sign with a whole second so expiresAt is exact.
    const signingDate = Math.floor(now() / 1_000) * 1_000;
    // The SDK's provider caches and refreshes (web identity, instance role): cheap per call. The
    // presigner asks it again; should it refresh in between, the URL outlives `identity`: safe.
    const identity = await credentialsOf();
    const signed = await presigner.presign(
      { method: 'GET', protocol, hostname, ...(port ? { port } : {}), path, query: {}, headers: { host } },
      { signingDate: new Date(signingDate), expiresIn, signingRegion, signingService },
    );
    // A URL signed with temporary credentials (IRSA, instance role, STS) stops working when they
    // expire, even inside X-Amz-Expires: report the earlier instant so the cache never outlives it.
    const sessionEnd = identity.expiration?.getTime();
    const expiresAt = Math.min(signingDate + expiresIn * 1_000, sessionEnd ?? Infinity);
    const params = signed.query ?? {};
    const query = Object.keys(params)
      .sort()
      .map((name) => `${escapeStrict(name)}=${escapeStrict(String(params[name]))}`)
      .join('&');
    return { url: `${origin}${path}?${query}`, expiresAt };
  }

  return {
    name: 's3',
    objectKey,
    cacheKey,
    sign,
    async ready(): Promise<void> {
      try {
        const identity = await client.config.credentials();
        if (!identity.accessKeyId || !identity.secretAccessKey) throw new Error('the provider returned no key');
      } catch (cause) {
        configError(
          `signer.s3: no AWS credentials: ${(cause as Error).message}. Set signer.s3.accessKeyId and signer.s3.secretAccessKey, or provide credentials to the default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity/IRSA, instance role)`,
          cause,
        );
      }
    },
    close(): void {
      client.destroy();
    },
  };
}

function staticCredentials(options: S3SignerOptions): S3ClientConfig['credentials'] {
  const { accessKeyId, secretAccessKey, sessionToken } = options;
  if (options.credentials !== undefined) {
    if (accessKeyId !== undefined || secretAccessKey !== undefined) {
      configError('signer.s3: set either accessKeyId/secretAccessKey or credentials, not both');
    }
    return options.credentials;
  }
  if (accessKeyId === undefined && secretAccessKey === undefined) {
    if (sessionToken !== undefined) configError('signer.s3.sessionToken: set accessKeyId and secretAccessKey with it, or omit all three to use the default credential chain');
    return undefined;
  }
  if (accessKeyId === undefined) {
    configError('signer.s3.accessKeyId: missing; secretAccessKey is set, so write its access key id too, e.g. "${AWS_ACCESS_KEY_ID}" (or omit both to use the default credential chain)');
  }
  if (secretAccessKey === undefined) {
    configError('signer.s3.secretAccessKey: missing; accessKeyId is set, so write its secret too, e.g. "${AWS_SECRET_ACCESS_KEY}" (or omit both to use the default credential chain)');
  }
  requireText(accessKeyId, 'signer.s3.accessKeyId', 'the access key id', '${AWS_ACCESS_KEY_ID}');
  requireText(secretAccessKey, 'signer.s3.secretAccessKey', 'the secret access key', '${AWS_SECRET_ACCESS_KEY}');
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
}

/** Defaults of {@link s3Signer} and the `signer.s3` block. */
export const S3_DEFAULTS = { expiry: DEFAULT_EXPIRY_MS, regionWithEndpoint: 'us-east-1', forcePathStyle: false, rootDirectory: '', layout: 'distribution' } as const;

/** The `signer.s3` config block. */
export const s3Config = once(() => {
  const { z } = zod();
  const k = blockKeys(z);
  return z
    .object({
      bucket: k.text('the bucket name', 'registry'),
      region: k.text("the bucket's region", 'us-east-1').optional(),
      endpoint: k.url('http://127.0.0.2:4568').optional(),
      forcePathStyle: k.flag('true: <endpoint>/<bucket>/<key>; false: virtual-hosted, default').optional(),
      accessKeyId: k.text('the access key id (or omit it and secretAccessKey for the default credential chain)', '${AWS_ACCESS_KEY_ID}').optional(),
      secretAccessKey: k.text('the secret access key', '${AWS_SECRET_ACCESS_KEY}').optional(),
      sessionToken: k.text('the session token of temporary credentials', '${AWS_SESSION_TOKEN}').optional(),
      ...k.layout,
    })
    .strict();
});

/** `signer: { s3: {...} }`. */
export const s3Kind = signerKind({ schema: s3Config, create: (block, common) => s3Signer({ ...block, expiry: common.expiry, ...(common.now ? { now: common.now } : {}) }) });
