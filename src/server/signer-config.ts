import { RegistryRedirectError } from '../errors.js';
import { isMissingPackage, missingPackagesMessage, once, zod } from '../lazy.js';
import { blockKeys, signerKind, type SignerCommon, type SignerKind } from '../signers/kind.js';
import type * as OriginModule from '../signers/origin.js';
import type { Signer } from '../types.js';
import { parseListen } from './config.js';
import { parseConfigPart, suggestKey } from './validate.js';

export type { SignerCommon } from '../signers/kind.js';

/** One entry of the registry: the packages a kind needs beyond the core, and its module. */
interface SignerKindEntry {
  /** npm packages the module imports (optional peer dependencies), named when one is missing. */
  readonly packages: readonly string[];
  load(): Promise<SignerKind>;
}

/**
 * Every signer the config file can name under `signer:` / `signers.<name>:`, by block key. A kind's
 * module (and its cloud SDK) is imported only when a config names it. Adding a signer: one module
 * in src/signers exporting its kind, and one line here.
 */
export const SIGNER_KINDS = {
  azure: { packages: ['@azure/storage-blob'], load: async () => (await import('../signers/azure.js')).azureKind },
  s3: { packages: ['@aws-sdk/client-s3', '@aws-sdk/s3-request-presigner'], load: async () => (await import('../signers/s3.js')).s3Kind },
  gcs: { packages: ['@google-cloud/storage'], load: async () => (await import('../signers/gcs.js')).gcsKind },
  cloudfront: { packages: ['@aws-sdk/cloudfront-signer'], load: async () => (await import('../signers/cloudfront.js')).cloudfrontKind },
  hmac: { packages: [], load: async () => (await import('../signers/hmac.js')).hmacKind },
  origin: { packages: [], load: async () => originKind(await import('../signers/origin.js')) },
} satisfies Record<string, SignerKindEntry> as Readonly<Record<string, SignerKindEntry>>;

const loaded = new Map<string, SignerKind>();

/**
 * Imports the module of signer kind `kind` (once). A missing SDK is one DEPENDENCY_MISSING line
 * naming the packages to install, e.g. `signer.s3 needs @aws-sdk/client-s3 and ...: npm install ...`.
 * `path` is the block's key path for that message. Unknown kinds are left to {@link signerFromConfig}.
 */
export async function loadSignerKind(kind: string, path = 'signer'): Promise<void> {
  const entry = Object.hasOwn(SIGNER_KINDS, kind) ? SIGNER_KINDS[kind] : undefined;
  if (!entry || loaded.has(kind)) return;
  try {
    loaded.set(kind, await entry.load());
  } catch (err) {
    if (isMissingPackage(err, entry.packages)) {
      throw new RegistryRedirectError('DEPENDENCY_MISSING', missingPackagesMessage(`${path}.${kind}`, entry.packages), { cause: err });
    }
    throw err;
  }
}

/** The signer kinds a raw config names (`signer:` and every `signers.<name>:`), with their key paths. */
function kindsIn(raw: unknown): Array<{ kind: string; path: string }> {
  if (raw === null || typeof raw !== 'object') return [];
  const { signer, signers } = raw as { signer?: unknown; signers?: unknown };
  const out: Array<{ kind: string; path: string }> = [];
  const add = (block: unknown, path: string) => {
    if (block !== null && typeof block === 'object' && !Array.isArray(block)) for (const kind of Object.keys(block)) out.push({ kind, path });
  };
  add(signer, 'signer');
  if (signers !== null && typeof signers === 'object' && !Array.isArray(signers)) {
    for (const [name, block] of Object.entries(signers)) add(block, `signers.${name}`);
  }
  return out;
}

/** Imports the signer kinds a raw (parsed, env-expanded) config names, before it is validated. */
export async function loadSignerKinds(raw: unknown): Promise<void> {
  for (const { kind, path } of kindsIn(raw)) await loadSignerKind(kind, path);
}

/**
 * Builds a signer from a config block such as `{ azure: { account, container, ... } }`. `path` is
 * the block's key path (`signer`, `signers.cdn`) for error messages. The kind must have been loaded
 * ({@link loadSignerKinds}; `loadConfig` does it).
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
  if (!Object.hasOwn(SIGNER_KINDS, kind)) {
    const hint = suggestKey(kind, kinds);
    throw new RegistryRedirectError('CONFIG_INVALID', `${path}.${kind}: unknown signer${hint ? `; did you mean "${hint}"?` : ''} Known signers: ${kinds.join(', ')}`);
  }
  const spec = loaded.get(kind);
  if (!spec) throw new Error(`${path}.${kind}: signer kind not loaded; call loadSignerKinds(config) before buildConfig`);
  const options = parseConfigPart(spec.schema(), (block as Record<string, unknown>)[kind], `${path}.${kind}`);
  try {
    return spec.create(options, common);
  } catch (err) {
    if (err instanceof RegistryRedirectError) throw err;
    throw new RegistryRedirectError('CONFIG_INVALID', `${path}.${kind}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * `signer: { origin: {...} }`: this server serves the blobs itself. Its block lives here, not in
 * signers/origin.ts, because it is about the server's listeners: without `listen` and `baseUrl`
 * the origin is served on the main listener under `/_origin`, which shares the registry's host
 * name (see docs/signers.md for why that is only safe without registry auth or behind a CDN host
 * name).
 */
function originKind({ ORIGIN_PATH_PREFIX, listenUrl, originSigner }: typeof OriginModule): SignerKind {
  const schema = once(() => {
    const { z } = zod();
    const k = blockKeys(z);
    return z
      .object({
        root: k.text("the registry's storage root directory", '/var/lib/registry'),
        key: k.text('the HMAC secret of the origin URLs', '${ORIGIN_KEY}'),
        layout: k.layout.layout,
        baseUrl: k.url('https://blobs.example.com').optional(),
        listen: k.text('host:port of a separate origin listener', '127.0.0.2:15081').optional(),
        token: z.enum(['hmac-sha256', 'cloudflare', 'nginx-secure-link', 'google-cdn'], { error: 'write hmac-sha256 (default), cloudflare, nginx-secure-link or google-cdn' }).optional(),
        keyName: k.text('the key name configured at the CDN (google-cdn)', 'registry-key').optional(),
        keyEncoding: z.enum(['utf8', 'base64', 'base64url', 'hex'], { error: 'write utf8 (default), base64, base64url or hex' }).optional(),
        originSecretHeader: z
          .object({ name: k.text('the header the CDN sets', 'X-Origin-Secret'), value: k.text('its secret value', '${ORIGIN_SHIELD_SECRET}') })
          .strict()
          .optional(),
      })
      .strict();
  });
  return signerKind({
    schema,
    create(block, common) {
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
      return originSigner({ ...rest, ...(baseUrl !== undefined ? { baseUrl } : {}), ...(listen ? { listen } : {}), expiry: common.expiry, ...(common.now ? { now: common.now } : {}) });
    },
  }) as SignerKind;
}
