import { z } from 'zod';
import { RegistryRedirectError } from '../errors.js';
import { azureSigner } from '../signers/azure.js';
import { cloudfrontSigner } from '../signers/cloudfront.js';
import { gcsSigner } from '../signers/gcs.js';
import { HMAC_PRESETS, hmacSigner } from '../signers/hmac.js';
import { ORIGIN_PATH_PREFIX, listenUrl, originSigner } from '../signers/origin.js';
import { s3Signer } from '../signers/s3.js';
import type { Signer } from '../types.js';
import { parseListen } from './config.js';
import { parseConfigPart, suggestKey } from './validate.js';

/** Settings every signer block inherits from the top level of the config. */
export interface SignerCommon {
  /** Lifetime of signed URLs, milliseconds. */
  expiryMs: number;
  /** Clock for the signers, epoch milliseconds. Default `Date.now`; for tests. */
  now?: () => number;
  /** The main listener, where an origin without its own `listen` or `baseUrl` is served. */
  listen?: { host: string; port: number };
}

interface SignerKind {
  readonly schema: z.ZodType;
  create(block: never, common: SignerCommon): Signer;
}

const text = (what: string, example: string) =>
  z.string({ error: `write ${what}, e.g. ${JSON.stringify(example)}` }).min(1, { error: `must not be empty; write ${what}, e.g. ${JSON.stringify(example)}` });

const url = (example: string) => z.url({ error: `write a URL, e.g. ${JSON.stringify(example)}` });
const flag = (what: string) => z.boolean({ error: `write true or false (${what})` });

/** Keys every signer block shares: where the registry's blobs are in the store. */
const layoutKeys = {
  rootDirectory: z.string({ error: 'write the registry storage rootdirectory, e.g. "" or "registry"' }).optional(),
  layout: z.enum(['distribution', 'oci-per-repo'], { error: 'write "distribution" (default) or "oci-per-repo"' }).optional(),
};

// The SDK decodes any string leniently (`not-base64!` becomes a key that signs garbage), so the
// shape is checked here: whole base64 groups with the standard alphabet.
const BASE64_KEY = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$/;

const azureBlock = z
  .object({
    account: text('the storage account name', 'devstoreaccount1'),
    accountKey: text('the base64 account key (or omit it to use managed identity)', '${AZURE_STORAGE_KEY}')
      .regex(BASE64_KEY, { error: 'not a base64 account key; write key1 or key2 of the storage account as shown by the portal or `az storage account keys list` (88 characters ending in "==")' })
      .optional(),
    container: text('the container name', 'registry'),
    endpoint: z.url({ error: 'write the blob service URL, e.g. "https://myaccount.blob.core.windows.net"' }).optional(),
    ...layoutKeys,
  })
  .strict()
  .superRefine((block, ctx) => {
    // Without a key the SAS needs a user delegation key from Azure AD, whose bearer token the SDK
    // sends over https only: on an http endpoint every signing would fail.
    if (block.accountKey === undefined && block.endpoint?.startsWith('http:')) {
      ctx.addIssue({
        code: 'custom',
        path: ['accountKey'],
        message: `missing; ${block.endpoint} is plain http, where managed identity (user delegation SAS) cannot work; write the account key (Azurite: its well-known dev key) or use an https endpoint`,
      });
    }
  });

const s3Block = z
  .object({
    bucket: text('the bucket name', 'registry'),
    region: text("the bucket's region", 'us-east-1').optional(),
    endpoint: url('http://127.0.0.2:4568').optional(),
    forcePathStyle: flag('true: <endpoint>/<bucket>/<key>; false: virtual-hosted, default').optional(),
    accessKeyId: text('the access key id (or omit it and secretAccessKey for the default credential chain)', '${AWS_ACCESS_KEY_ID}').optional(),
    secretAccessKey: text('the secret access key', '${AWS_SECRET_ACCESS_KEY}').optional(),
    sessionToken: text('the session token of temporary credentials', '${AWS_SESSION_TOKEN}').optional(),
    ...layoutKeys,
  })
  .strict();

