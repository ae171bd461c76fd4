import { parseArgs } from 'node:util';
import { RegistryRedirectError } from '../errors.js';
import { redact, urlForLog } from '../log.js';
import { isValidDigest, isValidRepositoryName } from '../routes.js';
import { httpRequest, type HttpAnswer } from '../health.js';
import { isSameHostOrSubdomain } from '../same-host.js';
import { formatDuration } from '../signers/common.js';
import { createOriginHandler, sharedHostWarning } from '../origin/server.js';
import { isOriginSigner, type OriginSigner } from '../signers/origin.js';
import type { Signer, UpstreamTlsOptions } from '../types.js';
import { upstreamAgentOptions, upstreamFailureDetail } from '../upstream-tls.js';
import { closeNow, listenOn } from './observability.js';
import { loadConfig, type ServerConfig } from './config.js';
import { preflightSigner } from './preflight.js';
import { probeWriteEndpoint } from './push-config.js';
import { createServer } from './node-http.js';

export const CHECK_USAGE = `Usage: registry-redirect check --config FILE.yaml [--repository R --digest D] [--size N] [--creds USER:PASS] [--registry-host NAME]

Validates the config, proves every configured signer's credentials (it signs a GET for an object
that cannot exist, and storage answering "not found" shows it accepts the signature: what serve
does at start), and proves a push.endpoint speaks the registry API (GET /v2/: 200, or 401 with a
challenge) and is not a registry-redirect proxy. With --repository and --digest it also fetches the signed URL (a ranged GET of byte 0) to prove that storage accepts the signature
and holds the object with the size the registry reports (asked from the upstream with --creds, or
given with --size). It fails a signer whose URLs are on --registry-host (the name clients pull from)
or a subdomain of it, and warns when they are on the upstream's host name: such blobs are proxied,
not redirected, because clients would send their registry credentials there. Prints one verdict
line per signer (and warnings); exits 0 when all pass, 1 otherwise.`;

/** The digest of the empty blob: the only blob whose object may be empty. */
const EMPTY_DIGEST = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
/** What is signed without --digest: a syntactically valid sample, to prove signing works. */
const SAMPLE = { repository: 'library/registry-redirect-check', digest: EMPTY_DIGEST } as const;

export interface CheckOptions {
  config: string;
  repository?: string;
  digest?: string;
  /** Expected object size in bytes; otherwise asked from the upstream. */
  size?: number;
  /** `user:password` for the upstream's HEAD (Basic, or Docker token auth). */
  creds?: string;
  /** Per request, milliseconds. Default 10 000. */
  timeoutMs?: number;
  /** The host name clients pull from (`registry.example.com`): signer URLs on it or a subdomain fail. */
  registryHost?: string;
}

interface Verdict {
  ok: boolean;
  text: string;
  /** Printed after the verdict line as `warn` lines; they do not change the exit code. */
  warnings?: string[];
}

/**
 * The redirect guard's view of a signed URL. The client's `Host` is unknown here, so the name
 * given with --registry-host decides (fail), and the upstream's host name is a hint (warn): a
 * registry reached by that name would have every blob proxied.
 */
function hostVerdict(url: string, config: ServerConfig, opts: CheckOptions): { fail?: string; warnings: string[] } {
  const shown = new URL(url).hostname;
  const warnings: string[] = [];
  const names: Array<[string, string]> = [];
  if (opts.registryHost) names.push([`--registry-host ${opts.registryHost}`, opts.registryHost]);
  names.push([`the upstream's host ${config.upstream.hostname}`, config.upstream.host]);
  for (const [what, host] of names) {
    if (!isSameHostOrSubdomain(url, host)) continue;
    if (config.allowRedirectToRegistryHost) {
      warnings.push(`signed URLs on ${shown} are on ${what} or a subdomain of it, and allowRedirectToRegistryHost is on: skopeo, podman, containerd and oras send their registry credentials to that storage`);
    } else if (host === opts.registryHost) {
      return {
        fail: `signed URLs on ${shown} are on ${what} or a subdomain of it: clients would send their registry credentials there, so every blob GET is proxied (fallback reason same_host), never redirected; serve storage from another host name`,
        warnings,
      };
    } else {
      warnings.push(`signed URLs on ${shown} are on ${what} or a subdomain of it: clients reaching the registry by that name get blobs proxied (same_host), not redirected; pass --registry-host NAME to check the name clients use`);
    }
  }
  return { warnings };
}

