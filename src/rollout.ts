import type { IncomingMessage } from 'node:http';
import type picomatchType from 'picomatch';
import type * as re2js from 're2js';
import type { z as Z } from 'zod';
import { createClientIpResolver, parseCidrList, type ClientAddress, type ClientIpResolver } from './client-ip.js';
import { RegistryRedirectError } from './errors.js';
import { once, requireDependency, zod } from './lazy.js';
import type { CompiledRollout, RolloutAction, RolloutDecision, RolloutPolicy, RolloutRule } from './types.js';
import { parseConfigPart, suggestKey } from './validate.js';

export type { CompiledRollout, RolloutAction, RolloutClientKey, RolloutDecision, RolloutDefault, RolloutPolicy, RolloutRule } from './types.js';

/** The name of the signer given as `signer` (the default one). */
export const DEFAULT_SIGNER = 'default';
/** Signer label of decisions that do not sign. */
export const NO_SIGNER = 'none';

const UA_MAX = 1024;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const RULE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const RESERVED_REASONS = new Set(['default', 'override_header']);

const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** Parses `1048576`, `"512KiB"`, `"8MiB"`, `"10MB"`, `"1.5GB"` into bytes. `key` names the option. */
export function parseSize(value: number | string, key: string): number {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value >= 0) return value;
  } else {
    const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
    const unit = SIZE_UNITS[(m?.[2] || 'b').toLowerCase()];
    if (m && unit !== undefined) return Math.round(Number(m[1]) * unit);
  }
  throw new RegistryRedirectError(
    'CONFIG_INVALID',
    `${key}: ${JSON.stringify(value)} is not a size; write bytes or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. "8MiB"`,
  );
}

/**
 * A stable bucket in [0, 10000) for a client key: FNV-1a over the UTF-16 code units, finished
 * with murmur3's fmix32 so similar keys (consecutive addresses) spread evenly. Stable across
 * processes, machines and versions: replicas with the same `seed` put a client in the same bucket.
 */
export function stickyBucket(key: string, seed = ''): number {
  let h = 0x811c9dc5;
  const text = seed === '' ? key : `${seed}\u0000${key}`;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % 10_000;
}

