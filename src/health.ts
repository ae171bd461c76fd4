import type { IncomingHttpHeaders } from 'node:http';
import { RegistryRedirectError, configError } from './errors.js';
import { errorForLog } from './log.js';
import type { CompleteObserver } from './metrics.js';
import { isValidDigest, isValidRepositoryName } from './routes.js';
import type { Logger, ProbeResult, Signer, SignerHealth, SignerHealthOptions, SignerStatus, UpstreamTlsOptions } from './types.js';

export type { ProbeResult, SignerHealth, SignerHealthOptions, SignerProbeOptions, SignerStatus } from './types.js';

export const DEFAULT_HEALTH = { failureThreshold: 3, retryAfter: 30_000, interval: 30_000, timeout: 5_000 } as const;

function positiveMs(value: unknown, key: string): void {
  if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && value > 0)) {
    configError(`${key}: write a positive number of milliseconds, got ${JSON.stringify(value)}`);
  }
}

/** Checks `health` options at construction; messages name the key and the fix. */
export function validateHealthOptions(options: SignerHealthOptions | undefined, signerNames: readonly string[], path = 'health'): void {
  if (options === undefined) return;
  if (options === null || typeof options !== 'object') configError(`${path}: write an object, e.g. { failureThreshold: 3 }`);
  const t = options.failureThreshold;
  if (t !== undefined && !(Number.isSafeInteger(t) && t >= 1)) configError(`${path}.failureThreshold: write a whole number >= 1, e.g. 3`);
  positiveMs(options.retryAfter, `${path}.retryAfter`);
  const p = options.probe;
  if (p === undefined) return;
  if (typeof p.repository !== 'string' || !isValidRepositoryName(p.repository)) {
    configError(`${path}.probe.repository: ${JSON.stringify(p.repository)} is not a repository name; write e.g. "library/alpine"`);
  }
  if (typeof p.digest !== 'string' || !isValidDigest(p.digest)) {
    configError(`${path}.probe.digest: ${JSON.stringify(p.digest)} is not a digest; write the digest of a blob that exists in storage, e.g. "sha256:<64 hex>"`);
  }
  positiveMs(p.interval, `${path}.probe.interval`);
  positiveMs(p.timeout, `${path}.probe.timeout`);
  for (const name of p.signers ?? []) {
    if (!signerNames.includes(name)) configError(`${path}.probe.signers: unknown signer ${JSON.stringify(name)}; known: ${signerNames.join(', ')}`);
  }
}

/** What {@link httpRequest} resolves with. */
export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  /** The first `bodyLimit` bytes of the body (empty with the default limit 0). */
  body: Buffer;
}

/**
 * One bounded request with node:http(s) rather than fetch: fetch refuses the "bad ports" of the
 * Fetch standard (6000, 10080, ...), where storage or a registry may well listen, and takes no
 * per-request CA or client certificate (`tls`: the upstream's trust, see upstreamAgentOptions).
 * Never follows redirects. Keeps the first `bodyLimit` bytes of the body (default 0: discarded)
 * and closes the connection past them. Rejects on network errors and after `timeoutMs`;
 * `timeoutMessage` names the caller's whole budget when `timeoutMs` is only what is left of it.
 */