/** The signers a config names, labelled by their config key. */
/** The default signer and every named one from `signers:`, each checked on its own line. */
function signersOf(config: ServerConfig): { label: string; signer: Signer }[] {
  return [{ label: 'signer', signer: config.signer }, ...Object.entries(config.signers ?? {}).map(([name, signer]) => ({ label: `signers.${name}`, signer }))];
}

function describeError(err: unknown): string {
  let message = err instanceof Error ? err.message : String(err);
  // A socket's message may not name its code (ECONNREFUSED does, UNABLE_TO_VERIFY_LEAF_SIGNATURE does not).
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && !message.includes(code)) message += ` (${code})`;
  const cause = err instanceof Error ? err.cause : undefined;
  if (cause instanceof Error && !message.includes(cause.message)) message += ` (${cause.message})`;
  return redact(message.split('\n').join('; '));
}

/** `<Code>X</Code><Message>Y</Message>` of S3, GCS and Azure error bodies, as `X: Y`. */
function storageError(body: string): string {
  const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(body)?.[1]?.split('\n')[0];
  return [code, message].filter(Boolean).join(': ') || body.slice(0, 200).replace(/\s+/g, ' ');
}

/** Enough for a token answer or a storage error document; a blob's bytes are not read. */
const BODY_LIMIT = 64 * 1024;

/** One request, redirects not followed; with `tls`, trusting the upstream as serve does. */
function request(url: string, init: { method?: string; headers?: Record<string, string>; tls?: UpstreamTlsOptions | undefined }, timeoutMs: number): Promise<HttpAnswer> {
  return httpRequest(url, { ...init, timeoutMs, bodyLimit: BODY_LIMIT });
}

function header(res: HttpAnswer, name: string): string | undefined {
  const value = res.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function contentLength(res: HttpAnswer): number | undefined {
  const text = header(res, 'content-length');
  return text !== undefined && /^\d+$/.test(text) ? Number(text) : undefined;
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8')) ?? {};
  } catch {
    return {};
  }
}

/** The blob size the upstream registry reports, following a Docker token challenge when needed. */
async function sizeFromUpstream(config: ServerConfig, opts: CheckOptions, timeoutMs: number): Promise<{ size?: number; note?: string; fail?: string }> {
  const url = new URL(`${config.upstream.pathname.replace(/\/+$/, '')}/v2/${opts.repository}/blobs/${opts.digest}`, config.upstream);
  const basic = opts.creds ? `Basic ${Buffer.from(opts.creds).toString('base64')}` : undefined;
  const tls = config.upstreamTLS && upstreamAgentOptions(config.upstreamTLS);
  let res = await request(url.href, { method: 'HEAD', headers: basic ? { authorization: basic } : {}, tls }, timeoutMs);
  const challenge = header(res, 'www-authenticate') ?? '';
  if (res.status === 401 && /^Bearer\s/i.test(challenge)) {
    const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    if (params.realm) {
      const tokenUrl = new URL(params.realm);
      if (params.service) tokenUrl.searchParams.set('service', params.service);
      tokenUrl.searchParams.set('scope', `repository:${opts.repository}:pull`);
      // A token server on the upstream's host is trusted as the upstream is (same private CA).
      const tokenTls = tokenUrl.protocol === 'https:' && tokenUrl.hostname === url.hostname ? tls : undefined;
      const tokenRes = await request(tokenUrl.href, { headers: basic ? { authorization: basic } : {}, tls: tokenTls }, timeoutMs);
      const body = parseJson(tokenRes.body) as { token?: string; access_token?: string };
      const token = body.token ?? body.access_token;
      if (token) res = await request(url.href, { method: 'HEAD', headers: { authorization: `Bearer ${token}` }, tls }, timeoutMs);
    }
  }
  if (res.status >= 200 && res.status < 300) {
    const length = contentLength(res);
    return length === undefined ? { note: 'the upstream sent no Content-Length' } : { size: length };
  }
  if (res.status >= 300 && res.status < 400) {
    const hint = config.authorize.acceptUpstreamRedirect ? '' : '; such blobs are not redirected unless authorize.acceptUpstreamRedirect is set';
    return { note: `the upstream answered ${res.status} (it redirects by itself${hint})` };
  }
  if (res.status === 401 || res.status === 403) return { note: `the upstream answered ${res.status}; pass --creds USER:PASS or --size N` };
  if (res.status === 404) {
    // Clients would get this 404 too: nothing to redirect, so the check cannot pass.
    return { fail: `the upstream answered 404 for ${opts.repository}@${opts.digest}: no such blob in this repository; check --repository and --digest (a layer digest from the manifest)` };
  }
  return { note: `the upstream answered ${res.status} for this blob` };
}

