import type { IncomingMessage } from 'node:http';
import picomatch from 'picomatch';
import { z } from 'zod';
import { parseCidrList, type ClientAddress, type ClientIpResolver } from './client-ip.js';
import { RegistryRedirectError } from './errors.js';
import { parseConfigPart, suggestKey } from './validate.js';

/** What a rule (or the default) does with an authorized blob GET. */
export type RolloutAction = 'redirect' | 'proxy';

/**
 * How a client is identified for sticky `percent` rules. The key is only ever hashed into a
 * bucket; it is never logged, stored, or used as a metric label.
 * - `'ip'` (default): the client address (see `trustedProxies`).
 * - `'subject'`: the user name of Basic credentials, or the `sub` claim of a Bearer JWT (decoded,
 *   not verified: a client that forges its subject only picks its own bucket; `percent` is a
 *   rollout knob, never access control). Falls back to the client address for anonymous pulls
 *   and opaque tokens. The password or token itself never enters the key.
 * - a function `(req) => string | undefined` for anything else (`undefined` -> client address).
 */
export type RolloutClientKey = 'ip' | 'subject' | ((req: IncomingMessage) => string | undefined);

/**
 * One rollout rule: conditions plus an action. Every condition given must hold (AND); within a
 * list, any entry may match (OR). A rule without conditions matches every request.
 *
 * @example
 * ```ts
 * { networks: ['10.0.0.0/8'], action: 'redirect', signer: 's3' }
 * { repositories: ['internal/**'], action: 'proxy' }
 * { percent: 30, action: 'redirect', signer: 'cdn' }
 * ```
 */
export interface RolloutRule {
  /** Label used as the decision `reason` in metrics and logs (`rule:<name>`). Default `rules[<index>]`. Example `vpc`. */
  name?: string;
  /**
   * Sticky share of clients, 0-100 (two decimals). A client is in when the stable hash of its
   * key (see `clientKey`) falls below the share, so raising 5 -> 20 keeps the first 5% in and
   * every replica with the same `seed` agrees. Example `1`.
   */
  percent?: number;
  /**
   * Repository globs (picomatch: `*` stays inside one path segment, `**` spans segments and also
   * matches the prefix itself). A list includes; entries starting with `!` exclude. Or
   * `{ include, exclude }`. Example `["internal/**", "!internal/public/**"]`.
   */
  repositories?: readonly string[] | { include?: readonly string[]; exclude?: readonly string[] };
  /** Client networks, IPv4 and IPv6 CIDRs or single addresses. Example `["10.0.0.0/8", "fd00::/8"]`. */
  networks?: readonly string[];
  /**
   * User-Agent regular expressions, case-insensitive, tested against the first 1024 characters.
   * A list is an allow list; `{ allow, deny }` for both. Fragile: BuildKit and CRI send a bare
   * `containerd/<v>`; prefer `networks`. Example `{ deny: ["^regclient/"] }`.
   */
  userAgents?: readonly string[] | { allow?: readonly string[]; deny?: readonly string[] };
  /**
   * Matches only blobs at least this large: bytes, or a size like `"8MiB"`, `"10MB"`. The size is
   * the upstream's `Content-Length` on the authorizing HEAD; an unknown size never matches.
   */
  minSize?: number | string;
  /**
   * `false`: matches only requests without a `Range` header (so resumes are served by the
   * upstream, as zot does). `true`: matches only ranged requests. Omitted: both (the default is to
   * redirect ranged requests too).
   */
  range?: boolean;
  /** `redirect` (to a signed URL) or `proxy` (serve the bytes from the upstream). */
  action: RolloutAction;
  /** Redirect only: a key of the `signers` map. Omitted -> the default `signer`. */
  signer?: string;
}

/** The default decision: an action, or a redirect to a named signer. */
export type RolloutDefault = RolloutAction | { action: RolloutAction; signer?: string };

/**
 * The rollout policy (option `rollout`): ordered rules, first match wins, then `default`. Without
 * a policy every authorized blob GET is redirected with the default signer.
 *
 * @example
 * ```ts
 * rollout: {
 *   rules: [
 *     { networks: ['10.0.0.0/8'], action: 'proxy' },
 *     { percent: 30, action: 'redirect', signer: 'cdn' },
 *   ],
 *   default: 'proxy',
 * }
 * ```
 */
export interface RolloutPolicy {
  /** Rules, first match wins. Default none. */
  rules?: readonly RolloutRule[];
  /** Decision when no rule matches. Required: `"redirect"` (rules are exceptions) or `"proxy"` (rules opt in). */
  default: RolloutDefault;
  /**
   * `'enforce'` (default) acts on decisions. `'shadow'` computes each decision and signs, logs and
   * counts it (`action="shadow"`), but serves every blob from the upstream: validate a policy on
   * live traffic before any client sees a redirect.
   */
  mode?: 'enforce' | 'shadow';
  /** Client identity for `percent`. Default `'ip'`. See {@link RolloutClientKey}. */
  clientKey?: RolloutClientKey;
  /** Mixed into the `percent` hash; change it to draw a different cohort. Default `""`. Example `"2026-05"`. */
  seed?: string;
  /**
   * Name of a request header that forces `proxy` for that request (debugging: "is the CDN the
   * problem?"). Off by default. It can only ever turn a redirect off, so any client may send it.
   * Example `X-Registry-Redirect-Bypass`.
   */
  overrideHeader?: string;
}

