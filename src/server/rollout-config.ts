import { createClientIpResolver } from '../client-ip.js';
import { parseDuration } from '../duration.js';
import { RegistryRedirectError } from '../errors.js';
import { validateHealthOptions, type SignerHealthOptions } from '../health.js';
import { DEFAULT_SIGNER, NO_SIGNER, compilePolicy, type RolloutPolicy } from '../rollout.js';
import type { Signer } from '../types.js';
import { signerFromConfig, type SignerCommon } from './signer-config.js';
import { parseConfigPart } from './validate.js';
import { zod } from '../lazy.js';

// The same zod instance as the signers' and rollout schemas (lazy.ts): a static import would load
// zod's ESM build next to the CommonJS one that `require` gets, twice the start-up cost.
const { z } = zod();

/** The config-file blocks about routing and operations (trusted proxies, named signers, policy, breaker, metrics, reload), validated. */
export interface RolloutConfig {
  /** Peers whose `X-Forwarded-For` is believed. Default none. */
  trustedProxies: string[];
  /** Named signers (`signers:`), in addition to the default `signer:` (named `default`). */
  signers: Record<string, Signer>;
  /** `rollout:`; undefined -> every authorized blob GET is redirected with the default signer. */
  rollout: RolloutPolicy | undefined;
  /** `health:` (circuit breaker, storage probe), durations in milliseconds. */
  health: SignerHealthOptions | undefined;
  /** `metrics:`; undefined -> no metrics endpoint. */
  metrics: { listen: string | undefined; path: string; defaultMetrics: boolean } | undefined;
  /** `reload:`. */
  reload: { watch: boolean };
}

const duration = (example: string) => z.union([z.string(), z.number()], { error: `write a duration, e.g. "${example}"` });

const SIGNER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