export function httpRequest(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; timeoutMs: number; timeoutMessage?: string; tls?: UpstreamTlsOptions | undefined; bodyLimit?: number },
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch (cause) {
      reject(new RegistryRedirectError('SIGNER_FAILED', 'not a URL', { cause }));
      return;
    }
    const limit = opts.bodyLimit ?? 0;
    // Loaded on first use: importing node:https costs more than the rest of the package.
    const request = target.protocol === 'https:' ? process.getBuiltinModule('node:https').request : process.getBuiltinModule('node:http').request;
    const req = request(target, { ...opts.tls, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      const answer = (): HttpAnswer => ({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).subarray(0, limit) });
      if (limit === 0) {
        clearTimeout(timer);
        res.resume();
        resolve(answer());
        return;
      }
      let size = 0;
      const done = () => {
        clearTimeout(timer);
        resolve(answer());
      };
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        size += chunk.length;
        if (size >= limit) {
          done();
          res.destroy();
        }
      });
      res.on('end', done);
      res.on('close', done);
      res.on('error', done);
    });
    const timer = setTimeout(() => req.destroy(new Error(opts.timeoutMessage ?? `timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs);
    timer.unref();
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}

/** {@link httpRequest}'s status only, body discarded: what the probes and `/readyz` need. */
export async function httpStatus(url: string, opts: { headers?: Record<string, string>; timeoutMs: number; timeoutMessage?: string; tls?: UpstreamTlsOptions | undefined }): Promise<number> {
  return (await httpRequest(url, opts)).status;
}

/**
 * Probes storage through `signer`: signs the blob, fetches one byte of it. Used by the breaker and
 * usable on its own (e.g. by a `check` command).
 */
export async function probeSigner(signer: Signer, probe: { repository: string; digest: string }, timeoutMs: number = DEFAULT_HEALTH.timeout): Promise<ProbeResult> {
  const started = performance.now();
  const ms = () => Math.round(performance.now() - started);
  const deadline = Date.now() + timeoutMs;
  let timer: NodeJS.Timeout | undefined;
  try {
    const signed = await Promise.race([
      Promise.resolve(signer.sign({ repository: probe.repository, digest: probe.digest, method: 'GET' })),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new RegistryRedirectError('SIGNER_TIMEOUT', `timed out after ${timeoutMs} ms`)), timeoutMs);
        timer.unref();
      }),
    ]).finally(() => clearTimeout(timer));
    // One budget for signing and fetching: the fetch gets what is left, the message names the whole.
    const status = await httpStatus(signed.url, {
      headers: { range: 'bytes=0-0' },
      timeoutMs: Math.max(1, deadline - Date.now()),
      timeoutMessage: `timed out after ${timeoutMs} ms`,
    });
    if (status >= 200 && status < 300) return { ok: true, status, ms: ms() };
    return { ok: false, status, error: `storage answered ${status}`, ms: ms() };
  } catch (err) {
    const e = errorForLog(err);
    const code = (err as { code?: unknown }).code;
    return { ok: false, error: typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message, ms: ms() };
  }
}

interface State {
  healthy: boolean;
  failures: number;
  since: number;
  lastError?: string;
  lastProbe?: ProbeResult & { at: number };
}

/** Builds the breakers for `signers` (name -> signer). Call `start()`-free: probing starts at once. */
export function createSignerHealth(
  signers: ReadonlyMap<string, Signer>,
  options: SignerHealthOptions | undefined,
  deps: { logger: Logger; observer: CompleteObserver; now?: () => number },
): SignerHealth {
  const now = deps.now ?? (() => Date.now());
  const threshold = options?.failureThreshold ?? DEFAULT_HEALTH.failureThreshold;
  const retryAfter = options?.retryAfter ?? DEFAULT_HEALTH.retryAfter;
  const probe = options?.probe;
  const probed = new Set(probe ? (probe.signers ?? [...signers.keys()]) : []);
  const states = new Map<string, State>();
  for (const name of signers.keys()) states.set(name, { healthy: true, failures: 0, since: now() });
  let closed = false;

  const setHealthy = (name: string, s: State, healthy: boolean, why: string): void => {
    s.healthy = healthy;
    s.since = now();
    if (closed) return;
    deps.observer.signerHealth(name, healthy);
    if (healthy) deps.logger.info({ signer: name, reason: why }, 'signer healthy again: redirecting');
    else deps.logger.warn({ signer: name, failures: s.failures, error: s.lastError, reason: why }, 'signer unhealthy: falling back');
  };

  const failure = (name: string, message: string, why: string): void => {
    const s = states.get(name);
    if (!s) return;
    s.failures++;
    s.lastError = message;
    if (s.healthy && s.failures >= threshold) setHealthy(name, s, false, why);
    else if (!s.healthy) s.since = now(); // a failed trial restarts the wait
  };

  const success = (name: string, why: string): void => {
    const s = states.get(name);
    if (!s) return;
    s.failures = 0;
    if (!s.healthy) setHealthy(name, s, true, why);
  };

  let round: Promise<Record<string, ProbeResult>> | undefined;
  const probeNow = (): Promise<Record<string, ProbeResult>> => {
    if (!probe) return Promise.resolve({});
    round ??= (async () => {
      const entries = await Promise.all(
        [...probed].map(async (name) => {
          const result = await probeSigner(signers.get(name)!, probe, probe.timeout ?? DEFAULT_HEALTH.timeout);
          const s = states.get(name)!;
          s.lastProbe = { ...result, at: now() };
          if (!closed) {
            deps.observer.probe(name, result.ok);
            if (result.ok) success(name, 'probe passed');
            else failure(name, result.error ?? 'probe failed', 'probe failed');
          }
          return [name, result] as const;
        }),
      );
      return Object.fromEntries(entries);
    })().finally(() => {
      round = undefined;
    });
    return round;
  };

  let timer: NodeJS.Timeout | undefined;
  if (probe && probed.size > 0) {
    timer = setInterval(() => void probeNow(), probe.interval ?? DEFAULT_HEALTH.interval);
    timer.unref();
    void probeNow();
  }

  return {
    available(name) {
      const s = states.get(name);
      if (!s || s.healthy) return true;
      // Without a probe nothing else would ever close the breaker: let traffic try again.
      return !probed.has(name) && now() - s.since >= retryAfter;
    },
    success: (name) => success(name, 'signing succeeded'),
    failure: (name, err) => failure(name, errorForLog(err).message, 'signing failed'),
    anyHealthy: () => [...states.values()].some((s) => s.healthy),
    status() {
      const out: Record<string, SignerStatus> = {};
      for (const [name, s] of states) {
        out[name] = {
          healthy: s.healthy,
          consecutiveFailures: s.failures,
          since: s.since,
          ...(s.lastError !== undefined ? { lastError: s.lastError } : {}),
          ...(s.lastProbe ? { lastProbe: { ...s.lastProbe } } : {}),
        };
      }
      return out;
    },
    probeNow,
    publish() {
      for (const [name, s] of states) deps.observer.signerHealth(name, s.healthy);
    },
    close() {
      closed = true;
      if (timer) clearInterval(timer);
    },
  };
}