const gcsBlock = z
  .object({
    bucket: text('the bucket name', 'registry'),
    keyFile: text('the path of a service account key file', '/etc/registry-redirect/sa.json').optional(),
    clientEmail: text('the service account email', 'registry@my-project.iam.gserviceaccount.com').optional(),
    privateKey: text('the PEM private key of the service account', '${GCS_PRIVATE_KEY}').optional(),
    endpoint: url('https://storage.googleapis.com').optional(),
    virtualHostedStyle: flag('true: https://<bucket>.storage.googleapis.com/<key>').optional(),
    bucketBoundHostname: url('https://blobs.example.com').optional(),
    ...layoutKeys,
  })
  .strict();

const cloudfrontBlock = z
  .object({
    baseUrl: url('https://d111111abcdef8.cloudfront.net'),
    keyPairId: text('the public key id from the key group', 'K2JCJMDEHXQW5F'),
    privateKey: text('the PEM private key', '${CLOUDFRONT_PRIVATE_KEY}').optional(),
    privateKeyFile: text('the path of the PEM private key', '/etc/cloudfront/pk.pem').optional(),
    algorithm: z.enum(['SHA1', 'SHA256'], { error: 'write "SHA1" (default) or "SHA256"' }).optional(),
    ...layoutKeys,
  })
  .strict();

const hmacBlock = z
  .object({
    baseUrl: url('https://cdn.example.com'),
    key: text('the shared secret', '${CDN_KEY}'),
    keyEncoding: z.enum(['utf8', 'base64', 'base64url', 'hex'], { error: 'write utf8 (default), base64, base64url or hex' }).optional(),
    preset: z.enum(Object.keys(HMAC_PRESETS) as [keyof typeof HMAC_PRESETS], { error: `write one of ${Object.keys(HMAC_PRESETS).join(', ')}` }).optional(),
    algorithm: z.enum(['hmac-sha256', 'hmac-sha1', 'hmac-sha512', 'md5', 'sha1', 'sha256'], { error: 'write hmac-sha256 (default), hmac-sha1, hmac-sha512, md5, sha1 or sha256' }).optional(),
    message: text('the signed message template', '{path}{expires}').optional(),
    query: text('the query template', 'expires={expires}&token={token}').optional(),
    encoding: z.enum(['base64', 'base64url', 'base64url-nopad', 'hex'], { error: 'write base64, base64url, base64url-nopad or hex' }).optional(),
    keyName: text('the key name configured at the CDN', 'registry-key').optional(),
    ...layoutKeys,
  })
  .strict();

const originBlock = z
  .object({
    root: text("the registry's storage root directory", '/var/lib/registry'),
    key: text('the HMAC secret of the origin URLs', '${ORIGIN_KEY}'),
    layout: layoutKeys.layout,
    baseUrl: url('https://blobs.example.com').optional(),
    listen: text('host:port of a separate origin listener', '127.0.0.2:15081').optional(),
    token: z.enum(['hmac-sha256', 'cloudflare', 'nginx-secure-link', 'google-cdn'], { error: 'write hmac-sha256 (default), cloudflare, nginx-secure-link or google-cdn' }).optional(),
    keyName: text('the key name configured at the CDN (google-cdn)', 'registry-key').optional(),
    keyEncoding: z.enum(['utf8', 'base64', 'base64url', 'hex'], { error: 'write utf8 (default), base64, base64url or hex' }).optional(),
    originSecretHeader: z
      .object({ name: text('the header the CDN sets', 'X-Origin-Secret'), value: text('its secret value', '${ORIGIN_SHIELD_SECRET}') })
      .strict()
      .optional(),
  })
  .strict();

/**
 * Origin mode: without `listen` and `baseUrl` the origin is served on the main listener under
 * `/_origin`, which shares the registry's host name (see docs/signers.md for why that is only safe
 * without registry auth or behind a CDN host name).
 */
