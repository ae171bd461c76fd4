import type { IncomingMessage } from 'node:http';
import { createClientIpResolver } from './client-ip.js';
import { RegistryRedirectError } from './errors.js';
import { createSignerHealth, validateHealthOptions, type SignerHealth, type SignerHealthOptions } from './health.js';
import { completeObserver, type CompleteObserver, type RedirectObserver } from './metrics.js';
import { DEFAULT_SIGNER, NO_SIGNER, compilePolicy, type RolloutDecision, type RolloutPolicy } from './rollout.js';
import type { Logger, Signer } from './types.js';

/** The rollout-related options of `registryRedirect` (see `RegistryRedirectOptions`). */
export interface RoutingOptions {
  signer: Signer;
  signers?: Readonly<Record<string, Signer>>;
  rollout?: RolloutPolicy;
  trustedProxies?: readonly string[];
  metrics?: RedirectObserver;
  health?: SignerHealthOptions;
}

/** Decide step of the middleware: policy, signers by name, their health, the observer. */
export interface Routing {
  readonly observer: CompleteObserver;
  readonly health: SignerHealth;
  /** Shadow mode: sign and count redirects, but proxy. */
  readonly shadow: boolean;
  decide(req: IncomingMessage, repository: string, size: number | undefined): RolloutDecision;
  /** The signer of a decision (`default` or a key of `signers`). */
  signer(name: string): Signer;
  close(): Promise<void>;
}

const SIGNER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

function fail(message: string): never {
  throw new RegistryRedirectError('CONFIG_INVALID', message);
}

function isSigner(value: unknown): value is Signer {
  return value !== null && typeof value === 'object' && typeof (value as Signer).sign === 'function' && typeof (value as Signer).name === 'string';
}

/** Validates and compiles the rollout options once, at construction. */
export function createRouting(options: RoutingOptions, logger: Logger): Routing {
  const signers = new Map<string, Signer>([[DEFAULT_SIGNER, options.signer]]);
  if (options.signers !== undefined) {
    if (options.signers === null || typeof options.signers !== 'object' || Array.isArray(options.signers)) {
      fail('signers: write an object of named signers, e.g. { cdn: azureSigner({...}) }');
    }
    for (const [name, signer] of Object.entries(options.signers)) {
      if (!SIGNER_NAME.test(name)) fail(`signers.${name}: write a name of 1-64 letters, digits, "_", "." or "-", e.g. "cdn"`);
      if (name === DEFAULT_SIGNER || name === NO_SIGNER) fail(`signers.${name}: "${name}" is reserved (the default signer is "${DEFAULT_SIGNER}"); pick another name`);
      if (!isSigner(signer)) fail(`signers.${name}: not a signer; pass e.g. azureSigner({ account, accountKey, container })`);
      signers.set(name, signer);
    }
  }
  const names = [...signers.keys()];
  const clientIp = createClientIpResolver(options.trustedProxies ?? []);
  const rollout = compilePolicy(options.rollout, { signerNames: names, clientIp });
  validateHealthOptions(options.health, names);
  const observer = completeObserver(options.metrics);
  const health = createSignerHealth(signers, options.health, { logger, observer });
  health.publish();

  return {
    observer,
    health,
    shadow: rollout.mode === 'shadow',
    decide: rollout.decide,
    signer: (name) => signers.get(name) ?? options.signer,
    async close() {
      health.close();
      await Promise.all([...new Set(signers.values())].map((s) => s.close?.()));
    },
  };
}