/** A decision for one authorized blob GET. Frozen, shared between requests. */
export interface RolloutDecision {
  readonly action: RolloutAction;
  /** Signer name for a redirect (`default` or a key of `signers`); `none` for proxy. */
  readonly signer: string;
  /** Why: `default`, `rule:<name>`, `rules[<i>]` or `override_header`. Bounded: a metric label. */
  readonly reason: string;
}

/** A compiled policy; `decide` does no parsing or compiling. */
export interface CompiledRollout {
  readonly mode: 'enforce' | 'shadow';
  decide(req: IncomingMessage, repository: string, size: number | undefined): RolloutDecision;
}

/** The name of the signer given as `signer` (the default one). */
export const DEFAULT_SIGNER = 'default';
/** Signer label of decisions that do not sign. */
export const NO_SIGNER = 'none';

const UA_MAX = 1024;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const RULE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const RESERVED_REASONS = new Set(['default', 'override_header']);

const action = z.enum(['redirect', 'proxy'], { error: 'write "redirect" or "proxy"' });
const strings = (example: string) =>
  z.array(z.string({ error: `write a string, e.g. ${example}` }), { error: `write a list, e.g. [${example}]` });
const signerName = z.string({ error: 'write the name of a signer from `signers`, e.g. "cdn"' });

const ruleSchema = z
  .object({
    name: z.string().regex(RULE_NAME, { error: 'write 1-64 letters, digits, "_", "." or "-", e.g. "vpc"' }).optional(),
    percent: z
      .number({ error: 'write a number from 0 to 100, e.g. 30' })
      .min(0, { error: 'write a number from 0 to 100, e.g. 30' })
      .max(100, { error: 'write a number from 0 to 100, e.g. 30' })
      .optional(),
    repositories: z
      .union([strings('"internal/**"'), z.object({ include: strings('"team/**"').optional(), exclude: strings('"team/secret/**"').optional() }).strict()], {
        error: 'write a list of globs, e.g. ["internal/**", "!internal/public/**"], or { include: [...], exclude: [...] }',
      })
      .optional(),
    networks: strings('"10.0.0.0/8"').optional(),
    userAgents: z
      .union([strings('"^containerd/"'), z.object({ allow: strings('"^containerd/"').optional(), deny: strings('"^regclient/"').optional() }).strict()], {
        error: 'write a list of regular expressions, e.g. ["^containerd/"], or { allow: [...], deny: [...] }',
      })
      .optional(),
    minSize: z.union([z.number(), z.string()], { error: 'write a size, e.g. "8MiB" or 8388608' }).optional(),
    range: z.boolean({ error: 'write true (only ranged requests) or false (only requests without Range)' }).optional(),
    action,
    signer: signerName.optional(),
  })
  .strict();