function createOrigin(block: z.output<typeof originBlock>, common: SignerCommon) {
  const { listen: listenText, ...rest } = block;
  const listen = listenText === undefined ? undefined : parseListen(listenText, 'signer.origin.listen');
  let baseUrl = rest.baseUrl;
  if (baseUrl === undefined && listen === undefined) {
    const main = common.listen;
    if (!main || main.port === 0 || ['0.0.0.0', '::', ''].includes(main.host)) {
      throw new RegistryRedirectError('CONFIG_INVALID', `signer.origin: write listen (a separate origin listener, e.g. "127.0.0.2:15081") or baseUrl (the URL clients reach the origin at); the main listener ${main ? `${main.host}:${main.port}` : ''} is no address clients can be sent to`);
    }
    baseUrl = `${listenUrl(main)}${ORIGIN_PATH_PREFIX}`;
  }
  if (listen === undefined && baseUrl !== undefined && !/^https?:\/\/[^/]+\/[^/]/.test(baseUrl)) {
    throw new RegistryRedirectError('CONFIG_INVALID', `signer.origin.baseUrl: served on the main listener (no signer.origin.listen), the origin needs a path prefix apart from /v2/; write e.g. "${baseUrl.replace(/\/+$/, '')}${ORIGIN_PATH_PREFIX}"`);
  }
  if (listen === undefined && baseUrl !== undefined && /^\/v2(\/|$)/.test(new URL(baseUrl).pathname)) {
    throw new RegistryRedirectError('CONFIG_INVALID', `signer.origin.baseUrl: the path /v2 belongs to the registry API; write another prefix, e.g. "${ORIGIN_PATH_PREFIX}"`);
  }
  return originSigner({ ...rest, ...(baseUrl !== undefined ? { baseUrl } : {}), ...(listen ? { listen } : {}), expiry: common.expiryMs / 1_000, ...(common.now ? { now: common.now } : {}) });
}

/** Every signer the config file can name under `signer:` / `signers.<name>:`, by block key. */
export const SIGNER_KINDS: Readonly<Record<string, SignerKind>> = {
  azure: {
    schema: azureBlock,
    create: (block: z.output<typeof azureBlock>, common) => azureSigner({ ...block, expiry: common.expiryMs / 1_000 }),
  },
  s3: {
    schema: s3Block,
    create: (block: z.output<typeof s3Block>, common) => s3Signer(withCommon(block, common)),
  },
  gcs: {
    schema: gcsBlock,
    create: (block: z.output<typeof gcsBlock>, common) => gcsSigner(withCommon(block, common)),
  },
  cloudfront: {
    schema: cloudfrontBlock,
    create: (block: z.output<typeof cloudfrontBlock>, common) => cloudfrontSigner(withCommon(block, common)),
  },
  hmac: {
    schema: hmacBlock,
    create: (block: z.output<typeof hmacBlock>, common) => hmacSigner(withCommon(block, common)),
  },
  origin: {
    schema: originBlock,
    create: createOrigin,
  },
};

/** A block's options plus what every signer takes from the top level: expiry (seconds) and clock. */
function withCommon<B extends object>(block: B, common: SignerCommon): B & { expiry: number; now?: () => number } {
  return { ...block, expiry: common.expiryMs / 1_000, ...(common.now ? { now: common.now } : {}) };
}

/**
 * Builds a signer from a config block such as `{ azure: { account, container, ... } }`. `path` is
 * the block's key path (`signer`, `signers.cdn`) for error messages.
 */
export function signerFromConfig(block: unknown, path: string, common: SignerCommon): Signer {
  const kinds = Object.keys(SIGNER_KINDS);
  if (block === null || typeof block !== 'object' || Array.isArray(block)) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${path}: write one signer block, one of: ${kinds.join(', ')} (e.g. "${path}: { azure: { account: ..., container: ... } }")`);
  }
  const keys = Object.keys(block);
  if (keys.length !== 1) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${path}: name exactly one signer, one of: ${kinds.join(', ')}; found ${keys.length ? keys.join(', ') : 'none'}`);
  }
  const kind = keys[0]!;
  const spec = SIGNER_KINDS[kind];
  if (!spec) {
    const hint = suggestKey(kind, kinds);
    throw new RegistryRedirectError('CONFIG_INVALID', `${path}.${kind}: unknown signer${hint ? `; did you mean "${hint}"?` : ''} Known signers: ${kinds.join(', ')}`);
  }
  const options = parseConfigPart(spec.schema, (block as Record<string, unknown>)[kind], `${path}.${kind}`);
  try {
    return spec.create(options as never, common);
  } catch (err) {
    if (err instanceof RegistryRedirectError) throw err;
    throw new RegistryRedirectError('CONFIG_INVALID', `${path}.${kind}: ${(err as Error).message}`, { cause: err });
  }
}
