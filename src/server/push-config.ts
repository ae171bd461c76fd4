import { createClientIpResolver } from '../client-ip.js';
import { RegistryRedirectError } from '../errors.js';
import { httpRequest, type HttpAnswer } from '../health.js';
import { silentLogger } from '../log.js';
import { completeObserver } from '../metrics.js';
import { compilePush, endpointForLog, type PushOptions } from '../push.js';

/** Validates the `push:` block at load (and reload) with the middleware's own compiler. */
export function buildPushConfig(raw: unknown, trustedProxies: readonly string[]): PushOptions | undefined {
  if (raw === undefined) return undefined;
  compilePush(raw as PushOptions, { clientIp: createClientIpResolver(trustedProxies), observer: completeObserver(undefined), logger: silentLogger });
  return raw as PushOptions;
}

/**
 * Header a registry-redirect server marks its answers with when a request carries it: the write
 * endpoint check sends it, so an endpoint that is this proxy (or another registry-redirect) is
 * recognised even though it relays `GET /v2/` from a real registry.
 */
export const PROBE_HEADER = 'x-registry-redirect-probe';

/** The verdict of {@link probeWriteEndpoint}. */
export interface EndpointVerdict {
  ok: boolean;
  text: string;
}

const CHALLENGE = /^\s*(basic|bearer)\b/i;

/**
 * Proves that `push.endpoint` speaks the registry API before any upload is steered there:
 * `GET <endpoint>/v2/` must answer 200 with `Docker-Distribution-API-Version`, or 401 with a
 * Basic/Bearer challenge (object storage answers 403/404 or XML, never either). An answer marked by
 * a registry-redirect server means the endpoint is a proxy, not the registry: bytes would still
 * be relayed (or loop), so it is refused.
 */
export async function probeWriteEndpoint(endpoint: URL | string, timeoutMs: number): Promise<EndpointVerdict> {
  const base = new URL(endpoint);
  const shown = endpointForLog(base);
  const url = `${base.origin}${base.pathname.replace(/\/+$/, '')}/v2/`;
  // node:http, not fetch: fetch refuses the Fetch standard's "bad ports" (6000, 10080, ...), where
  // a registry may well listen.
  let res: HttpAnswer;
  try {
    res = await httpRequest(url, { headers: { [PROBE_HEADER]: '1' }, timeoutMs });
  } catch (err) {
    return { ok: false, text: `${shown} is unreachable: GET /v2/ failed: ${err instanceof Error ? err.message : String(err)}` };
  }
  const header = (name: string): string | undefined => {
    const value = res.headers[name];
    return Array.isArray(value) ? value.join(', ') : value;
  };
  if (header(PROBE_HEADER) !== undefined) {
    return { ok: false, text: `${shown} is a registry-redirect proxy (this one or another), not the registry; write the registry's direct write address` };
  }
  const challenge = header('www-authenticate') ?? '';
  if (res.status === 401 && CHALLENGE.test(challenge)) {
    return { ok: true, text: `${shown} speaks the registry API: GET /v2/ -> 401 with a ${challenge.trim().split(/\s/)[0]} challenge` };
  }
  if (res.status === 200 && header('docker-distribution-api-version') !== undefined) {
    return { ok: true, text: `${shown} speaks the registry API: GET /v2/ -> 200` };
  }
  return {
    ok: false,
    text: `${shown} does not speak the registry API: GET /v2/ -> ${res.status}${res.status === 200 ? ' without Docker-Distribution-API-Version' : res.status === 401 ? ' without a Basic or Bearer challenge' : ''}; write the registry's direct address, never object storage`,
  };
}

/** Throws the start-up error naming `push.endpoint` when {@link probeWriteEndpoint} fails. */
export async function assertWriteEndpoint(endpoint: URL | string, timeoutMs: number): Promise<void> {
  const verdict = await probeWriteEndpoint(endpoint, timeoutMs);
  if (!verdict.ok) throw new RegistryRedirectError('CONFIG_INVALID', `push.endpoint: ${verdict.text}`);
}
