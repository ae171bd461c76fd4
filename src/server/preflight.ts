import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { httpRequest, type HttpAnswer } from '../health.js';
import { errorForLog, redact, urlForLog } from '../log.js';
import { isOriginSigner } from '../signers/origin.js';
import type { Logger, Signer } from '../types.js';
import type { ServerConfig } from './config.js';

/**
 * `preflight:` what to do when storage refuses a signer's signature at start: `fail` (default:
 * the start fails with one line naming the signer and the fix), `warn` (log it, `/readyz` not
 * ready), `off` (no storage request at start).
 */
export type PreflightMode = 'fail' | 'warn' | 'off';

/**
 * What storage said about a signed URL for an object that cannot exist:
 * - `proven`: "not found" (404 `BlobNotFound`, `NoSuchKey`): the signature was accepted.
 * - `refused`: a signature or credential error (`AuthenticationFailed`, `SignatureDoesNotMatch`,
 *   `InvalidAccessKeyId`, a wrong region, ...): every pull would fail.
 * - `unreachable`: no answer, a timeout, or a 5xx: nothing is known yet.
 * - `inconclusive`: an answer that does not tell a bad signature from a missing object (a CDN's
 *   bare 403, S3's `AccessDenied` without `s3:ListBucket`), or a container or bucket that does
 *   not exist (yet): a warning, never a failed start.
 */
export type PreflightOutcome = 'proven' | 'refused' | 'unreachable' | 'inconclusive';

export interface PreflightResult {
  /** The config key of the signer: `signer` or `signers.<name>`. */
  readonly label: string;
  /** The signer's name (`azure`, `s3`, ...): the kind its answers are read by. */
  readonly kind: string;
  readonly outcome: PreflightOutcome;
  /** Storage's HTTP status, when it answered. */
  readonly status?: number;
  /** Storage's error code (`x-ms-error-code`, XML `<Code>`, GCS JSON `reason`), when it sent one. */
  readonly code?: string;
  /** What happened, one line, no signature. */
  readonly detail: string;
  /** The likely fix, for `refused` and `inconclusive`. */
  readonly hint?: string;
  /** The storage location URLs point at (scheme, host, path up to the object key), e.g. `http://127.0.0.2:10000/devstoreaccount1/registry`. */
  readonly storage?: string;
}

interface Reading {
  outcome: PreflightOutcome;
  hint?: string;
}

/**
 * How each signer kind's storage answers a validly signed URL for a missing object, and what it
 * says for a bad signature. A code listed for no kind is read by `generic`.
 *
 * Why the CDN kinds differ: CloudFront and CDN token checkers (nginx `secure_link`, Cloudflare,
 * Google Cloud CDN) answer a bad token with a bare 403, and so do many origins for a missing
 * object (an S3 origin without `s3:ListBucket`). A 403 there is `inconclusive` (a warning), never
 * a failed start; `check --repository R --digest D` with a real blob proves those signers.
 */
