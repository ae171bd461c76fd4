import { readFileSync } from 'node:fs';
import { parseDuration } from '../duration.js';
import { RegistryRedirectError } from '../errors.js';
import { parseUpstream } from '../middleware.js';
import { resolveLimits, type ResolvedLimits } from '../limits.js';
import type { Signer } from '../types.js';
import { buildRolloutConfig, type RolloutConfig } from './rollout-config.js';
import { authorizeFromConfig, type AuthorizeConfig } from './authorize-config.js';
import { buildCacheConfig, cacheBlock, type CacheConfig } from './cache-config.js';
import type { PreflightMode } from './preflight.js';
import { loadSignerKinds, signerFromConfig } from './signer-config.js';
import { buildPushConfig } from './push-config.js';
import type { PushOptions } from '../types.js';
import { parseConfigPart } from './validate.js';
import { tlsFromConfig, upstreamTlsFromConfig, type TlsServerConfig } from './tls.js';
import type { UpstreamTlsOptions } from '../types.js';
import { parseConfigYaml } from './yaml-errors.js';
import { zod } from '../lazy.js';

// The same zod instance as the signers' and rollout schemas (lazy.ts): a static import would load
// zod's ESM build next to the CommonJS one that `require` gets, twice the start-up cost.
const { z } = zod();

const duration = (example: string) =>
  z.union([z.string(), z.number()], { error: `write a duration, e.g. "${example}"` });

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
const LOG_FORMATS = ['json', 'pretty'] as const;

