import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ClientIpResolver } from './client-ip.js';
import { configError } from './errors.js';
import type { CompleteObserver } from './metrics.js';
import { once, zod } from './lazy.js';
import { compilePolicy, type RolloutPolicy } from './rollout.js';
import { isValidRepositoryName } from './routes.js';
import type { Logger, PushAction, PushOptions } from './types.js';
import { parseConfigPart } from './validate.js';

export type { PushAction, PushOptions, PushRule, UploadAction, UploadReason } from './types.js';

/** A compiled `push` option; `handle` does no parsing or compiling. */
export interface PushSteering {
  readonly endpoint: URL;
  readonly mode: 'steer' | 'redirect';
  readonly shadow: boolean;
  /**
   * Takes over an upload-session POST when the policy steers it: forwards it with `forward` (given
   * a response hook) or answers 307. Returns `false` when the request is none of its business.
   */
  handle(req: IncomingMessage, res: ServerResponse, forward: (req: IncomingMessage, res: ServerResponse, onResponse?: UpstreamResponseHook) => void): boolean;
}

/** Sees (and may edit) the upstream's response head before it is copied to the client. */
export type UpstreamResponseHook = (upstreamRes: IncomingMessage) => void;

/** The `push` option's schema, built on first use (zod loads when a config is validated). */
const pushSchema = once(() => {
  const { z } = zod();
  const ACTION = z.enum(['steer', 'proxy'], { error: 'write "steer" or "proxy"' });

  return z
    .object({
      endpoint: z.union([z.string(), z.instanceof(URL)], { error: 'write the registry\'s direct write address, e.g. "https://registry-direct.example.com"' }),
      mode: z.enum(['steer', 'redirect'], { error: 'write "steer" (default: the upload Location points at the endpoint) or "redirect" (307 the POST; anonymous pushes only)' }).optional(),
      rules: z
        .array(
          z
            .object({
              name: z.unknown().optional(),
              percent: z.unknown().optional(),
              repositories: z.unknown().optional(),
              networks: z.unknown().optional(),
              userAgents: z.unknown().optional(),
              action: ACTION,
            })
            .strict(),
          { error: 'write a list of rules, e.g. [{ networks: [10.0.0.0/8], action: steer }]' },
        )
        .optional(),
      default: ACTION.optional(),
      shadow: z.boolean({ error: 'write true (decide and count, but proxy every upload) or false' }).optional(),
      clientKey: z.unknown().optional(),
      seed: z.unknown().optional(),
    })
    .strict();
});