const READINGS: Readonly<Record<string, Readonly<Record<string, Reading>>>> = {
  generic: {
    BlobNotFound: { outcome: 'proven' },
    NoSuchKey: { outcome: 'proven' },
    SignatureDoesNotMatch: { outcome: 'refused', hint: 'storage does not accept the signature: check the signing key' },
    InvalidAccessKeyId: { outcome: 'refused', hint: 'storage does not know the access key id' },
    AuthenticationFailed: { outcome: 'refused', hint: 'storage does not accept the signature: check the signing key' },
    ExpiredToken: { outcome: 'refused', hint: 'the session token has expired: refresh the temporary credentials' },
    InvalidToken: { outcome: 'refused', hint: 'the session token is not valid' },
    NoSuchBucket: { outcome: 'inconclusive', hint: 'the bucket does not exist (yet): pulls get 404 from storage until it does; check the bucket name and endpoint' },
  },
  azure: {
    AuthenticationFailed: { outcome: 'refused', hint: 'check signer.azure.accountKey (key1 or key2 of this storage account) and signer.azure.account' },
    AuthorizationFailure: { outcome: 'refused', hint: 'check signer.azure.accountKey (key1 or key2 of this storage account), then the account\'s network rules (firewall, private endpoint)' },
    AuthorizationPermissionMismatch: { outcome: 'refused', hint: 'the identity behind the user delegation key needs "Storage Blob Data Reader" on the container' },
    AuthorizationProtocolMismatch: { outcome: 'refused', hint: 'the account requires https: use an https:// signer.azure.endpoint' },
    // Not a credential problem, and a container may well be created after the proxy starts.
    ContainerNotFound: { outcome: 'inconclusive', hint: 'the container does not exist (yet): pulls get 404 from storage until it does; check signer.azure.container' },
    InvalidQueryParameterValue: { outcome: 'refused', hint: 'storage rejected the SAS: check signer.azure.account and signer.azure.accountKey' },
  },
  s3: {
    SignatureDoesNotMatch: { outcome: 'refused', hint: 'check signer.s3.secretAccessKey: it is not the secret of signer.s3.accessKeyId' },
    InvalidAccessKeyId: { outcome: 'refused', hint: 'check signer.s3.accessKeyId: storage does not know it' },
    NoSuchBucket: { outcome: 'inconclusive', hint: 'the bucket does not exist (yet): pulls get 404 from storage until it does; check signer.s3.bucket and signer.s3.endpoint' },
    AuthorizationQueryParametersError: { outcome: 'refused', hint: 'check signer.s3.region (the bucket\'s region)' },
    AuthorizationHeaderMalformed: { outcome: 'refused', hint: 'check signer.s3.region (the bucket\'s region)' },
    PermanentRedirect: { outcome: 'refused', hint: 'the bucket is in another region: check signer.s3.region' },
    // S3 answers 403 AccessDenied, not 404, for a missing key when the principal lacks s3:ListBucket.
    AccessDenied: { outcome: 'inconclusive', hint: 'S3 answers AccessDenied for a missing object without s3:ListBucket, and for a principal without s3:GetObject; prove it with check --repository R --digest D' },
  },
  gcs: {
    SignatureDoesNotMatch: { outcome: 'refused', hint: 'check the service account key (signer.gcs.keyFile or clientEmail/privateKey): storage does not accept its signature' },
    AccessDenied: { outcome: 'refused', hint: 'the service account cannot read the bucket: grant it roles/storage.objectViewer' },
    NoSuchBucket: { outcome: 'inconclusive', hint: 'the bucket does not exist (yet): pulls get 404 from storage until it does; check signer.gcs.bucket' },
  },
  cloudfront: {
    MissingKey: { outcome: 'refused', hint: 'check signer.cloudfront.keyPairId' },
    InvalidKey: { outcome: 'refused', hint: 'check signer.cloudfront.keyPairId: it must be a public key in the distribution\'s trusted key group' },
    MalformedSignature: { outcome: 'refused', hint: 'check signer.cloudfront.privateKey' },
    AccessDenied: { outcome: 'inconclusive', hint: 'CloudFront answers AccessDenied for a bad signature and for a missing object behind a private origin; prove it with check --repository R --digest D' },
  },
  hmac: {},
};

/** What a status without a known code means. */
function byStatus(kind: string, status: number): Reading {
  if (status === 404) return { outcome: 'proven' };
  if (status >= 500) return { outcome: 'unreachable' };
  if (status >= 200 && status < 300) return { outcome: 'inconclusive', hint: 'storage served an object that should not exist: is a catch-all front answering?' };
  if (status === 401 || status === 403) {
    const cdn = kind === 'hmac' || kind === 'cloudfront';
    if (kind === 'azure' || kind === 's3' || kind === 'gcs') return { outcome: 'refused', hint: 'storage does not accept the signature: check the signer\'s credentials' };
    return { outcome: 'inconclusive', hint: cdn ? 'the CDN refused the token or hides missing objects behind 403: check the key and the preset; prove it with check --repository R --digest D' : 'prove it with check --repository R --digest D' };
  }
  if (status === 400) return { outcome: 'refused', hint: 'storage rejected the signed URL' };
  return { outcome: 'inconclusive' };
}

/** Reads the answer of `kind`'s storage. Exported for tests and for `check`. */
export function classifyStorageAnswer(kind: string, status: number, code: string | undefined): Reading {
  const reading = code === undefined ? undefined : (READINGS[kind]?.[code] ?? READINGS.generic![code]);
  // A code that only says "not found" when the status agrees: a 403 NoSuchKey is not a proof.
  if (reading && !(reading.outcome === 'proven' && status !== 404)) return reading;
  return byStatus(kind, status);
}

const BODY_LIMIT = 8_192;

/** Storage's error code: Azure's header, S3/GCS XML `<Code>`, or GCS JSON `error.errors[0].reason`. */
export function storageErrorCode(headers: IncomingHttpHeaders, body: string): { code?: string; message?: string } {
  const header = headers['x-ms-error-code'];
  const xmlCode = /<Code>([^<]{1,100})<\/Code>/.exec(body)?.[1];
  const xmlMessage = /<Message>([^<]{1,300})<\/Message>/.exec(body)?.[1]?.split('\n')[0];
  let code = typeof header === 'string' ? header : xmlCode;
  let message = xmlMessage;
  if (code === undefined && body.trimStart().startsWith('{')) {
    try {
      const json = JSON.parse(body) as { error?: { message?: string; errors?: { reason?: string }[] } };
      code = json.error?.errors?.[0]?.reason;
      message = json.error?.message;
    } catch {
      // not JSON after all: status only
    }
  }
  return { ...(code ? { code } : {}), ...(message ? { message: message.trim() } : {}) };
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'REQUEST_SEND_ERROR', 'PREFLIGHT_TIMEOUT']);