const fileSchema = z
  .object({
    listen: z.string({ error: 'write host:port, e.g. "0.0.0.0:8080" or "127.0.0.1:15080"' }).optional(),
    listenBacklog: z
      .number({ error: 'write the number of connections the kernel may queue before they are accepted, e.g. 4096 (default; Linux caps it at net.core.somaxconn)' })
      .int({ error: 'write a whole number of connections, e.g. 4096' })
      .min(1, { error: 'write at least 1, e.g. 4096' })
      .max(65_535, { error: 'write at most 65535, e.g. 4096' })
      .optional(),
    upstream: z.string({ error: 'write the upstream registry URL, e.g. "http://127.0.0.1:5000"' }),
    // Validated in tls.ts (file paths, then the files themselves).
    tls: z.unknown().optional(),
    upstreamTLS: z.unknown().optional(),
    signer: z.unknown().optional(),
    expiry: duration('20m').optional(),
    cache: cacheBlock.optional(),
    onSignerError: z.enum(['proxy', 'error'], { error: 'write "proxy" (serve the blob from upstream, default) or "error" (answer 503)' }).optional(),
    authorize: z.unknown().optional(),
    allowRedirectToRegistryHost: z
      .boolean({ error: 'write true (redirect even to storage on the registry host or a subdomain of it: clients send it their registry credentials) or false (default: proxy such blobs)' })
      .optional(),
    timeouts: z
      .object({
        authorize: duration('10s').optional(),
        upstream: duration('60s').optional(),
        signer: duration('5s').optional(),
        shutdown: duration('10s').optional(),
        headers: duration('60s').optional(),
        keepAlive: duration('5s').optional(),
      })
      .strict()
      .optional(),
    limits: z
      .object({
        maxConnections: z.number({ error: 'write a whole number of connections, e.g. 4096 (0: no limit)' }).int().min(0).optional(),
        maxPendingAuthorizations: z.number({ error: 'write a whole number, e.g. 1000' }).optional(),
        maxUploadsPerClient: z.number({ error: 'write a whole number, e.g. 8 (0: no cap)' }).optional(),
        upstreamSockets: z
          .object({
            authorize: z.number({ error: 'write a whole number, e.g. 128' }).optional(),
            uploads: z.number({ error: 'write a whole number, e.g. 256' }).optional(),
            passThrough: z.number({ error: 'write a whole number, e.g. 256' }).optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .optional(),
    preflight: z.enum(['fail', 'warn', 'off'], { error: 'write "fail" (default: storage refusing a signature stops the start), "warn" (log it, not ready) or "off" (no storage request at start)' }).optional(),
    log: z
      .object({
        level: z.enum(LOG_LEVELS, { error: `write one of ${LOG_LEVELS.join(', ')}` }).optional(),
        requests: z.boolean({ error: 'write true (one access log line per request, with its id; default) or false' }).optional(),
        format: z.enum(LOG_FORMATS, { error: 'write "json" (one JSON object per line) or "pretty" (colored, for a terminal); default: pretty on a terminal, json otherwise' }).optional(),
      })
      .strict()
      .optional(),
    // Validated in rollout-config.ts (trusted proxies, named signers, policy, breaker, metrics, reload).
    trustedProxies: z.unknown().optional(),
    signers: z.unknown().optional(),
    rollout: z.unknown().optional(),
    health: z.unknown().optional(),
    metrics: z.unknown().optional(),
    reload: z.unknown().optional(),
    // Validated in push-config.ts with the middleware's own compiler.
    push: z.unknown().optional(),
  })
  .strict();

/** A validated, ready-to-use server configuration. */
export interface ServerConfig extends Omit<RolloutConfig, 'metrics'> {
  listen: { host: string; port: number };
  /**
   * Connections the kernel queues for the listener before they are accepted (`listen(2)` backlog).
   * Default {@link DEFAULT_LISTEN_BACKLOG}; Node's own default, 511, overflows under a burst of
   * about a thousand new connections (SYN retransmits: p99 of a second or more).
   */
  listenBacklog: number;
  upstream: URL;
  /** `tls:`: serve HTTPS (HTTP/2 + HTTP/1.1). Undefined: plain HTTP/1.1. Paths; the files are read at start and on reload. */
  tls: TlsServerConfig | undefined;
  /** `upstreamTLS:` with its files read: the upstream agents' TLS options. */
  upstreamTLS: UpstreamTlsOptions | undefined;
  /** The default signer, wrapped in the signed-URL cache unless `cache.enabled: false`. */
  signer: Signer;
  expiryMs: number;
  cache: CacheConfig;
  onSignerError: 'proxy' | 'error';
  /** `authorize:` block: mode (upstream | token), token settings, decision cache. */
  authorize: AuthorizeConfig;
  /** Redirect to signed URLs on the registry's host or a subdomain of it. Default false: proxied. */
  allowRedirectToRegistryHost: boolean;
  timeouts: { authorize: number; upstream: number; signer: number; shutdown: number; headers: number; keepAlive: number };
  /**
   * `limits:`: the middleware's bounds plus `maxConnections` (per listener; `undefined`: derived
   * from the open-file limit at startup, see connection-limits.ts; `0`: no limit).
   */
  limits: ResolvedLimits & { maxConnections: number | undefined };
  /** `log.format` undefined: pretty on a terminal, JSON otherwise (decided by the CLI). */
  log: { level: (typeof LOG_LEVELS)[number]; requests: boolean; format?: (typeof LOG_FORMATS)[number] | undefined };
  /** `preflight:` proving each signer's credentials against storage at start. Default `fail`. */
  preflight: PreflightMode;
  /** `metrics:`; undefined -> no metrics. `listen` undefined -> served on the main listener at `path`. */
  metrics: { listen: { host: string; port: number } | undefined; path: string; defaultMetrics: boolean } | undefined;
  /** `push:` (upload sessions steered to the write endpoint); undefined -> uploads stream through. */
  push: PushOptions | undefined;
}

/** Default `listenBacklog` (Linux caps it at `net.core.somaxconn`, 4096 on current kernels). */
export const DEFAULT_LISTEN_BACKLOG = 4096;

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Replaces `${VAR}` in every string of the parsed YAML with the environment's value. */
export function expandEnv(value: unknown, env: NodeJS.ProcessEnv, path = ''): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (_, name: string) => {
      const v = env[name];
      if (v === undefined) {
        throw new RegistryRedirectError('CONFIG_INVALID', `${path || '(value)'}: environment variable ${name} is not set; export it or write the value in place of \${${name}}`);
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, env, `${path}[${i}]`));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandEnv(v, env, path ? `${path}.${k}` : k)]));
  }
  return value;
}