/** A loopback origin over the signer's root, for the duration of one check. */
async function startLocalOrigin(signer: OriginSigner): Promise<{ url: string; close(): Promise<void> }> {
  const handle = createOriginHandler(signer.origin);
  const server = createServer((req, res) => {
    if (handle(req, res)) return;
    res.writeHead(404, { 'Content-Length': '0' });
    res.end();
  });
  return { url: await listenOn(server, { host: '127.0.0.1', port: 0 }), close: () => closeNow(server) };
}

/** Signs one URL with `signer` and, with a digest, proves storage serves it. */
async function checkSigner(signer: Signer, label: string, config: ServerConfig, opts: CheckOptions, timeoutMs: number): Promise<Verdict> {
  try {
    await signer.ready?.();
  } catch (err) {
    return { ok: false, text: describeError(err) };
  }
  const target = opts.digest ? { repository: opts.repository!, digest: opts.digest } : SAMPLE;
  let url: string;
  let expiresAt: number;
  try {
    ({ url, expiresAt } = await signer.sign({ ...target, method: 'GET', ...(opts.size !== undefined ? { size: opts.size } : {}) }));
  } catch (err) {
    return { ok: false, text: `signing failed: ${describeError(err)}` };
  }
  if (typeof url !== 'string' || !/^https?:\/\//.test(url)) return { ok: false, text: `the signer returned no http(s) URL: ${JSON.stringify(url)}` };
  const left = Math.max(0, expiresAt - Date.now());
  const valid = `valid ${left >= 60_000 ? formatDuration(Math.round(left / 60_000) * 60_000) : formatDuration(Math.round(left / 1_000) * 1_000)}`;
  const shown = urlForLog(url);
  const hosts = hostVerdict(url, config, opts);
  if (hosts.fail) return { ok: false, text: hosts.fail, warnings: hosts.warnings };
  const originWarning = isOriginSigner(signer) ? sharedHostWarning(signer.origin, config.listen) : undefined;
  if (originWarning) hosts.warnings.push(originWarning);
  const verdict = await checkStorage(signer, label, url, shown, valid, config, opts, timeoutMs);
  return hosts.warnings.length ? { ...verdict, warnings: hosts.warnings } : verdict;
}

/**
 * Without a digest: what `serve` does at start (preflight.ts), a signed GET for an object that
 * cannot exist; "not found" proves storage accepts the signature.
 */
async function checkCredentials(signer: Signer, label: string, shown: string, valid: string, timeoutMs: number): Promise<Verdict> {
  const r = await preflightSigner(signer, label, timeoutMs);
  const more = 'pass --repository and --digest to prove a real blob';
  switch (r.outcome) {
    case 'proven':
      return { ok: true, text: `signed GET ${shown} (${valid}); ${r.detail}; ${more}` };
    case 'inconclusive':
      return { ok: true, text: `signed GET ${shown} (${valid})`, warnings: [`${r.detail}${r.hint ? `; ${r.hint}` : ''}`] };
    default:
      return { ok: false, text: `${r.detail}${r.hint ? `; ${r.hint}` : ''}` };
  }
}

/** Without a digest: the credentials ({@link checkCredentials}); with one: fetches the URL and compares sizes. */
async function checkStorage(signer: Signer, label: string, url: string, shown: string, valid: string, config: ServerConfig, opts: CheckOptions, timeoutMs: number): Promise<Verdict> {
  if (!opts.digest) {
    if (config.preflight === 'off') return { ok: true, text: `signed GET ${shown} (${valid}); preflight is off, so storage was not asked; pass --repository and --digest to prove storage accepts it` };
    return checkCredentials(signer, label, shown, valid, timeoutMs);
  }

  let expected: { size?: number; note?: string; fail?: string };
  try {
    expected = opts.size !== undefined ? { size: opts.size } : await sizeFromUpstream(config, opts, timeoutMs);
  } catch (err) {
    // An upstream serve cannot trust fails every pull (502), so it fails the check; one that
    // does not answer at all may be down for now, and only leaves the size unchecked.
    const { tls, hint } = upstreamFailureDetail(err);
    if (tls !== undefined) return { ok: false, text: `the upstream ${config.upstream.origin} failed the TLS handshake: ${describeError(err)}; ${hint}` };
    expected = { note: `the upstream did not answer (${describeError(err)})` };
  }
  if (expected.fail) return { ok: false, text: expected.fail };

  let res: HttpAnswer;
  // Origin mode: this process serves the blob itself, so the signed URL is fetched from a
  // loopback copy of the origin (same root, key and checks) whether or not a server is running.
  const local = isOriginSigner(signer) ? await startLocalOrigin(signer) : undefined;
  try {
    const target = local ? `${local.url}${new URL(url).pathname}${new URL(url).search}` : url;
    const headers: Record<string, string> = { range: 'bytes=0-0' };
    if (isOriginSigner(signer) && signer.origin.secretHeader) headers[signer.origin.secretHeader.name] = signer.origin.secretHeader.value;
    // Storage is trusted with the system's CAs: upstreamTLS is about the registry only.
    res = await request(target, { headers }, timeoutMs);
  } catch (err) {
    return { ok: false, text: `storage unreachable at ${shown}: ${describeError(err)}` };
  } finally {
    await local?.close();
  }
  let size: number | undefined;
  const total = /\/(\d+)\s*$/.exec(header(res, 'content-range') ?? '')?.[1];
  if (res.status === 206) {
    // "bytes 0-0/<size>"
    size = total === undefined ? undefined : Number(total);
  } else if (res.status === 416) {
    // Byte 0 does not exist: the object is empty (S3 also says so in <ActualObjectSize>).
    const actual = /<ActualObjectSize>(\d+)<\/ActualObjectSize>/.exec(res.body.toString('utf8'))?.[1];
    size = Number(total ?? actual ?? 0);
  } else if (res.status === 200) {
    // Storage ignored the Range: the whole object's length.
    size = contentLength(res);
  } else {
    const detail = storageError(res.body.toString('utf8'));
    if (res.status === 404) {
      return { ok: false, text: `storage has no object at ${shown}: 404 ${detail}; check rootDirectory and layout, and that the blobs are in this bucket` };
    }
    if (res.status === 401 || res.status === 403 || res.status === 400) {
      return { ok: false, text: `storage refused the signature for ${shown}: ${res.status} ${detail}` };
    }
    return { ok: false, text: `storage answered ${res.status} for ${shown}: ${detail}` };
  }
  if (size === undefined || !Number.isSafeInteger(size)) return { ok: false, text: `storage answered ${res.status} for ${shown} without the object's size` };
  if (expected.size !== undefined && expected.size !== size) {
    return {
      ok: false,
      text: `the object at ${shown} is ${size} bytes but the registry says ${expected.size}${size === 0 ? ' (an empty object: a deduplicated copy, e.g. zot with dedupe on S3?)' : ''}; check rootDirectory and layout`,
    };
  }
  if (size === 0 && opts.digest !== EMPTY_DIGEST) {
    return { ok: false, text: `the object at ${shown} is empty, but only the empty blob may be (a deduplicated copy, e.g. zot with dedupe on S3?)` };
  }
  const sizeText = expected.size !== undefined ? `${size} bytes, as the registry says` : `${size} bytes (not compared: ${expected.note})`;
  const where = isOriginSigner(signer) ? `the origin (root ${signer.origin.root}) accepted the signature` : 'storage accepted the signature';
  return { ok: true, text: `${where}: GET ${shown} -> ${res.status}, ${sizeText} (${valid})` };
}

/** Runs the checks; `out` receives one line per verdict. Returns the exit code. */
export async function runCheck(opts: CheckOptions, out: (line: string) => void, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let config: ServerConfig;
  try {
    config = await loadConfig(opts.config, env);
  } catch (err) {
    if (!(err instanceof RegistryRedirectError)) throw err;
    // A missing SDK is one line that names the packages; its cause (the resolver's error) adds nothing.
    out(`FAIL  config ${opts.config}: ${err.code === 'DEPENDENCY_MISSING' ? err.message : describeError(err)}`);
    return 1;
  }
  let failed = 0;
  for (const { label, signer } of signersOf(config)) {
    const verdict = await checkSigner(signer, label, config, opts, timeoutMs);
    out(`${verdict.ok ? 'ok  ' : 'FAIL'}  ${label} (${signer.name}): ${verdict.text}`);
    for (const warning of verdict.warnings ?? []) out(`warn  ${label} (${signer.name}): ${warning}`);
    if (!verdict.ok) failed++;
    await signer.close?.();
  }
  if (config.push) {
    const verdict = await probeWriteEndpoint(config.push.endpoint, timeoutMs);
    out(`${verdict.ok ? 'ok  ' : 'FAIL'}  push.endpoint: ${verdict.text}`);
    if (!verdict.ok) failed++;
  }
  return failed ? 1 : 0;
}

/** `registry-redirect check ...`: parses the arguments and runs {@link runCheck}. */
export async function checkCommand(args: string[], out: (line: string) => void = console.log, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const usage = (problem: string): number => {
    out(`registry-redirect check: ${problem}\n\n${CHECK_USAGE}`);
    return 2;
  };
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        config: { type: 'string', short: 'c' },
        repository: { type: 'string', short: 'r' },
        digest: { type: 'string', short: 'd' },
        size: { type: 'string' },
        creds: { type: 'string' },
        'registry-host': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) return usage((err as Error).message);
    throw err;
  }
  if (values.help) {
    out(CHECK_USAGE);
    return 0;
  }
  if (!values.config) return usage('--config FILE.yaml is required');
  if ((values.repository === undefined) !== (values.digest === undefined)) return usage('--repository and --digest go together');
  if (values.repository !== undefined && !isValidRepositoryName(values.repository)) return usage(`--repository ${JSON.stringify(values.repository)} is not a repository name, e.g. library/alpine`);
  if (values.digest !== undefined && !isValidDigest(values.digest)) return usage(`--digest ${JSON.stringify(values.digest)} is not a sha256:<64 hex> or sha512:<128 hex> digest`);
  const size = values.size === undefined ? undefined : Number(values.size);
  if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) return usage(`--size ${JSON.stringify(values.size)} is not a number of bytes`);
  if (size !== undefined && values.digest === undefined) return usage('--size needs --repository and --digest');
  return runCheck(
    {
      config: values.config,
      ...(values.repository !== undefined ? { repository: values.repository, digest: values.digest! } : {}),
      ...(size !== undefined ? { size } : {}),
      ...(values.creds !== undefined ? { creds: values.creds } : {}),
      ...(values['registry-host'] !== undefined ? { registryHost: values['registry-host'] } : {}),
    },
    out,
    env,
  );
}