function isNetworkError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (NETWORK_CODES.has(code) || code.startsWith('UND_ERR_'))) return true;
  }
  return false;
}

/** The repository and digest of an object that cannot exist: 256 random bits. */
export function missingObject(): { repository: string; digest: string } {
  return { repository: 'registry-redirect/preflight', digest: `sha256:${randomBytes(32).toString('hex')}` };
}

/** `http://host/account/container/docker/.../data?sig` -> `http://host/account/container`: the URL without the object key. */
function storageOf(url: string, signer: Signer, request: { repository: string; digest: string }): string | undefined {
  try {
    const u = new URL(url);
    const key = signer.objectKey?.({ ...request, method: 'GET' });
    const encoded = key?.split('/').map(encodeURIComponent).join('/');
    let path = u.pathname;
    if (encoded && path.endsWith(encoded)) path = path.slice(0, -encoded.length);
    else if (key && path.endsWith(key)) path = path.slice(0, -key.length);
    return `${u.origin}${path.replace(/\/+$/, '')}`;
  } catch {
    return undefined;
  }
}

/**
 * Proves a signer's credentials with one request: signs a GET for an object that cannot exist and
 * reads storage's answer (see {@link PreflightOutcome}). Never throws.
 */
export async function preflightSigner(signer: Signer, label: string, timeoutMs = 5_000): Promise<PreflightResult> {
  const kind = signer.name;
  // Origin mode: this process verifies its own signatures with the key it signs with, and its
  // listener may not be up yet; there is no third party whose acceptance could be in doubt.
  if (isOriginSigner(signer)) {
    return { label, kind, outcome: 'proven', detail: `origin mode: this process serves ${signer.origin.baseUrl} and verifies its own signatures`, storage: signer.origin.baseUrl };
  }
  const request = missingObject();
  let url: string;
  let timer: NodeJS.Timeout | undefined;
  try {
    const signed = await Promise.race([
      Promise.resolve(signer.sign({ ...request, method: 'GET' })),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(Object.assign(new Error(`signing took longer than ${timeoutMs} ms`), { code: 'PREFLIGHT_TIMEOUT' })), timeoutMs);
        timer.unref();
      }),
    ]).finally(() => clearTimeout(timer));
    url = signed.url;
  } catch (err) {
    const message = errorForLog(err).message.split('\n')[0]!;
    if (isNetworkError(err)) return { label, kind, outcome: 'unreachable', detail: `signing needs a service that did not answer: ${message}` };
    return { label, kind, outcome: 'refused', detail: `signing failed: ${message}`, hint: 'check the signer\'s credentials' };
  }
  const storage = storageOf(url, signer, request);
  const where = storage ?? urlForLog(url);
  let answer: HttpAnswer;
  try {
    // node:http (httpRequest), not fetch: fetch refuses the Fetch standard's "bad ports".
    answer = await httpRequest(url, { headers: { range: 'bytes=0-0' }, timeoutMs, timeoutMessage: `no answer within ${timeoutMs} ms`, bodyLimit: BODY_LIMIT });
  } catch (err) {
    const e = errorForLog(err);
    const code = (err as { code?: unknown }).code;
    const reason = typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
    return { label, kind, outcome: 'unreachable', detail: `storage at ${where} did not answer: ${reason}`, ...(storage ? { storage } : {}) };
  }
  const { code, message } = storageErrorCode(answer.headers, answer.body.toString('utf8'));
  const reading = classifyStorageAnswer(kind, answer.status, code);
  // Storage's own words, unless they quote a URL's query (redact() would also mangle "Authorization header").
  const words = message && /[?&][\w-]+=/.test(message) ? redact(message) : message;
  const said = [`${answer.status}`, code, words].filter(Boolean).join(' ');
  const detail =
    reading.outcome === 'proven'
      ? `storage at ${where} accepted the signature (a missing object answered ${said})`
      : reading.outcome === 'refused'
        ? `storage at ${where} refused the signed URL: ${said}`
        : `storage at ${where} answered ${said}`;
  return { label, kind, outcome: reading.outcome, status: answer.status, ...(code ? { code } : {}), detail, ...(reading.hint ? { hint: reading.hint } : {}), ...(storage ? { storage } : {}) };
}

/** One line for a result: `signer (azure): storage at ... refused ...; check ...`. */
export function describePreflight(r: PreflightResult): string {
  return `${r.label} (${r.kind}): ${r.detail}${r.hint ? `; ${r.hint}` : ''}`;
}

/** The preflight state of a running server: what `/readyz` reports under `storage`. */
export interface PreflightTracker {
  /** Results by label; unreachable ones are retried in the background until storage answers. */
  results(): readonly PreflightResult[];
  /** False while a signer's storage is unreachable or refused its signature. */
  ready(): boolean;
  close(): void;
}

