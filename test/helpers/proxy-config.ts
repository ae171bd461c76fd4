/**
 * Validates the proxy configs shipped in examples/ with the server's own loading steps: `${VAR}`
 * expansion, the signer modules the file names, then `buildConfig`, what `registry-redirect serve`
 * runs at start. The whole file is validated as it is.
 *
 * @module
 */
import { parse } from 'yaml';
import { buildConfig, expandEnv, type ServerConfig } from '../../src/server/config.js';
import { loadSignerKinds } from '../../src/server/signer-config.js';

/** Parses YAML (or takes an object), expands `${VAR}` from `env`, loads its signer kinds and validates. */
export async function validateProxyConfig(source: string | Record<string, unknown>, env: NodeJS.ProcessEnv): Promise<ServerConfig> {
  const raw = typeof source === 'string' ? (parse(source) as unknown) : source;
  const expanded = expandEnv(raw, env);
  await loadSignerKinds(expanded);
  return buildConfig(expanded);
}
