import type { z } from 'zod';
import type * as Zod from 'zod';
import type { Signer } from '../types.js';

/** Settings every signer block of the config file inherits from its top level. */
export interface SignerCommon {
  /** Lifetime of signed URLs, milliseconds (top-level `expiry`). */
  expiry: number;
  /** Clock, epoch milliseconds. Default `Date.now`; for tests. */
  now?: () => number;
  /** The main listener, where an origin without its own `listen` or `baseUrl` is served. */
  listen?: { host: string; port: number };
}

/**
 * A kind of signer the config file can name (`signer: { <kind>: {...} }`): its block's schema and
 * how a validated block becomes a signer. Each `src/signers/<kind>.ts` exports one; the server's
 * registry (`server/signer-config.ts`) maps kind names to them and loads each on first use.
 */
export interface SignerKind<S extends z.ZodType = z.ZodType> {
  /** The config block's zod schema, built on first use (zod is loaded when a config is validated). */
  readonly schema: () => S;
  /** Builds the signer; `block` passed `schema()`. Throws CONFIG_INVALID naming the key. */
  create(block: z.output<S>, common: SignerCommon): Signer;
}

/** Declares a signer kind (identity at run time; infers the block type from the schema). */
export function signerKind<S extends z.ZodType>(kind: SignerKind<S>): SignerKind<S> {
  return kind;
}

/** Schema pieces the signer blocks share, for a given zod. */
export function blockKeys(z: typeof Zod.z) {
  const text = (what: string, example: string) =>
    z.string({ error: `write ${what}, e.g. ${JSON.stringify(example)}` }).min(1, { error: `must not be empty; write ${what}, e.g. ${JSON.stringify(example)}` });
  const url = (example: string) => z.url({ error: `write a URL, e.g. ${JSON.stringify(example)}` });
  const flag = (what: string) => z.boolean({ error: `write true or false (${what})` });
  /** Keys every signer block shares: where the registry's blobs are in the store. */
  const layout = {
    rootDirectory: z.string({ error: 'write the registry storage rootdirectory, e.g. "" or "registry"' }).optional(),
    layout: z.enum(['distribution', 'oci-per-repo'], { error: 'write "distribution" (default) or "oci-per-repo"' }).optional(),
  };
  return { text, url, flag, layout };
}