/** Options of {@link runPreflight}. */
export interface PreflightOptions {
  mode: Exclude<PreflightMode, 'off'>;
  logger: Logger;
  /** Per signer, milliseconds. Default 5 000. */
  timeoutMs?: number;
  /** Retry of unreachable signers, milliseconds. Default 10 000. */
  retryMs?: number;
}

/** Thrown by {@link runPreflight} in mode `fail`: the message is the one line to print. */
export class PreflightError extends Error {
  readonly results: readonly PreflightResult[];
  constructor(message: string, results: readonly PreflightResult[]) {
    super(message);
    this.name = 'PreflightError';
    this.results = results;
  }
}

/**
 * Proves every signer at start (see {@link preflightSigner}). `refused` fails the start in mode
 * `fail` (a {@link PreflightError}); otherwise it and `unreachable` are warnings and keep the
 * server not ready; unreachable signers are retried until storage answers.
 */
export async function runPreflight(signers: ReadonlyArray<{ label: string; signer: Signer }>, opts: PreflightOptions): Promise<PreflightTracker> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const results = await Promise.all(signers.map(({ label, signer }) => preflightSigner(signer, label, timeoutMs)));
  const refused = results.filter((r) => r.outcome === 'refused');
  if (opts.mode === 'fail' && refused.length) {
    throw new PreflightError(refused.map(describePreflight).join('\n'), results);
  }
  const log = (r: PreflightResult, retry: boolean) => {
    const fields = { signer: r.label, kind: r.kind, outcome: r.outcome, ...(r.storage ? { storage: r.storage } : {}), ...(r.status ? { status: r.status } : {}), ...(r.code ? { code: r.code } : {}) };
    if (r.outcome === 'proven') opts.logger.info(fields, `preflight: ${describePreflight(r)}`);
    else if (r.outcome === 'unreachable') opts.logger.warn(fields, `preflight: ${describePreflight(r)}; not ready${retry ? '' : ', retrying'}`);
    else opts.logger.warn(fields, `preflight: ${describePreflight(r)}`);
  };
  for (const r of results) log(r, false);

  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  const retry = () => {
    const pending = results.map((r, i) => [r, i] as const).filter(([r]) => r.outcome === 'unreachable');
    if (closed || pending.length === 0) return;
    timer = setTimeout(() => {
      void Promise.all(
        pending.map(async ([, i]) => {
          const again = await preflightSigner(signers[i]!.signer, signers[i]!.label, timeoutMs);
          if (closed) return;
          results[i] = again;
          if (again.outcome === 'refused') opts.logger.error({ signer: again.label, kind: again.kind, outcome: again.outcome }, `preflight: ${describePreflight(again)}; not ready`);
          else if (again.outcome !== 'unreachable') log(again, true);
        }),
      ).then(retry);
    }, opts.retryMs ?? 10_000);
    timer.unref();
  };
  retry();

  return {
    results: () => [...results],
    ready: () => results.every((r) => r.outcome !== 'unreachable' && r.outcome !== 'refused'),
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}

/** What the startup line says about one signer. */
export interface SignerSummary {
  kind: string;
  /** Where its URLs point: scheme, host and path up to the object key (account and container, bucket). */
  storage?: string;
  /** The preflight's outcome, when it ran. */
  preflight?: PreflightOutcome;
}

/**
 * Every signer of `config` by config key, with its storage location: from the preflight's signed
 * URL when it ran, else from signing a sample URL (no storage request; bounded to one second).
 */
export async function describeSigners(config: ServerConfig, results?: readonly PreflightResult[]): Promise<Record<string, SignerSummary>> {
  const entries = [['signer', config.signer] as const, ...Object.entries(config.signers ?? {}).map(([name, s]) => [`signers.${name}`, s] as const)];
  const summaries = await Promise.all(
    entries.map(async ([label, signer]): Promise<[string, SignerSummary]> => {
      const found = results?.find((r) => r.label === label);
      let storage = found?.storage;
      if (!found) {
        const request = missingObject();
        let timer: NodeJS.Timeout | undefined;
        try {
          const signed = await Promise.race([
            Promise.resolve(signer.sign({ ...request, method: 'GET' })),
            new Promise<undefined>((resolve) => {
              timer = setTimeout(() => resolve(undefined), 1_000);
              timer.unref();
            }),
          ]);
          if (signed) storage = storageOf(signed.url, signer, request);
        } catch {
          // the location is only informative; signing errors surface on requests
        } finally {
          clearTimeout(timer);
        }
      }
      return [label, { kind: signer.name, ...(storage ? { storage } : {}), ...(found ? { preflight: found.outcome } : {}) }];
    }),
  );
  return Object.fromEntries(summaries);
}
