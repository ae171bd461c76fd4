import {
  BlobSASPermissions,
  BlobServiceClient,
  SASProtocol,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  type BlobSASSignatureValues,
  type newPipeline,
  type UserDelegationKey,
} from '@azure/storage-blob';
import { RegistryRedirectError } from '../errors.js';
import { once, requireOptional, zod } from '../lazy.js';
import type { BlobLayout, SignRequest, SignedUrl, Signer } from '../types.js';
import { DEFAULT_EXPIRY_MS, SEVEN_DAYS_MS, configError as fail, encodeKeyPath, layoutOf, signerExpiry } from './common.js';
import { blockKeys, signerKind } from './kind.js';

/**
 * An Azure AD credential (`@azure/identity`'s `DefaultAzureCredential`, `ManagedIdentityCredential`,
 * ...), as @azure/storage-blob takes it (`newPipeline`): named through that package so that the typings need
 * only that package.
 */
export type TokenCredential = Extract<NonNullable<Parameters<typeof newPipeline>[0]>, { getToken: unknown }>;

/** Azure caps user delegation keys at 7 days; we ask for one day and renew early. */
const DELEGATION_KEY_LIFETIME_MS = 24 * 3_600_000;
/** Signatures start a little in the past so a storage clock that runs behind still accepts them. */
const CLOCK_SKEW_MS = 5 * 60_000;

/** Options of {@link azureSigner}; the same keys as the `signer.azure` config block. */
export interface AzureSignerOptions {
  /** Storage account name, e.g. `myregistrystore` (Azurite: `devstoreaccount1`). */
  account: string;
  /**
   * Account key (base64). When omitted, `credential` (default: `DefaultAzureCredential`, i.e.
   * managed identity, workload identity, environment, Azure CLI) fetches a user delegation key
   * and the URLs are user delegation SAS.
   */
  accountKey?: string;
  /** Container holding the registry's storage, e.g. `registry`. */
  container: string;
  /** Blob service endpoint. Default `https://<account>.blob.core.windows.net`. Example (Azurite): `http://127.0.0.2:10000/devstoreaccount1`. */
  endpoint?: string;
  /** The registry's storage `rootdirectory`, prefixed to every key. Default `""`. */
  rootDirectory?: string;
  /** How keys are built from digests. Default `distribution`. */
  layout?: BlobLayout;
  /** Lifetime of a signed URL: milliseconds or a duration like `"20m"`. Default 20 minutes; at most 7 days. */
  expiry?: number | string;
  /**
   * Azure AD credential for user delegation SAS. Default `new DefaultAzureCredential()` from
   * `@azure/identity` (then that package must be installed). Ignored with `accountKey`.
   */
  credential?: TokenCredential;
}

/** Managed identity, workload identity, environment, Azure CLI: only loaded for user delegation SAS. */
function defaultCredential(): TokenCredential {
  const identity = requireOptional<{ DefaultAzureCredential: new () => TokenCredential }>('@azure/identity', 'signer.azure without accountKey (user delegation SAS)');
  return new identity.DefaultAzureCredential();
}

/**
 * Azure Blob Storage signer: a read-only SAS for exactly one blob, signed with the account key or,
 * without one, a cached user delegation key (managed identity).
 */
