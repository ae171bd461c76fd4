/**
 * Validates the proxy configs shipped in examples/ with the server's own `buildConfig`, the code
 * `registry-redirect serve` runs at start.
 *
 * Some examples use keys that parallel work adds: `metrics.listen` (Prometheus, issue 4). Until
 * that is merged, `buildConfig` rejects such a key as unknown. This helper then validates the rest
 * of the config and reports the key as `pending`. Once the key is known, `pending` is empty and the
 * whole file is validated, with nothing to update here.
 *
 * @module
 */
import { parse } from 'yaml';
import { buildConfig, expandEnv, type ServerConfig } from '../../src/server/config.js';

/** Top-level keys that may be unknown on this branch, and the issue that adds each. */
export const PENDING_KEYS: Readonly<Record<string, string>> = { metrics: 'issue 4 (metrics.listen)' };

export interface ValidatedConfig {
  config: ServerConfig;
  /** Keys left out because this build does not know them yet. */
  pending: string[];
}

/** Parses YAML (or takes an object), expands `${VAR}` from `env`, and validates. */
export function validateProxyConfig(source: string | Record<string, unknown>, env: NodeJS.ProcessEnv): ValidatedConfig {
  const raw = (typeof source === 'string' ? parse(source) : source) as Record<string, unknown>;
  const expanded = expandEnv(raw, env) as Record<string, unknown>;
  try {
    return { config: buildConfig(expanded), pending: [] };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const pending = Object.keys(PENDING_KEYS).filter((key) => key in expanded && message.startsWith(`${key}: unknown key`));
    if (pending.length === 0) throw err;
    const rest = Object.fromEntries(Object.entries(expanded).filter(([key]) => !pending.includes(key)));
    return { config: buildConfig(rest), pending };
  }
}
