import { z } from 'zod';
import { RegistryRedirectError } from '../errors.js';
import { azureSigner } from '../signers/azure.js';
import type { Signer } from '../types.js';
import { parseConfigPart, suggestKey } from './validate.js';

/** Settings every signer block inherits from the top level of the config. */
export interface SignerCommon {
  /** Lifetime of signed URLs, milliseconds. */
  expiryMs: number;
}

interface SignerKind {
  readonly schema: z.ZodType;
  create(block: never, common: SignerCommon): Signer;
}

const text = (what: string, example: string) =>
  z.string({ error: `write ${what}, e.g. ${JSON.stringify(example)}` }).min(1, { error: `must not be empty; write ${what}, e.g. ${JSON.stringify(example)}` });

const azureBlock = z
  .object({
    account: text('the storage account name', 'devstoreaccount1'),
    accountKey: text('the base64 account key (or omit it to use managed identity)', '${AZURE_STORAGE_KEY}').optional(),
    container: text('the container name', 'registry'),
    endpoint: z.url({ error: 'write the blob service URL, e.g. "https://myaccount.blob.core.windows.net"' }).optional(),
    rootDirectory: z.string({ error: 'write the registry storage rootdirectory, e.g. "" or "registry"' }).optional(),
    layout: z.enum(['distribution', 'oci-per-repo'], { error: 'write "distribution" (default) or "oci-per-repo"' }).optional(),
  })
  .strict();

/** Every signer the config file can name under `signer:` / `signers.<name>:`, by block key. */
export const SIGNER_KINDS: Readonly<Record<string, SignerKind>> = {
  azure: {
    schema: azureBlock,
    create: (block: z.output<typeof azureBlock>, common) => azureSigner({ ...block, expiry: common.expiryMs / 1_000 }),
  },
};

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