/** Parses the endpoint: http(s), no query, fragment or credentials; a trailing `/` is dropped. */
function parseEndpoint(value: string | URL, key: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch (cause) {
    configError(`${key}: ${JSON.stringify(String(value))} is not a URL; write the registry's direct write address, e.g. "https://registry-direct.example.com"`, cause);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') configError(`${key}: protocol ${url.protocol} is not supported; write an http:// or https:// URL`);
  if (url.search || url.hash || url.username || url.password) {
    configError(`${key}: write only scheme, host, port and optional path (no query, fragment or credentials)`);
  }
  return url;
}

/** `scheme://host[:port][/prefix]` without a trailing `/`: what `/v2/...` is appended to. */
function baseOf(endpoint: URL): string {
  return `${endpoint.origin}${endpoint.pathname.replace(/\/+$/, '')}`;
}

const UPLOADS = '/blobs/uploads';
const PREFIX = '/v2/';

/** How an upload-start POST is classified. */
type UploadStart = { repository: string; kind: 'session' | 'mount' | 'monolithic' };

/**
 * Classifies `POST /v2/<name>/blobs/uploads/[?query]`; `undefined` for any other request.
 * Cross-repository mounts and monolithic uploads are never steered: the first completes (201) or
 * falls back to a session on the proxy, the second already carries its bytes, and both answer
 * with a `Location` naming the blob, which clients read back and which must stay on the proxy.
 */
export function classifyUploadStart(req: IncomingMessage): UploadStart | undefined {
  const url = req.url;
  if (req.method !== 'POST' || !url || !url.startsWith(PREFIX)) return undefined;
  const q = url.indexOf('?');
  let path = q < 0 ? url : url.slice(0, q);
  if (path.endsWith('/')) path = path.slice(0, -1);
  if (!path.endsWith(UPLOADS)) return undefined;
  const repository = path.slice(PREFIX.length, path.length - UPLOADS.length);
  if (!isValidRepositoryName(repository)) return undefined;
  const params = q < 0 ? undefined : new URLSearchParams(url.slice(q + 1));
  if (params?.has('mount') || params?.has('from')) return { repository, kind: 'mount' };
  const length = req.headers['content-length'];
  const hasBody = req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
  if (params?.has('digest') || hasBody) return { repository, kind: 'monolithic' };
  return { repository, kind: 'session' };
}

const SESSION_ID = /^[A-Za-z0-9._~-]+$/;

/**
 * The upstream's upload `Location` moved to the write endpoint: whatever origin and path prefix
 * the registry put before `/v2/<repository>/blobs/uploads/<id>` (the proxy's, from the forwarded
 * headers, or its own) is replaced by the endpoint's, and the query (distribution's signed
 * `_state`) is kept. Relative Locations are handled the same way. Anything that is not this
 * repository's upload session gives `undefined` and is left alone.
 */
export function steerLocation(location: string, endpoint: URL, repository: string): string | undefined {
  let url: URL;
  try {
    url = new URL(location, 'http://upstream.invalid');
  } catch {
    return undefined;
  }
  const marker = `${PREFIX}${repository}${UPLOADS}/`;
  const at = url.pathname.indexOf(marker);
  if (at < 0) return undefined;
  const id = url.pathname.slice(at + marker.length);
  if (!SESSION_ID.test(id)) return undefined;
  return `${baseOf(endpoint)}${marker}${id}${url.search}`;
}

/** The endpoint as logs show it (it carries no credentials: they are refused at construction). */
export function endpointForLog(endpoint: URL): string {
  return baseOf(endpoint);
}

/**
 * Validates and compiles the `push` option once. The rules run on the rollout engine: a push rule
 * is a rollout rule whose `steer` is the engine's `redirect`. `key` names the option in errors.
 */
export function compilePush(
  options: PushOptions,
  context: { clientIp: ClientIpResolver; observer: CompleteObserver; logger: Logger; key?: string },
): PushSteering {
  const key = context.key ?? 'push';
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    configError(`${key}: write an object, e.g. { endpoint: "https://registry-direct.example.com" }`);
  }
  const p = parseConfigPart(pushSchema(), options, key);
  const endpoint = parseEndpoint(p.endpoint, `${key}.endpoint`);
  const mode = p.mode ?? 'steer';
  const shadow = p.shadow ?? false;
  const asRollout = (action: PushAction) => (action === 'steer' ? 'redirect' : 'proxy');
  const policy = {
    rules: (p.rules ?? []).map(({ action, ...conditions }) => ({ ...conditions, action: asRollout(action) })),
    default: asRollout(p.default ?? 'steer'),
    ...(p.clientKey !== undefined ? { clientKey: p.clientKey } : {}),
    ...(p.seed !== undefined ? { seed: p.seed } : {}),
  } as RolloutPolicy;
  const rules = compilePolicy(policy, { signerNames: ['default'], clientIp: context.clientIp, path: key });
  const { observer, logger } = context;
  const shownEndpoint = endpointForLog(endpoint);

  return {
    endpoint,
    mode,
    shadow,
    handle(req, res, forward) {
      const start = classifyUploadStart(req);
      if (start === undefined) return false;
      if (start.kind !== 'session') {
        observer.upload('proxy', start.kind);
        return false;
      }
      const decision = rules.decide(req, start.repository, undefined);
      if (decision.action !== 'redirect') {
        observer.upload('proxy', decision.reason);
        return false;
      }
      if (mode === 'redirect' && !shadow) {
        const q = req.url!.indexOf('?');
        const path = q < 0 ? req.url! : req.url!.slice(0, q);
        res.writeHead(307, {
          Location: `${shownEndpoint}${path}${q < 0 ? '' : req.url!.slice(q)}`,
          'Docker-Distribution-API-Version': 'registry/2.0',
          'Content-Length': '0',
          'Cache-Control': 'no-store',
        });
        res.end();
        observer.upload('redirect', decision.reason);
        logger.info({ repository: start.repository, endpoint: shownEndpoint, reason: decision.reason }, 'upload redirected');
        return true;
      }
      forward(req, res, (upstreamRes) => {
        const location = upstreamRes.headers.location;
        if (upstreamRes.statusCode !== 202 || typeof location !== 'string') {
          observer.upload('proxy', 'not_accepted');
          return;
        }
        const steered = steerLocation(location, endpoint, start.repository);
        if (steered === undefined) {
          observer.upload('proxy', 'unexpected_location');
          logger.warn({ repository: start.repository, reason: 'unexpected_location' }, 'upload not steered: the upstream named no upload session of this repository');
          return;
        }
        if (shadow) {
          observer.upload('shadow', decision.reason);
          logger.info({ repository: start.repository, endpoint: shownEndpoint, reason: decision.reason }, 'shadow: would steer upload');
          return;
        }
        upstreamRes.headers.location = steered;
        observer.upload('steer', decision.reason);
        logger.info({ repository: start.repository, endpoint: shownEndpoint, reason: decision.reason }, 'upload steered');
      });
      return true;
    },
  };
}
