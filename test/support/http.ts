/**
 * Minimal HTTP client for tests: never follows redirects, so a 307 and its
 * headers can be asserted as-is, and always bounded by a timeout.
 *
 * @module
 */
import http from 'node:http';
import https from 'node:https';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** Options for {@link request}. */
export interface RequestOptions {
  /** HTTP method (default `GET`). */
  method?: string;
  /** Request headers, sent verbatim. */
  headers?: OutgoingHttpHeaders;
  /** Request body. */
  body?: Buffer | string;
  /** Abort after this many milliseconds (default 10 000). */
  timeoutMs?: number;
  /** Agent to use (default: a fresh connection, no keep-alive). */
  agent?: http.Agent | false;
  /** Connect from this local (loopback) address. */
  localAddress?: string;
  /** https: trust (`ca`), a client certificate (`cert`, `key`), or `rejectUnauthorized: false`. */
  tls?: Pick<https.RequestOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'servername'>;
}

/** Response of {@link request}: status, lower-cased headers and the full body. */
export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Raw header list as received (name, value, name, value, ...). */
  rawHeaders: string[];
  body: Buffer;
}

/**
 * Perform one HTTP(S) request and buffer the response. Redirects are NOT followed.
 * Rejects on network error or timeout.
 */
export function request(url: string | URL, opts: RequestOptions = {}): Promise<HttpResponse> {
  const u = typeof url === 'string' ? new URL(url) : url;
  const mod = u.protocol === 'https:' ? https : http;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const req = mod.request(
      u,
      { ...opts.tls, method: opts.method ?? 'GET', headers: opts.headers ?? {}, agent: opts.agent ?? false, ...(opts.localAddress && { localAddress: opts.localAddress }) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          clearTimeout(timer);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body: Buffer.concat(chunks),
          });
        });
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`request ${opts.method ?? 'GET'} ${u.href} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    if (opts.body !== undefined) req.end(opts.body);
    else req.end();
  });
}

/**
 * Race `promise` against a timer; rejects with `label` in the message after `ms`.
 * The timer is cleared when the promise settles.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, label = 'operation'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Poll `probe` every `intervalMs` until it returns true, or reject after `timeoutMs`.
 * `describe()` is called to enrich the timeout error (e.g. with a child's stderr).
 */
export async function waitFor(
  probe: () => Promise<boolean>,
  { timeoutMs = 10_000, intervalMs = 50, label = 'condition', describe, giveUp }: {
    timeoutMs?: number;
    intervalMs?: number;
    label?: string;
    describe?: () => string;
    /** Checked before each probe; a returned string aborts the wait with that reason. */
    giveUp?: () => string | undefined;
  } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    const reason = giveUp?.();
    if (reason !== undefined) {
      const extra = describe ? `\n${describe()}` : '';
      throw new Error(`gave up waiting for ${label}: ${reason}${extra}`);
    }
    try {
      if (await probe()) return;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      const extra = describe ? `\n${describe()}` : '';
      const last = lastErr instanceof Error ? ` (last error: ${lastErr.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${label}${last}${extra}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// Hop-by-hop headers (RFC 9110 7.6.1): they belong to one connection and are never forwarded.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'upgrade', 'transfer-encoding']);

/** The end-to-end headers of a request or response, for the recording fronts' forwarding. */
export function forwardHeaders(h: IncomingHttpHeaders): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (!HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}
