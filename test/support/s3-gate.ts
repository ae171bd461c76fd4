/**
 * S3 for e2e tests: s3rver (npm `s3rver`, a real S3 API server on disk) behind a gate that
 * verifies SigV4 presigned URLs, because s3rver itself accepts wrong, tampered, expired and even
 * unsigned URLs.
 *
 * Layout:
 *
 *     client ──► SigV4 gate  http://HOST:GATE      (`endpoint`; records every request)
 *                   │  recomputes the signature with @smithy/signature-v4 for the
 *                   │  key id in the URL; forwards only requests that verify
 *                   ▼
 *                s3rver      http://HOST:PRIVATE   (`directEndpoint`; `client` seeds it)
 *
 * The gate answers like S3 (XML `<Error><Code>..</Code><Message>..</Message></Error>`):
 * unsigned or header-signed -> 403 AccessDenied, unknown key id -> 403 InvalidAccessKeyId,
 * wrong signature (wrong secret, tampered URL, other method) -> 403 SignatureDoesNotMatch,
 * expired -> 403 AccessDenied "Request has expired", wrong region or malformed parameters ->
 * 400 AuthorizationQueryParametersError.
 *
 * One emulator gap is filled in: s3rver never answers a ranged GET of an empty object (it hangs);
 * S3 answers 416 InvalidRange. The gate does the same, so empty objects (zot dedupe copies) can
 * be tested.
 *
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Sha256 } from '@aws-crypto/sha256-js';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { SignatureV4 } from '@smithy/signature-v4';
import { supervise } from './child.js';
import { forwardHeaders, request, waitFor } from './http.js';
import { assertLoopback, freePort } from './ports.js';

/** s3rver's built-in credentials (it checks header signatures against these when seeding). */
export const S3RVER_KEY = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

/** What the gate decided for one request. */
export interface GateVerdict {
  ok: boolean;
  status: number;
  /** `OK` or the S3 error code. */
  code: string;
  message: string;
}

/** One request as seen by the gate. */
export interface GateRecord {
  method: string;
  /** Path and query as received. */
  url: string;
  /** Lower-cased request headers as received. */
  headers: Record<string, string | string[] | undefined>;
  verdict: GateVerdict;
  /** Status sent to the client (s3rver's when forwarded). */
  status?: number;
}

export interface VerifyOptions {
  /** Known key ids and their secrets. */
  keys: Readonly<Record<string, string>>;
  /** Region the "bucket" lives in. */
  region: string;
  /** Current time, epoch ms. */
  now: number;
}

const OK: GateVerdict = { ok: true, status: 200, code: 'OK', message: 'signature verified' };
const deny = (status: number, code: string, message: string): GateVerdict => ({ ok: false, status, code, message });
const MAX_EXPIRES = 604_800;
const MAX_CLOCK_SKEW_MS = 15 * 60_000;

function parseQuery(query: string): [string, string][] {
  if (!query) return [];
  return query.split('&').map((pair) => {
    const eq = pair.indexOf('=');
    return [decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq)), decodeURIComponent(eq < 0 ? '' : pair.slice(eq + 1))];
  });
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

/**
 * Verifies a presigned S3 request the way S3 does, recomputing the signature with the AWS SDK's
 * SigV4 implementation (@smithy/signature-v4) for the key id named in the URL.
 */