/** Parses `host:port`, `:port` or `[v6]:port`. */
export function parseListen(text: string, key = 'listen'): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]*)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: ${JSON.stringify(text)} is not host:port; write e.g. "0.0.0.0:8080", "127.0.0.1:15080" or ":8080"`);
  }
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/**
 * Validates a parsed (and env-expanded) config object. The signer kinds it names must be loaded
 * first ({@link loadSignerKinds}, which {@link loadConfig} calls).
 */
export function buildConfig(raw: unknown): ServerConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new RegistryRedirectError('CONFIG_INVALID', 'config: the file must be a YAML mapping with at least `upstream` and `signer`');
  }
  const file = parseConfigPart(fileSchema, raw, '');
  if (file.signer === undefined) {
    throw new RegistryRedirectError('CONFIG_INVALID', 'signer: missing; write e.g. "signer: { azure: { account: myaccount, container: registry } }"');
  }
  const expiryMs = file.expiry === undefined ? 20 * 60_000 : parseDuration(file.expiry, 'expiry');
  const cache = buildCacheConfig(file.cache, expiryMs);
  const t = file.timeouts ?? {};
  const ms = (v: string | number | undefined, key: string, dflt: number) => (v === undefined ? dflt : parseDuration(v, `timeouts.${key}`));
  let upstream: URL;
  try {
    upstream = parseUpstream(file.upstream);
  } catch (err) {
    throw err instanceof RegistryRedirectError ? err : new RegistryRedirectError('CONFIG_INVALID', String(err));
  }
  const listen = parseListen(file.listen ?? ':8080');
  const tls = tlsFromConfig(file.tls);
  const upstreamTLS = upstreamTlsFromConfig(file.upstreamTLS, upstream);
  const timeouts = {
    authorize: ms(t.authorize, 'authorize', 10_000),
    upstream: ms(t.upstream, 'upstream', 60_000),
    signer: ms(t.signer, 'signer', 5_000),
    shutdown: ms(t.shutdown, 'shutdown', 10_000),
    headers: ms(t.headers, 'headers', 60_000),
    keepAlive: ms(t.keepAlive, 'keepAlive', 5_000),
  };
  const { maxConnections, ...middlewareLimits } = file.limits ?? {};
  const limits = { ...resolveLimits(middlewareLimits, 'limits'), maxConnections };
  const signer = signerFromConfig(file.signer, 'signer', { expiry: expiryMs, listen });
  let extra: RolloutConfig;
  let push: PushOptions | undefined;
  try {
    extra = buildRolloutConfig(file, { expiry: expiryMs, listen });
    push = buildPushConfig(file.push, extra.trustedProxies);
  } catch (err) {
    void signer.close?.();
    throw err;
  }
  const metricsListen = extra.metrics?.listen;
  return {
    ...extra,
    metrics: extra.metrics && { ...extra.metrics, listen: metricsListen === undefined ? undefined : parseListen(metricsListen, 'metrics.listen') },
    listen,
    listenBacklog: file.listenBacklog ?? DEFAULT_LISTEN_BACKLOG,
    upstream,
    tls,
    upstreamTLS,
    signer,
    expiryMs,
    cache,
    onSignerError: file.onSignerError ?? 'proxy',
    timeouts,
    limits,
    authorize: authorizeFromConfig(file.authorize),
    push,
    allowRedirectToRegistryHost: file.allowRedirectToRegistryHost ?? false,
    log: { level: file.log?.level ?? 'info', requests: file.log?.requests ?? true, format: file.log?.format },
    preflight: file.preflight ?? 'fail',
  };
}

/**
 * Reads, env-expands and validates a YAML config file, importing the signer modules (and their
 * SDKs) it names.
 */
export async function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Promise<ServerConfig> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new RegistryRedirectError('CONFIG_INVALID', `--config: cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
  const expanded = expandEnv(parseConfigYaml(text, path), env);
  await loadSignerKinds(expanded);
  return buildConfig(expanded);
}