const healthSchema = z
  .object({
    failureThreshold: z.number({ error: 'write a whole number >= 1, e.g. 3' }).int({ error: 'write a whole number >= 1, e.g. 3' }).min(1, { error: 'write a whole number >= 1, e.g. 3' }).optional(),
    retryAfter: duration('30s').optional(),
    probe: z
      .object({
        repository: z.string({ error: 'write the repository of a known blob, e.g. "library/alpine"' }),
        digest: z.string({ error: 'write the digest of a blob that exists in storage, e.g. "sha256:<64 hex>"' }),
        interval: duration('30s').optional(),
        timeout: duration('5s').optional(),
        signers: z.array(z.string(), { error: 'write a list of signer names, e.g. [default, cdn]' }).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const metricsSchema = z
  .object({
    listen: z.string({ error: 'write host:port, e.g. "127.0.0.1:9090"' }).optional(),
    path: z.string().regex(/^\/[A-Za-z0-9._~/-]*$/, { error: 'write a path, e.g. "/metrics"' }).optional(),
    defaultMetrics: z.boolean({ error: 'write true (process CPU, memory, event loop metrics; default) or false' }).optional(),
  })
  .strict();

const reloadSchema = z.object({ watch: z.boolean({ error: 'write true (reload when the file changes; default) or false (SIGHUP only)' }).optional() }).strict();

/** The raw blocks as they come out of the file schema (`z.unknown()` there; validated here). */
export interface RawRolloutBlocks {
  trustedProxies?: unknown;
  signers?: unknown;
  rollout?: unknown;
  health?: unknown;
  metrics?: unknown;
  reload?: unknown;
}

/**
 * Validates `trustedProxies`, `signers`, `rollout`, `health`, `metrics` and `reload`, and builds the
 * named signers. The policy is compiled once here so an invalid one is rejected at load (and at
 * reload, where the old config then keeps serving).
 */
export function buildRolloutConfig(raw: RawRolloutBlocks, common: SignerCommon): RolloutConfig {
  const trustedProxies = parseConfigPart(
    z.array(z.string(), { error: 'write a list of CIDRs, e.g. ["127.0.0.1/32", "10.0.0.0/8"]' }).optional(),
    raw.trustedProxies,
    'trustedProxies',
  ) ?? [];
  const clientIp = createClientIpResolver(trustedProxies);

  const signers: Record<string, Signer> = {};
  if (raw.signers !== undefined) {
    if (raw.signers === null || typeof raw.signers !== 'object' || Array.isArray(raw.signers)) {
      throw new RegistryRedirectError('CONFIG_INVALID', 'signers: write a mapping of names to signer blocks, e.g. "signers: { cdn: { azure: { account: ..., container: ... } } }"');
    }
    for (const [name, block] of Object.entries(raw.signers)) {
      if (!SIGNER_NAME.test(name)) {
        throw new RegistryRedirectError('CONFIG_INVALID', `signers.${name}: write a name of 1-64 letters, digits, "_", "." or "-", e.g. "cdn"`);
      }
      if (name === DEFAULT_SIGNER || name === NO_SIGNER) {
        throw new RegistryRedirectError('CONFIG_INVALID', `signers.${name}: "${name}" is reserved (the top-level \`signer:\` is "${DEFAULT_SIGNER}"); pick another name`);
      }
      signers[name] = signerFromConfig(block, `signers.${name}`, common);
    }
  }
  try {
    return buildRest(raw, signers, clientIp, trustedProxies);
  } catch (err) {
    // A rejected config must not leave the signers it built holding clients or timers.
    for (const signer of Object.values(signers)) void signer.close?.();
    throw err;
  }
}

function buildRest(raw: RawRolloutBlocks, signers: Record<string, Signer>, clientIp: ReturnType<typeof createClientIpResolver>, trustedProxies: string[]): RolloutConfig {
  const signerNames = [DEFAULT_SIGNER, ...Object.keys(signers)];

  let rollout: RolloutPolicy | undefined;
  if (raw.rollout !== undefined) {
    compilePolicy(raw.rollout as RolloutPolicy, { signerNames, clientIp });
    rollout = raw.rollout as RolloutPolicy;
  }

  let health: SignerHealthOptions | undefined;
  if (raw.health !== undefined) {
    const h = parseConfigPart(healthSchema, raw.health, 'health');
    health = {
      ...(h.failureThreshold !== undefined ? { failureThreshold: h.failureThreshold } : {}),
      ...(h.retryAfter !== undefined ? { retryAfter: parseDuration(h.retryAfter, 'health.retryAfter') } : {}),
      ...(h.probe
        ? {
            probe: {
              repository: h.probe.repository,
              digest: h.probe.digest,
              ...(h.probe.interval !== undefined ? { interval: parseDuration(h.probe.interval, 'health.probe.interval') } : {}),
              ...(h.probe.timeout !== undefined ? { timeout: parseDuration(h.probe.timeout, 'health.probe.timeout') } : {}),
              ...(h.probe.signers !== undefined ? { signers: h.probe.signers } : {}),
            },
          }
        : {}),
    };
    validateHealthOptions(health, signerNames);
  }

  let metrics: RolloutConfig['metrics'];
  if (raw.metrics !== undefined) {
    const m = parseConfigPart(metricsSchema, raw.metrics ?? {}, 'metrics');
    const path = m.path ?? '/metrics';
    if (path === '/healthz' || path === '/readyz' || path === '/v2' || path.startsWith('/v2/')) {
      throw new RegistryRedirectError('CONFIG_INVALID', `metrics.path: ${JSON.stringify(path)} is taken by the registry API or health checks; write e.g. "/metrics"`);
    }
    metrics = { listen: m.listen, path, defaultMetrics: m.defaultMetrics ?? true };
  }

  const reload = parseConfigPart(reloadSchema, raw.reload ?? {}, 'reload');
  return { trustedProxies, signers, rollout, health, metrics, reload: { watch: reload.watch ?? true } };
}