function base64UrlJson(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

/**
 * The subject a request's credentials name, without the secret: the user of Basic credentials,
 * the `sub` claim of a Bearer JWT (not verified), else `undefined`. Both give `sub:<name>`: with
 * Docker token auth a user logs in with Basic and pulls with a JWT whose `sub` is that user.
 */
export function credentialSubject(authorization: string | undefined): string | undefined {
  if (!authorization || authorization.length > 16_384) return undefined;
  const space = authorization.indexOf(' ');
  if (space < 0) return undefined;
  const scheme = authorization.slice(0, space).toLowerCase();
  const value = authorization.slice(space + 1).trim();
  if (scheme === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const user = colon < 0 ? '' : decoded.slice(0, colon);
    return user ? `sub:${user}` : undefined;
  }
  if (scheme === 'bearer') {
    const parts = value.split('.');
    if (parts.length !== 3 || !parts[1]) return undefined;
    const claims = base64UrlJson(parts[1]);
    const sub = claims && typeof claims === 'object' ? (claims as { sub?: unknown }).sub : undefined;
    return typeof sub === 'string' && sub ? `sub:${sub}` : undefined;
  }
  return undefined;
}

/** Lazily computed facts about one request: only what a rule actually asks for is computed. */
interface Facts {
  readonly req: IncomingMessage;
  readonly repository: string;
  readonly size: number | undefined;
  client?: ClientAddress;
  bucket?: number;
}

type Condition = (facts: Facts) => boolean;

/** What a condition's compile function may ask about a request, computed once per request. */
interface ConditionContext {
  /** The client address (`trustedProxies` applied). */
  client(facts: Facts): ClientAddress;
  /** The client's sticky bucket in [0, 10000) (`clientKey`, `seed`). */
  bucket(facts: Facts): number;
}

/** The rule keys that are conditions (everything but `name`, `action` and `signer`). */
type ConditionKey = Exclude<keyof RolloutRule, 'name' | 'action' | 'signer'>;

/** One rollout condition: the schema of its rule key and how a validated value becomes a predicate. */
interface ConditionSpec<K extends ConditionKey> {
  schema(z: typeof Z): Z.ZodType<RolloutRule[K]>;
  /** `at` is the key path for messages, e.g. `rollout.rules[2].networks`. Throws CONFIG_INVALID. */
  compile(value: NonNullable<RolloutRule[K]>, at: string, context: ConditionContext): Condition;
}

const strings = (z: typeof Z, example: string) =>
  z.array(z.string({ error: `write a string, e.g. ${example}` }), { error: `write a list, e.g. [${example}]` });

function invalid(message: string, cause?: unknown): never {
  throw new RegistryRedirectError('CONFIG_INVALID', message, cause === undefined ? undefined : { cause });
}

const picomatch = once(() => requireDependency<typeof picomatchType>('picomatch'));

function compileGlobs(list: readonly string[], key: string): (name: string) => boolean {
  list.forEach((glob, i) => {
    if (glob === '') invalid(`${key}[${i}]: empty glob; write e.g. "internal/**"`);
  });
  return list.length === 0 ? () => false : picomatch()(list as string[]);
}

const re2 = once(() => requireDependency<typeof re2js>('re2js').RE2JS);

/**
 * User-Agent patterns run on attacker input, so they are compiled by RE2 (re2js), which matches in
 * time linear in the input: a pattern such as `(a+)+$` cannot stall a decision the way a
 * backtracking engine does. RE2 has no lookaround or backreferences; such a pattern is refused here.
 */
function compileUserAgentPatterns(list: readonly string[], key: string): Array<(ua: string) => boolean> {
  const RE2JS = re2();
  return list.map((source, i) => {
    let re: re2js.RE2JS;
    try {
      re = RE2JS.compile(source, RE2JS.CASE_INSENSITIVE);
    } catch (cause) {
      invalid(
        `${key}[${i}]: ${JSON.stringify(source)} is not a regular expression RE2 accepts (${(cause as Error).message}); user-agent patterns use RE2 syntax, which matches in linear time (no lookaround or backreferences), e.g. "^containerd/"`,
        cause,
      );
    }
    return (ua) => re.test(ua);
  });
}

/**
 * The conditions a rule may have, one entry each, in evaluation order (cheapest first: a request
 * stops at the first condition that fails). A new condition is one entry here and one key in
 * `RolloutRule`; the rule schema and the compiler are built from this table.
 */
const CONDITIONS: { readonly [K in ConditionKey]: ConditionSpec<K> } = {
  range: {
    schema: (z) => z.boolean({ error: 'write true (only ranged requests) or false (only requests without Range)' }),
    compile: (wantRange) => (f) => (f.req.headers.range !== undefined) === wantRange,
  },
  minSize: {
    schema: (z) => z.union([z.number(), z.string()], { error: 'write a size, e.g. "8MiB" or 8388608' }),
    compile: (value, at) => {
      const min = parseSize(value, at);
      return (f) => f.size !== undefined && f.size >= min;
    },
  },
  repositories: {
    schema: (z) =>
      z.union([strings(z, '"internal/**"'), z.object({ include: strings(z, '"team/**"').optional(), exclude: strings(z, '"team/secret/**"').optional() }).strict()], {
        error: 'write a list of globs, e.g. ["internal/**", "!internal/public/**"], or { include: [...], exclude: [...] }',
      }),
    compile: (r, at) => {
      const list = Array.isArray(r) ? (r as readonly string[]) : undefined;
      const obj = list ? undefined : (r as { include?: readonly string[]; exclude?: readonly string[] });
      const include = list ? list.filter((g) => !g.startsWith('!')) : (obj?.include ?? []);
      const exclude = list ? list.filter((g) => g.startsWith('!')).map((g) => g.slice(1)) : (obj?.exclude ?? []);
      if (include.length === 0 && exclude.length === 0) invalid(`${at}: empty; write at least one glob, e.g. ["internal/**"]`);
      const inc = include.length ? compileGlobs(include, at) : undefined;
      const exc = exclude.length ? compileGlobs(exclude, at) : undefined;
      return (f) => (inc === undefined || inc(f.repository)) && !(exc?.(f.repository) ?? false);
    },
  },
  networks: {
    schema: (z) => strings(z, '"10.0.0.0/8"'),
    compile: (list, at, context) => {
      if (list.length === 0) invalid(`${at}: empty; write at least one CIDR, e.g. ["10.0.0.0/8"]`);
      const networks = parseCidrList(list, at);
      return (f) => networks.has(context.client(f).address);
    },
  },
  userAgents: {
    schema: (z) =>
      z.union([strings(z, '"^containerd/"'), z.object({ allow: strings(z, '"^containerd/"').optional(), deny: strings(z, '"^regclient/"').optional() }).strict()], {
        error: 'write a list of regular expressions, e.g. ["^containerd/"], or { allow: [...], deny: [...] }',
      }),
    compile: (u, at) => {
      const list = Array.isArray(u) ? (u as readonly string[]) : undefined;
      const obj = list ? undefined : (u as { allow?: readonly string[]; deny?: readonly string[] });
      const allow = compileUserAgentPatterns(list ?? obj?.allow ?? [], `${at}${list ? '' : '.allow'}`);
      const deny = compileUserAgentPatterns(obj?.deny ?? [], `${at}.deny`);
      if (allow.length === 0 && deny.length === 0) invalid(`${at}: empty; write at least one regular expression, e.g. ["^containerd/"]`);
      return (f) => {
        const raw = f.req.headers['user-agent'] ?? '';
        const ua = raw.length > UA_MAX ? raw.slice(0, UA_MAX) : raw;
        return (allow.length === 0 || allow.some((test) => test(ua))) && !deny.some((test) => test(ua));
      };
    },
  },
  percent: {
    schema: (z) => z.number({ error: 'write a number from 0 to 100, e.g. 30' }).min(0, { error: 'write a number from 0 to 100, e.g. 30' }).max(100, { error: 'write a number from 0 to 100, e.g. 30' }),
    compile: (percent, _at, context) => {
      const threshold = Math.round(percent * 100);
      return (f) => context.bucket(f) < threshold;
    },
  },
};

const CONDITION_KEYS = Object.keys(CONDITIONS) as ConditionKey[];

/** The policy schema, built from the condition table on first use. */
const policySchema = once(() => {
  const { z } = zod();
  const action = z.enum(['redirect', 'proxy'], { error: 'write "redirect" or "proxy"' });
  const signerName = z.string({ error: 'write the name of a signer from `signers`, e.g. "cdn"' });
  const conditions = Object.fromEntries(CONDITION_KEYS.map((key) => [key, CONDITIONS[key].schema(z).optional()]));
  const rule = z
    .object({
      name: z.string().regex(RULE_NAME, { error: 'write 1-64 letters, digits, "_", "." or "-", e.g. "vpc"' }).optional(),
      ...conditions,
      action,
      signer: signerName.optional(),
    })
    .strict();
  return z
    .object({
      rules: z.array(rule, { error: 'write a list of rules, e.g. [{ percent: 1, action: redirect }]' }).optional(),
      default: z.union([action, z.object({ action, signer: signerName.optional() }).strict()], {
        error: 'write "redirect" (rules are exceptions) or "proxy" (rules opt in), or { action: redirect, signer: <name> }',
      }),
      mode: z.enum(['enforce', 'shadow'], { error: 'write "enforce" (default) or "shadow" (decide, sign and count, but proxy)' }).optional(),
      clientKey: z
        .union([z.enum(['ip', 'subject']), z.custom<(req: IncomingMessage) => string | undefined>((v) => typeof v === 'function')], {
          error: 'write "ip" (default) or "subject" (user name / token subject)',
        })
        .optional(),
      seed: z.string({ error: 'write a string, e.g. "2026-05"' }).optional(),
      overrideHeader: z.string().regex(HEADER_NAME, { error: 'write an HTTP header name, e.g. "X-Registry-Redirect-Bypass"' }).optional(),
    })
    .strict();
});

/** What the middleware compiles a policy against. */
export interface RolloutContext {
  /** Names a rule may use (`default` plus the keys of `signers`). */
  signerNames: readonly string[];
  clientIp: ClientIpResolver;
  /** Key path of the policy in messages. Default `rollout`. */
  path?: string;
}

/**
 * Compiles and validates a policy once: globs, CIDRs and user-agent patterns are built here, so a
 * request only runs the predicates. Errors name the key (`rollout.rules[2].networks[0]: ...`) and
 * the fix.
 */
export function compilePolicy(policy: RolloutPolicy | undefined, context: RolloutContext): CompiledRollout {
  const path = context.path ?? 'rollout';
  if (policy === undefined) {
    const always: RolloutDecision = Object.freeze({ action: 'redirect', signer: DEFAULT_SIGNER, reason: 'default' });
    return { mode: 'enforce', decide: () => always };
  }
  const p = parseConfigPart(policySchema(), policy, path) as RolloutPolicy;

  const checkSigner = (name: string | undefined, act: RolloutAction, key: string): string => {
    if (name === undefined) return act === 'redirect' ? DEFAULT_SIGNER : NO_SIGNER;
    if (act !== 'redirect') invalid(`${key}: a signer only applies to action "redirect"; remove it or write action: redirect`);
    if (!context.signerNames.includes(name)) {
      const hint = suggestKey(name, context.signerNames);
      invalid(`${key}: unknown signer ${JSON.stringify(name)}${hint ? `; did you mean "${hint}"?` : ''} Define it under \`signers:\`; known: ${context.signerNames.join(', ')}`);
    }
    return name;
  };

  const keyFn = p.clientKey ?? 'ip';
  const seed = p.seed ?? '';
  const conditionContext: ConditionContext = {
    client: (f) => (f.client ??= context.clientIp(f.req)),
    bucket(f) {
      if (f.bucket !== undefined) return f.bucket;
      let key: string | undefined;
      if (keyFn === 'subject') key = credentialSubject(f.req.headers.authorization);
      else if (typeof keyFn === 'function') key = keyFn(f.req);
      key ??= `ip:${this.client(f).text}`;
      return (f.bucket = stickyBucket(key, seed));
    },
  };

  const usedNames = new Set<string>();
  const rules = (p.rules ?? []).map((rule, i) => {
    const at = `${path}.rules[${i}]`;
    const conditions: Condition[] = [];
    for (const key of CONDITION_KEYS) {
      const value = rule[key];
      if (value !== undefined) conditions.push((CONDITIONS[key] as ConditionSpec<typeof key>).compile(value as never, `${at}.${key}`, conditionContext));
    }
    let reason = `rules[${i}]`;
    if (rule.name !== undefined) {
      if (RESERVED_REASONS.has(rule.name) || usedNames.has(rule.name)) {
        invalid(`${at}.name: ${JSON.stringify(rule.name)} is ${usedNames.has(rule.name) ? 'used by another rule' : 'reserved'}; pick another name`);
      }
      usedNames.add(rule.name);
      reason = `rule:${rule.name}`;
    }
    const decision: RolloutDecision = Object.freeze({ action: rule.action, signer: checkSigner(rule.signer, rule.action, `${at}.signer`), reason });
    return { conditions, decision };
  });

  const d = p.default;
  const defaultAction = typeof d === 'string' ? d : d.action;
  const fallback: RolloutDecision = Object.freeze({
    action: defaultAction,
    signer: checkSigner(typeof d === 'string' ? undefined : d.signer, defaultAction, `${path}.default.signer`),
    reason: 'default',
  });
  const overrideHeader = p.overrideHeader?.toLowerCase();
  const overridden: RolloutDecision = Object.freeze({ action: 'proxy', signer: NO_SIGNER, reason: 'override_header' });

  return {
    mode: p.mode ?? 'enforce',
    decide(req, repository, size) {
      if (overrideHeader !== undefined && req.headers[overrideHeader] !== undefined) return overridden;
      const facts: Facts = { req, repository, size };
      for (const rule of rules) {
        let ok = true;
        for (const condition of rule.conditions) {
          if (!condition(facts)) {
            ok = false;
            break;
          }
        }
        if (ok) return rule.decision;
      }
      return fallback;
    },
  };
}

/** Options of {@link compileRollout}. */
export interface CompileRolloutOptions {
  /** Signer names rules may use besides `default` (the keys of the `signers` option). Default none. */
  signers?: readonly string[];
  /** As the middleware's `trustedProxies`: peers whose `X-Forwarded-For` is believed. Default none. */
  trustedProxies?: readonly string[];
}

/**
 * Validates and compiles a rollout policy outside the middleware (to check a policy, or to ask
 * what it would decide for a request). Throws CONFIG_INVALID naming the key and the fix.
 *
 * @example
 * ```ts
 * const policy = compileRollout({ rules: [{ percent: 5, action: 'redirect', signer: 'cdn' }], default: 'proxy' }, { signers: ['cdn'] });
 * policy.decide(req, 'library/alpine', 1024); // { action, signer, reason }
 * ```
 */
export function compileRollout(policy: RolloutPolicy | undefined, options: CompileRolloutOptions = {}): CompiledRollout {
  return compilePolicy(policy, {
    signerNames: [DEFAULT_SIGNER, ...(options.signers ?? []).filter((n) => n !== DEFAULT_SIGNER)],
    clientIp: createClientIpResolver(options.trustedProxies ?? []),
  });
}
