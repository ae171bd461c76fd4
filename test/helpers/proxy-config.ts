/**
 * Validates the proxy configs shipped in examples/ with the server's own `buildConfig`, the code
 * `registry-redirect serve` runs at start.
 *
 * Some examples use keys that parallel work adds: `metrics.listen` (Prometheus, issue 4) and the
 * `s3` signer (issue 3). Until that work is merged, `buildConfig` rejects such a key as unknown. This helper then validates the rest
 * of the config and reports the key as `pending`. Once the key is known, `pending` is empty and the
 * whole file is validated, with nothing to update here.
 *
 * @module
 */
import { parse } from 'yaml';
import { buildConfig, expandEnv, type ServerConfig } from '../../src/server/config.js';

/** Top-level keys that may be unknown on this branch, and the issue that adds each. */
export const PENDING_KEYS: Readonly<Record<string, string>> = { metrics: 'issue 4 (metrics.listen)' };
/** Signers that may be unknown on this branch, and the issue that adds each. */
export const PENDING_SIGNERS: Readonly<Record<string, string>> = { s3: 'issue 3 (s3 signer)', gcs: 'issue 3 (gcs signer)' };

export interface ValidatedConfig {
  config: ServerConfig;
  /** Keys left out because this build does not know them yet (`metrics`, `signer.s3`). */
  pending: string[];
}

/**
 * Parses YAML (or takes an object), expands `${VAR}` from `env`, and validates. A pending signer
 * is replaced by an Azure stand-in that keeps its `rootDirectory` and `layout`, so the rest of
 * the file (and those two keys) are still validated.
 */
export function validateProxyConfig(source: string | Record<string, unknown>, env: NodeJS.ProcessEnv): ValidatedConfig {
  const raw = (typeof source === 'string' ? parse(source) : source) as Record<string, unknown>;
  let candidate = expandEnv(raw, env) as Record<string, unknown>;
  const pending: string[] = [];
  for (;;) {
    try {
      return { config: buildConfig(candidate), pending };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const key = Object.keys(PENDING_KEYS).find((k) => k in candidate && message.startsWith(`${k}: unknown key`));
      const signer = Object.keys(PENDING_SIGNERS).find((k) => message.startsWith(`signer.${k}: unknown signer`));
      if (key) {
        pending.push(key);
        candidate = Object.fromEntries(Object.entries(candidate).filter(([k]) => k !== key));
      } else if (signer) {
        pending.push(`signer.${signer}`);
        const block = ((candidate.signer as Record<string, Record<string, unknown>>)[signer] ?? {});
        const standIn: Record<string, unknown> = { account: 'pendingsigner', accountKey: 'cGVuZGluZw==', container: 'pending' };
        if (block.rootDirectory !== undefined) standIn.rootDirectory = block.rootDirectory;
        if (block.layout !== undefined) standIn.layout = block.layout;
        candidate = { ...candidate, signer: { azure: standIn } };
      } else {
        throw err;
      }
    }
  }
}
