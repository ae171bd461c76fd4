/**
 * An independent SigV4 query-signature check written from the AWS documentation with node:crypto
 * only (no AWS SDK code), so it can judge URLs the SDK produced. Proven against the worked example
 * in the S3 docs ("Authenticating Requests: Using Query Parameters").
 *
 * @module
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** Result of {@link checkSigV4Url}. */
export interface SigV4Check {
  ok: boolean;
  /** Why not, when not ok. */
  reason?: string;
  accessKeyId?: string;
  region?: string;
  signedHeaders?: string[];
  /** `X-Amz-Date` as epoch ms. */
  date?: number;
  expiresSeconds?: number;
}

/** RFC 3986 encoding as SigV4 wants it: everything but unreserved characters. */
function uriEncode(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function parseQuery(query: string): [string, string][] {
  if (!query) return [];
  return query.split('&').map((pair) => {
    const eq = pair.indexOf('=');
    const name = eq < 0 ? pair : pair.slice(0, eq);
    const value = eq < 0 ? '' : pair.slice(eq + 1);
    return [decodeURIComponent(name), decodeURIComponent(value)];
  });
}

const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data, 'utf8').digest();

/**
 * Recomputes the signature of a presigned URL for `method` with `secretAccessKey`. `headers`
 * supplies values of signed headers other than `host` (taken from the URL).
 */
export function checkSigV4Url(
  url: string,
  { method = 'GET', secretAccessKey, headers = {} }: { method?: string; secretAccessKey: string; headers?: Record<string, string> },
): SigV4Check {
  const u = new URL(url);
  const params = parseQuery(u.search.slice(1));
  const get = (name: string) => params.find(([n]) => n === name)?.[1];
  const signature = get('X-Amz-Signature');
  const credential = get('X-Amz-Credential');
  const amzDate = get('X-Amz-Date');
  const signedHeaderList = get('X-Amz-SignedHeaders');
  if (get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256' || !signature || !credential || !amzDate || !signedHeaderList) {
    return { ok: false, reason: 'not a SigV4 presigned URL' };
  }
  const [accessKeyId, shortDate, region, service, terminator] = credential.split('/');
  if (!accessKeyId || !shortDate || !region || service !== 's3' || terminator !== 'aws4_request') return { ok: false, reason: 'bad credential scope' };
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!m) return { ok: false, reason: 'bad X-Amz-Date' };
  const date = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);

  const canonicalQuery = params
    .filter(([name]) => name !== 'X-Amz-Signature')
    .map(([name, value]) => [uriEncode(name), uriEncode(value)] as const)
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('&');
  const signedHeaders = signedHeaderList.split(';');
  const values: Record<string, string> = { host: u.host, ...Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])) };
  const canonicalHeaders = signedHeaders.map((h) => `${h}:${(values[h] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  const canonicalRequest = [method, u.pathname, canonicalQuery, canonicalHeaders, signedHeaderList, 'UNSIGNED-PAYLOAD'].join('\n');
  const scope = `${shortDate}/${region}/s3/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, shortDate), region), 's3'), 'aws4_request');
  const expected = createHmac('sha256', key).update(stringToSign).digest();
  const given = Buffer.from(signature, 'hex');
  const ok = given.length === expected.length && timingSafeEqual(given, expected);
  return {
    ok,
    ...(ok ? {} : { reason: 'signature mismatch' }),
    accessKeyId,
    region,
    signedHeaders,
    date,
    expiresSeconds: Number(get('X-Amz-Expires')),
  };
}