export async function verifyPresignedRequest(
  req: { method: string; url: string; headers: IncomingHttpHeaders },
  opts: VerifyOptions,
): Promise<GateVerdict> {
  if (req.headers.authorization !== undefined) {
    return deny(403, 'AccessDenied', 'header-signed requests are not accepted here: presigned URLs only');
  }
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const params = parseQuery(q < 0 ? '' : req.url.slice(q + 1));
  const get = (name: string) => params.find(([n]) => n === name)?.[1];
  const required = ['X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Signature'];
  const present = required.filter((name) => get(name) !== undefined);
  if (present.length === 0) return deny(403, 'AccessDenied', 'Access Denied (anonymous request)');
  if (present.length < required.length) {
    return deny(400, 'AuthorizationQueryParametersError', `Query-string authentication version 4 requires the ${required.join(', ')} parameters`);
  }
  if (get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256') return deny(400, 'AuthorizationQueryParametersError', 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"');

  const [accessKeyId, shortDate, region, service, terminator] = get('X-Amz-Credential')!.split('/');
  const amzDate = get('X-Amz-Date')!;
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!accessKeyId || !shortDate || !region || service !== 's3' || terminator !== 'aws4_request' || !m || shortDate !== amzDate.slice(0, 8)) {
    return deny(400, 'AuthorizationQueryParametersError', 'Error parsing the X-Amz-Credential parameter or X-Amz-Date');
  }
  const secretAccessKey = opts.keys[accessKeyId];
  if (secretAccessKey === undefined) return deny(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
  if (region !== opts.region) {
    return deny(400, 'AuthorizationQueryParametersError', `Error parsing the X-Amz-Credential parameter; the region '${region}' is wrong; expecting '${opts.region}'`);
  }
  const expiresText = get('X-Amz-Expires')!;
  const expiresIn = Number(expiresText);
  if (!/^\d+$/.test(expiresText) || expiresIn < 1 || expiresIn > MAX_EXPIRES) {
    return deny(400, 'AuthorizationQueryParametersError', 'X-Amz-Expires must be less than a week (in seconds) that is 604800');
  }
  const signingDate = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
  if (signingDate - opts.now > MAX_CLOCK_SKEW_MS) return deny(403, 'AccessDenied', 'Request is not valid yet');
  if (opts.now > signingDate + expiresIn * 1_000) return deny(403, 'AccessDenied', 'Request has expired');

  const signedHeaderNames = get('X-Amz-SignedHeaders')!.split(';');
  if (!signedHeaderNames.includes('host')) return deny(400, 'AuthorizationQueryParametersError', 'X-Amz-SignedHeaders must include host');
  const headers: Record<string, string> = { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' };
  for (const name of signedHeaderNames) {
    const value = headerValue(req.headers, name);
    if (value === undefined) return deny(403, 'AccessDenied', `There were headers present in the request which were not signed: ${name} is missing`);
    headers[name] = value;
  }
  const host = headers.host!;
  const colon = host.lastIndexOf(':');
  const signer = new SignatureV4({
    credentials: { accessKeyId, secretAccessKey },
    region,
    service: 's3',
    sha256: Sha256,
    uriEscapePath: false,
    applyChecksum: false,
  });
  const recomputed = await signer.presign(
    {
      method: req.method,
      protocol: 'http:',
      hostname: colon > 0 ? host.slice(0, colon) : host,
      ...(colon > 0 ? { port: Number(host.slice(colon + 1)) } : {}),
      path,
      query: Object.fromEntries(params.filter(([name]) => name !== 'X-Amz-Signature')),
      headers,
    },
    {
      signingDate: new Date(signingDate),
      expiresIn,
      signingRegion: region,
      signingService: 's3',
      // Presigned S3 requests always hash the payload as UNSIGNED-PAYLOAD; the header only tells
      // the signer so, it is neither signed nor moved into the query.
      unsignableHeaders: new Set(['x-amz-content-sha256']),
      unhoistableHeaders: new Set([...signedHeaderNames, 'x-amz-content-sha256']),
    },
  );
  const expected = Buffer.from(String(recomputed.query?.['X-Amz-Signature'] ?? ''), 'hex');
  const given = Buffer.from(get('X-Amz-Signature')!, 'hex');
  if (recomputed.query?.['X-Amz-SignedHeaders'] !== get('X-Amz-SignedHeaders') || expected.length !== given.length || !timingSafeEqual(expected, given)) {
    return deny(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.');
  }
  return OK;
}

function errorXml(v: GateVerdict): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${v.code}</Code><Message>${v.message}</Message></Error>`;
}

/**
 * The verified request as s3rver gets it: without the X-Amz-* authentication parameters, since
 * s3rver serves anonymous reads but refuses key ids it does not know.
 */
function withoutAuthParams(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const rest = url
    .slice(q + 1)
    .split('&')
    .filter((pair) => !/^x-amz-/i.test(pair))
    .join('&');
  return rest ? `${url.slice(0, q)}?${rest}` : url.slice(0, q);
}

export interface StartS3GateOptions {
  /** Loopback address for s3rver and the gate (default `127.0.0.2`). */
  host?: string;
  /** Bucket created at startup (default `registry`). */
  bucket?: string;
  /** Region the gate expects in signatures (default `us-east-1`). */
  region?: string;
  /** Key ids and secrets the gate accepts (default s3rver's `S3RVER`/`S3RVER`). */
  keys?: Record<string, string>;
  /** Clock for expiry checks (default `Date.now`). */
  now?: () => number;
  /** Startup timeout in ms (default 15 000). */
  startTimeoutMs?: number;
}

export interface RunningS3Gate {
  /** Gate endpoint, e.g. `http://127.0.0.2:40123` (path-style: `<endpoint>/<bucket>/<key>`). */
  endpoint: string;
  /** s3rver itself (not verified, not recorded). */
  directEndpoint: string;
  host: string;
  port: number;
  bucket: string;
  region: string;
  /** A key the gate accepts (the first of `keys`). */
  accessKeyId: string;
  secretAccessKey: string;
  /** Requests the gate received, in order. Clear with `requests.length = 0`. */
  requests: GateRecord[];
  /** Path-style client straight to s3rver, for seeding (not recorded). */
  client: S3Client;
  /** A GET presigned by the AWS SDK's getSignedUrl for the gate, optionally with other credentials. */
  presign(key: string, opts?: { expiresIn?: number; accessKeyId?: string; secretAccessKey?: string; region?: string; signingDate?: Date }): Promise<string>;
  logs(): string;
  stop(): Promise<void>;
}

function s3rverMain(): string {
  const req = createRequire(import.meta.url);
  return join(dirname(req.resolve('s3rver/package.json')), 'bin', 's3rver.js');
}

/** Starts s3rver on a private port and the verifying gate in front of it, both on `host`. */
export async function startS3Gate(opts: StartS3GateOptions = {}): Promise<RunningS3Gate> {
  const host = opts.host ?? '127.0.0.2';
  assertLoopback(host);
  const bucket = opts.bucket ?? 'registry';
  const region = opts.region ?? 'us-east-1';
  const keys = opts.keys ?? { [S3RVER_KEY.accessKeyId]: S3RVER_KEY.secretAccessKey };
  const [accessKeyId, secretAccessKey] = Object.entries(keys)[0] ?? [];
  if (!accessKeyId || secretAccessKey === undefined) throw new Error('startS3Gate: keys must name at least one key id');
  const now = opts.now ?? Date.now;

  const dir = await mkdtemp(join(tmpdir(), 'rr-s3rver-'));
  const privatePort = await freePort(host);
  const proc = supervise(process.execPath, [s3rverMain(), '-d', dir, '-a', host, '-p', String(privatePort), '--configure-bucket', bucket, '--silent']);
  let exited: string | undefined;
  void proc.exited.then((code) => {
    exited = `s3rver exited (${String(code)})`;
  });
  const directEndpoint = `http://${host}:${privatePort}`;
  try {
    await waitFor(
      async () => {
        await request(`${directEndpoint}/`, { timeoutMs: 1_000 });
        return true;
      },
      { timeoutMs: opts.startTimeoutMs ?? 15_000, label: `s3rver on ${host}:${privatePort}`, giveUp: () => exited, describe: () => proc.output() },
    );
  } catch (err) {
    await proc.stop(500);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  const requests: GateRecord[] = [];
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    const record: GateRecord = { method: req.method ?? 'GET', url: req.url ?? '/', headers: { ...req.headers }, verdict: OK };
    requests.push(record);
    verifyPresignedRequest({ method: record.method, url: record.url, headers: req.headers }, { keys, region, now: now() }).then(
      (verdict) => {
        record.verdict = verdict;
        if (!verdict.ok) {
          record.status = verdict.status;
          const body = errorXml(verdict);
          res.writeHead(verdict.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
          res.end(req.method === 'HEAD' ? undefined : body);
          req.resume();
          return;
        }
        const path = withoutAuthParams(record.url);
        void emptyObjectRange(req.method, req.headers.range, path).then((empty) => {
          if (empty) {
            const body = errorXml(deny(416, 'InvalidRange', 'The requested range is not satisfiable')).replace('</Message>', `</Message><RangeRequested>${req.headers.range}</RangeRequested><ActualObjectSize>0</ActualObjectSize>`);
            record.status = 416;
            res.writeHead(416, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
            res.end(body);
            req.resume();
            return;
          }
          forward(path);
        });
      },
      (err: unknown) => {
        record.verdict = deny(500, 'InternalError', String(err));
        record.status = 500;
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(err));
      },
    );

    function forward(path: string): void {
      const up = http.request({ host, port: privatePort, method: req.method, path, headers: forwardHeaders(req.headers), agent }, (upRes) => {
        record.status = upRes.statusCode;
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, forwardHeaders(upRes.headers));
        upRes.pipe(res);
        upRes.on('error', () => res.destroy());
      });
      up.on('error', (err) => {
        if (res.headersSent) res.destroy(err);
        else {
          res.writeHead(502, { 'content-type': 'text/plain' });
          res.end(`s3 gate: ${err.message}`);
        }
      });
      req.pipe(up);
    }
  });

  /** True for a ranged GET of an object s3rver holds with zero bytes. */
  function emptyObjectRange(method: string | undefined, range: string | undefined, path: string): Promise<boolean> {
    if (method !== 'GET' || !range) return Promise.resolve(false);
    return new Promise((resolve) => {
      const head = http.request({ host, port: privatePort, method: 'HEAD', path, agent }, (r) => {
        r.resume();
        resolve(r.statusCode === 200 && r.headers['content-length'] === '0');
      });
      head.on('error', () => resolve(false));
      head.end();
    });
  }
  const port = await freePort(host);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => resolve());
  });
  const endpoint = `http://${host}:${port}`;
  const client = new S3Client({
    region,
    endpoint: directEndpoint,
    forcePathStyle: true,
    credentials: S3RVER_KEY,
    // s3rver predates the SDK's default CRC32 trailers on uploads.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });

  return {
    endpoint,
    directEndpoint,
    host,
    port,
    bucket,
    region,
    accessKeyId,
    secretAccessKey,
    requests,
    client,
    async presign(key, o = {}) {
      const signingClient = new S3Client({
        region: o.region ?? region,
        endpoint,
        forcePathStyle: true,
        credentials: { accessKeyId: o.accessKeyId ?? accessKeyId, secretAccessKey: o.secretAccessKey ?? secretAccessKey },
      });
      try {
        return await getSignedUrl(signingClient, new GetObjectCommand({ Bucket: bucket, Key: key }), {
          expiresIn: o.expiresIn ?? 600,
          ...(o.signingDate ? { signingDate: o.signingDate } : {}),
        });
      } finally {
        signingClient.destroy();
      }
    },
    logs: () => proc.output(),
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
      client.destroy();
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