export function azureSigner(options: AzureSignerOptions): Signer {
  if (!options || typeof options !== 'object') fail('azureSigner(options): options must be an object');
  const { account, accountKey, container } = options;
  if (typeof account !== 'string' || !/^[a-z0-9]{3,24}$/.test(account)) {
    fail(`signer.azure.account: ${JSON.stringify(account)} is not a storage account name; write 3-24 lowercase letters and digits, e.g. "devstoreaccount1"`);
  }
  if (typeof container !== 'string' || !/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/.test(container)) {
    fail(`signer.azure.container: ${JSON.stringify(container)} is not a container name; write 3-63 lowercase letters, digits and single hyphens, e.g. "registry"`);
  }
  const endpointText = (options.endpoint ?? `https://${account}.blob.core.windows.net`).replace(/\/+$/, '');
  let endpoint: URL;
  try {
    endpoint = new URL(endpointText);
  } catch {
    fail(`signer.azure.endpoint: ${JSON.stringify(options.endpoint)} is not a URL; write e.g. "https://${account}.blob.core.windows.net"`);
  }
  if (endpoint.protocol !== 'https:' && endpoint.protocol !== 'http:') {
    fail(`signer.azure.endpoint: protocol ${endpoint.protocol} is not supported; write an https:// URL`);
  }
  const expiryMs = signerExpiry(options.expiry, SEVEN_DAYS_MS, 'a SAS signed with a user delegation key');
  const { keyOf, objectKey, cacheKey } = layoutOf(options);
  // A plain-http endpoint (Azurite, a private gateway) needs SAS that allow http; real Azure: https only.
  const protocol = endpoint.protocol === 'https:' ? SASProtocol.Https : SASProtocol.HttpsAndHttp;
  const containerUrl = `${endpointText}/${container}/`;
  const permissions = BlobSASPermissions.parse('r');

  function values(blobName: string, now: number): BlobSASSignatureValues & { expiresOn: Date } {
    return {
      containerName: container,
      blobName,
      permissions,
      protocol,
      startsOn: new Date(now - CLOCK_SKEW_MS),
      expiresOn: new Date(now + expiryMs),
    };
  }

  if (accountKey !== undefined) {
    if (typeof accountKey !== 'string' || accountKey.length === 0) {
      fail('signer.azure.accountKey: empty; write the base64 account key, or omit it to use managed identity (user delegation SAS)');
    }
    let credential: StorageSharedKeyCredential;
    try {
      credential = new StorageSharedKeyCredential(account, accountKey);
    } catch (cause) {
      throw new RegistryRedirectError('CONFIG_INVALID', 'signer.azure.accountKey: not a base64 account key', { cause });
    }
    return {
      name: 'azure',
      objectKey,
      cacheKey,
      sign(request: SignRequest): SignedUrl {
        const key = keyOf(request.repository, request.digest);
        const now = Date.now();
        const v = values(key, now);
        const sas = generateBlobSASQueryParameters(v, credential).toString();
        return { url: `${containerUrl}${encodeKeyPath(key)}?${sas}`, expiresAt: v.expiresOn.getTime() };
      },
    };
  }

  // User delegation SAS: the key comes from Azure AD; fetch it once, share it, renew it early.
  const service = new BlobServiceClient(endpointText, options.credential ?? defaultCredential());
  let delegation: { key: UserDelegationKey; expiresAt: number } | undefined;
  let pending: Promise<UserDelegationKey> | undefined;

  function delegationKey(now: number): UserDelegationKey | Promise<UserDelegationKey> {
    // A SAS must not outlive its delegation key: renew while a full expiry still fits.
    if (delegation && delegation.expiresAt - now > expiryMs + CLOCK_SKEW_MS) return delegation.key;
    pending ??= service
      .getUserDelegationKey(new Date(now - CLOCK_SKEW_MS), new Date(now + DELEGATION_KEY_LIFETIME_MS))
      .then((key) => {
        delegation = { key, expiresAt: key.signedExpiresOn.getTime() };
        return key;
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  }

  function signWith(key: UserDelegationKey, request: SignRequest, now: number): SignedUrl {
    const blobName = keyOf(request.repository, request.digest);
    const v = values(blobName, now);
    const sas = generateBlobSASQueryParameters(v, key, account).toString();
    return { url: `${containerUrl}${encodeKeyPath(blobName)}?${sas}`, expiresAt: v.expiresOn.getTime() };
  }

  return {
    name: 'azure',
    objectKey,
    cacheKey,
    sign(request: SignRequest): SignedUrl | Promise<SignedUrl> {
      const now = Date.now();
      const key = delegationKey(now);
      return key instanceof Promise ? key.then((k) => signWith(k, request, Date.now())) : signWith(key, request, now);
    },
  };
}

/** Defaults of {@link azureSigner} and the `signer.azure` block. */
export const AZURE_DEFAULTS = { expiry: DEFAULT_EXPIRY_MS, rootDirectory: '', layout: 'distribution' } as const;

// The SDK decodes any string leniently (`not-base64!` becomes a key that signs garbage), so the
// shape is checked here: whole base64 groups with the standard alphabet.
const BASE64_KEY = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$/;

/** The `signer.azure` config block. */
export const azureConfig = once(() => {
  const { z } = zod();
  const k = blockKeys(z);
  return z
    .object({
      account: k.text('the storage account name', 'devstoreaccount1'),
      accountKey: k
        .text('the base64 account key (or omit it to use managed identity)', '${AZURE_STORAGE_KEY}')
        .regex(BASE64_KEY, { error: 'not a base64 account key; write key1 or key2 of the storage account as shown by the portal or `az storage account keys list` (88 characters ending in "==")' })
        .optional(),
      container: k.text('the container name', 'registry'),
      endpoint: z.url({ error: 'write the blob service URL, e.g. "https://myaccount.blob.core.windows.net"' }).optional(),
      ...k.layout,
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
});

/** `signer: { azure: {...} }`. */
export const azureKind = signerKind({ schema: azureConfig, create: (block, common) => azureSigner({ ...block, expiry: common.expiry }) });