const policySchema = z
  .object({
    rules: z.array(ruleSchema, { error: 'write a list of rules, e.g. [{ percent: 1, action: redirect }]' }).optional(),
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

function compileRegexes(list: readonly string[], key: string): RegExp[] {
  return list.map((source, i) => {
    try {
      return new RegExp(source, 'i');
    } catch (cause) {
      throw new RegistryRedirectError('CONFIG_INVALID', `${key}[${i}]: ${JSON.stringify(source)} is not a regular expression (${(cause as Error).message}); write e.g. "^containerd/"`, { cause });
    }
  });
}

function compileGlobs(list: readonly string[], key: string): (name: string) => boolean {
  list.forEach((glob, i) => {
    if (glob === '') throw new RegistryRedirectError('CONFIG_INVALID', `${key}[${i}]: empty glob; write e.g. "internal/**"`);
  });
  return list.length === 0 ? () => false : picomatch(list as string[]);
}

/**
 * Compiles and validates a policy once: globs, CIDRs and regular expressions are built here, so a
 * request only runs the predicates. Errors name the key (`rollout.rules[2].networks[0]: ...`) and
 * the fix. `signerNames` are the names a rule may use (`default` plus the keys of `signers`).
 */
export function compileRollout(
  policy: RolloutPolicy | undefined,
  context: { signerNames: readonly string[]; clientIp: ClientIpResolver; path?: string },
): CompiledRollout {
  const path = context.path ?? 'rollout';
  if (policy === undefined) {
    const always: RolloutDecision = Object.freeze({ action: 'redirect', signer: DEFAULT_SIGNER, reason: 'default' });
    return { mode: 'enforce', decide: () => always };
  }
  const p = parseConfigPart(policySchema, policy, path);

  const checkSigner = (name: string | undefined, act: RolloutAction, key: string): string => {
    if (name === undefined) return act === 'redirect' ? DEFAULT_SIGNER : NO_SIGNER;
    if (act !== 'redirect') {
      throw new RegistryRedirectError('CONFIG_INVALID', `${key}: a signer only applies to action "redirect"; remove it or write action: redirect`);
    }
    if (!context.signerNames.includes(name)) {
      const hint = suggestKey(name, context.signerNames);
      throw new RegistryRedirectError(
        'CONFIG_INVALID',
        `${key}: unknown signer ${JSON.stringify(name)}${hint ? `; did you mean "${hint}"?` : ''} Define it under \`signers:\`; known: ${context.signerNames.join(', ')}`,
      );
    }
    return name;
  };

  const keyFn = p.clientKey ?? 'ip';
  const seed = p.seed ?? '';
  const clientOf = (f: Facts): ClientAddress => (f.client ??= context.clientIp(f.req));
  const bucketOf = (f: Facts): number => {
    if (f.bucket !== undefined) return f.bucket;
    let key: string | undefined;
    if (keyFn === 'subject') key = credentialSubject(f.req.headers.authorization);
    else if (typeof keyFn === 'function') key = keyFn(f.req);
    key ??= `ip:${clientOf(f).text}`;
    return (f.bucket = stickyBucket(key, seed));
  };

  const usedNames = new Set<string>();
  const rules = (p.rules ?? []).map((rule, i) => {
    const at = `${path}.rules[${i}]`;
    const conditions: Condition[] = [];
    // Cheapest first: a request stops at the first condition that fails.
    if (rule.range !== undefined) {
      const wantRange = rule.range;
      conditions.push((f) => (f.req.headers.range !== undefined) === wantRange);
    }
    if (rule.minSize !== undefined) {
      const min = parseSize(rule.minSize, `${at}.minSize`);
      conditions.push((f) => f.size !== undefined && f.size >= min);
    }
    if (rule.repositories !== undefined) {
      const r = rule.repositories;
      const list = Array.isArray(r) ? (r as readonly string[]) : undefined;
      const obj = list ? undefined : (r as { include?: readonly string[]; exclude?: readonly string[] });
      const include = list ? list.filter((g) => !g.startsWith('!')) : (obj?.include ?? []);
      const exclude = list ? list.filter((g) => g.startsWith('!')).map((g) => g.slice(1)) : (obj?.exclude ?? []);
      if (include.length === 0 && exclude.length === 0) {
        throw new RegistryRedirectError('CONFIG_INVALID', `${at}.repositories: empty; write at least one glob, e.g. ["internal/**"]`);
      }
      const inc = include.length ? compileGlobs(include, `${at}.repositories`) : undefined;
      const exc = exclude.length ? compileGlobs(exclude, `${at}.repositories`) : undefined;
      conditions.push((f) => (inc === undefined || inc(f.repository)) && !(exc?.(f.repository) ?? false));
    }
    if (rule.networks !== undefined) {
      if (rule.networks.length === 0) {
        throw new RegistryRedirectError('CONFIG_INVALID', `${at}.networks: empty; write at least one CIDR, e.g. ["10.0.0.0/8"]`);
      }
      const networks = parseCidrList(rule.networks, `${at}.networks`);
      conditions.push((f) => networks.has(clientOf(f).address));
    }
    if (rule.userAgents !== undefined) {
      const u = rule.userAgents;
      const list = Array.isArray(u) ? (u as readonly string[]) : undefined;
      const obj = list ? undefined : (u as { allow?: readonly string[]; deny?: readonly string[] });
      const allow = compileRegexes(list ?? obj?.allow ?? [], `${at}.userAgents${list ? '' : '.allow'}`);
      const deny = compileRegexes(obj?.deny ?? [], `${at}.userAgents.deny`);
      if (allow.length === 0 && deny.length === 0) {
        throw new RegistryRedirectError('CONFIG_INVALID', `${at}.userAgents: empty; write at least one regular expression, e.g. ["^containerd/"]`);
      }
      conditions.push((f) => {
        const raw = f.req.headers['user-agent'] ?? '';
        const ua = raw.length > UA_MAX ? raw.slice(0, UA_MAX) : raw;
        return (allow.length === 0 || allow.some((re) => re.test(ua))) && !deny.some((re) => re.test(ua));
      });
    }
    if (rule.percent !== undefined) {
      const threshold = Math.round(rule.percent * 100);
      conditions.push((f) => bucketOf(f) < threshold);
    }
    let reason = `rules[${i}]`;
    if (rule.name !== undefined) {
      if (RESERVED_REASONS.has(rule.name) || usedNames.has(rule.name)) {
        throw new RegistryRedirectError('CONFIG_INVALID', `${at}.name: ${JSON.stringify(rule.name)} is ${usedNames.has(rule.name) ? 'used by another rule' : 'reserved'}; pick another name`);
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
