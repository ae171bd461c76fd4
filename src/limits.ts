import type http from 'node:http';
import type https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ClientIpResolver } from './client-ip.js';
import { RegistryRedirectError, sendOciError } from './errors.js';
import type { Limits } from './types.js';

/** Authorizing HEADs in flight or waiting for a connection, beyond which a blob GET gets 503. */
export const DEFAULT_MAX_PENDING_AUTHORIZATIONS = 1_000;
/** Upstream connections per pool (see {@link Limits.upstreamSockets}). */
export const DEFAULT_UPSTREAM_SOCKETS = { authorize: 128, uploads: 256, passThrough: 256 } as const;

/** Validated {@link Limits} with defaults filled in; `maxUploadsPerClient: 0` means no cap. */
export interface ResolvedLimits {
  maxPendingAuthorizations: number;
  maxUploadsPerClient: number;
  upstreamSockets: { authorize: number; uploads: number; passThrough: number };
}

const KNOWN = ['maxPendingAuthorizations', 'maxUploadsPerClient', 'upstreamSockets'];

function positiveInteger(value: unknown, key: string, example: number, allowZero = false): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < (allowZero ? 0 : 1)) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: ${JSON.stringify(value)} is not a ${allowZero ? 'whole number >= 0' : 'positive whole number'}; write e.g. ${example}${allowZero ? ' (0 turns the cap off)' : ''}`);
  }
  return value;
}

/** Validates the public `limits` option at construction; messages name the key. */
export function resolveLimits(limits: Limits | undefined, key = 'limits'): ResolvedLimits {
  if (limits !== undefined && (limits === null || typeof limits !== 'object' || Array.isArray(limits))) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: write an object such as { maxPendingAuthorizations: 1000, maxUploadsPerClient: 8 }`);
  }
  const l = limits ?? {};
  for (const k of Object.keys(l)) {
    if (!KNOWN.includes(k)) throw new RegistryRedirectError('CONFIG_INVALID', `${key}.${k}: unknown option; known: ${KNOWN.join(', ')}`);
  }
  const sockets = l.upstreamSockets ?? {};
  if (sockets === null || typeof sockets !== 'object' || Array.isArray(sockets)) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}.upstreamSockets: write an object such as { authorize: 128, uploads: 256, passThrough: 256 }`);
  }
  for (const k of Object.keys(sockets)) {
    if (!(k in DEFAULT_UPSTREAM_SOCKETS)) {
      throw new RegistryRedirectError('CONFIG_INVALID', `${key}.upstreamSockets.${k}: unknown pool; known: ${Object.keys(DEFAULT_UPSTREAM_SOCKETS).join(', ')}`);
    }
  }
  const pool = (name: keyof typeof DEFAULT_UPSTREAM_SOCKETS) =>
    positiveInteger(sockets[name] ?? DEFAULT_UPSTREAM_SOCKETS[name], `${key}.upstreamSockets.${name}`, DEFAULT_UPSTREAM_SOCKETS[name]);
  return {
    maxPendingAuthorizations: positiveInteger(l.maxPendingAuthorizations ?? DEFAULT_MAX_PENDING_AUTHORIZATIONS, `${key}.maxPendingAuthorizations`, DEFAULT_MAX_PENDING_AUTHORIZATIONS),
    maxUploadsPerClient: positiveInteger(l.maxUploadsPerClient ?? 0, `${key}.maxUploadsPerClient`, 8, true),
    upstreamSockets: { authorize: pool('authorize'), uploads: pool('uploads'), passThrough: pool('passThrough') },
  };
}

/** The upstream connection pools: probes never wait behind pass-through, reads never behind uploads. */
export interface UpstreamPools {
  /** Authorizing HEADs. */
  readonly authorize: http.Agent;
  /** Requests with a body (POST/PATCH/PUT); their number is bounded by the pass-through queue. */
  readonly uploads: http.Agent;
  /** Everything else that streams through. */
  readonly passThrough: http.Agent;
  destroy(): void;
}

/** `tls`: the TLS options every pool connects with (see upstreamAgentOptions in upstream-tls.ts). */
export function createUpstreamPools(upstream: URL, limits: ResolvedLimits, tls: https.AgentOptions = {}): UpstreamPools {
  // getBuiltinModule: node:https costs more to load than the rest of the package; only proxy mode needs it.
  const Agent = upstream.protocol === 'https:' ? process.getBuiltinModule('node:https').Agent : process.getBuiltinModule('node:http').Agent;
  // The agents are unbounded: the probe and createPassThrough queue in front of them, where a
  // request can be withdrawn at its deadline (one queued inside an agent gets a connection opened
  // for it, and only then can it be dropped).
  const authorize = new Agent({ ...tls, keepAlive: true, maxFreeSockets: Math.min(64, limits.upstreamSockets.authorize) });
  const uploads = new Agent({ ...tls, keepAlive: true, maxFreeSockets: 64 });
  const passThrough = new Agent({ ...tls, keepAlive: true, maxFreeSockets: 64 });
  return {
    authorize,
    uploads,
    passThrough,
    destroy() {
      authorize.destroy();
      uploads.destroy();
      passThrough.destroy();
    },
  };
}

/** True for the methods that carry a request body through the proxy (uploads, manifest PUTs). */
export function isUpload(method: string | undefined): boolean {
  return method === 'POST' || method === 'PATCH' || method === 'PUT';
}

/**
 * A FIFO of callers waiting for one of `concurrency` slots. `acquire` runs `start` at once when a
 * slot is free, else when one frees up; the returned function withdraws a caller still waiting
 * (it is a no-op once started). Every started caller must `release()` exactly once. Deadlines are
 * the caller's: a waiter needs no timer of its own.
 */
export interface SlotQueue {
  acquire(start: () => void): () => void;
  release(): void;
  /** Callers running now. */
  readonly active: number;
}

interface Waiter {
  start: (() => void) | undefined;
}

export function createSlotQueue(concurrency: number): SlotQueue {
  let active = 0;
  let queue: Waiter[] = [];
  let head = 0;
  const noop = (): void => {};

  return {
    acquire(start) {
      if (active < concurrency && head === queue.length) {
        active++;
        start();
        return noop;
      }
      const w: Waiter = { start };
      queue.push(w);
      return () => {
        w.start = undefined;
      };
    },
    release() {
      active--;
      while (active < concurrency && head < queue.length) {
        const start = queue[head++]!.start;
        if (start === undefined) continue;
        active++;
        start();
      }
      if (head === queue.length) {
        queue = [];
        head = 0;
      } else if (head > 1_024 && head * 2 > queue.length) {
        queue = queue.slice(head);
        head = 0;
      }
    },
    get active() {
      return active;
    },
  };
}

/**
 * Runs `run` in a slot of `slots`, given what is left of `timeoutMs` (counted from now, the wait
 * included). A caller still waiting when the time is up is withdrawn and gets `expired()`.
 */
export function withSlot<T>(slots: SlotQueue, timeoutMs: number, run: (remainingMs: number) => Promise<T>, expired: () => Error): Promise<T> {
  const since = performance.now();
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let started = false;
    const start = (): void => {
      started = true;
      clearTimeout(timer);
      const left = timeoutMs - (performance.now() - since);
      if (left < 1) {
        slots.release();
        reject(expired());
        return;
      }
      run(left).then(
        (value) => {
          slots.release();
          resolve(value);
        },
        (err: unknown) => {
          slots.release();
          reject(err);
        },
      );
    };
    const withdraw = slots.acquire(start);
    if (!started) {
      timer = setTimeout(() => {
        withdraw();
        reject(expired());
      }, timeoutMs);
    }
  });
}

/**
 * Caps concurrent uploads per client address (resolved with `trustedProxies`, never a raw
 * `X-Forwarded-For`). Returns `undefined` when the cap is off. `admit` answers 429 itself and
 * returns false when the client is at its cap; an admitted upload is counted until its response closes.
 */
export function createUploadLimiter(max: number, clientIp: ClientIpResolver): ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined {
  if (max <= 0) return undefined;
  const uploads = new Map<string, number>();
  return (req, res) => {
    const client = clientIp(req).text;
    const n = uploads.get(client) ?? 0;
    if (n >= max) {
      // Connection: close, so the refused body is not read (a trickling client holds nothing).
      sendOciError(res, 429, 'TOOMANYREQUESTS', 'too many concurrent uploads from this client', { maxUploadsPerClient: max }, { 'Retry-After': '1', Connection: 'close' });
      return false;
    }
    uploads.set(client, n + 1);
    res.once('close', () => {
      const left = (uploads.get(client) ?? 1) - 1;
      if (left > 0) uploads.set(client, left);
      else uploads.delete(client);
    });
    return true;
  };
}
