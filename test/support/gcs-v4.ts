/**
 * An independent check of GCS V4 signed URLs (`GOOG4-RSA-SHA256`), written from Google's
 * "V4 signing process" documentation with node:crypto: rebuild the canonical request and the
 * string to sign from the URL, then verify the signature with the service account's PUBLIC key.
 *
 * @module
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';

export interface GcsV4Check {
  ok: boolean;
  reason?: string;
  credential?: string;
  signedHeaders?: string;
  /** `X-Goog-Date` as epoch ms. */
  date?: number;
  expiresSeconds?: number;
}

function uriEncode(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Verifies `url` as a V4 signed request for `method` against `publicKey` (PEM or KeyObject).
 * `host` is the Host header value the signature is checked for (default: the URL's host).
 */
export function checkGcsV4Url(url: string, publicKey: string | KeyObject, method = 'GET', host?: string): GcsV4Check {
  const u = new URL(url);
  const params = [...u.searchParams.entries()];
  // Google's own vectors write the signature parameter in either case.
  const signature = params.find(([n]) => n.toLowerCase() === 'x-goog-signature')?.[1];
  const get = (name: string) => params.find(([n]) => n === name)?.[1];
  const date = get('X-Goog-Date');
  const credential = get('X-Goog-Credential');
  const signedHeaders = get('X-Goog-SignedHeaders');
  if (get('X-Goog-Algorithm') !== 'GOOG4-RSA-SHA256' || !signature || !date || !credential || !signedHeaders) return { ok: false, reason: 'not a V4 signed URL' };
  const scope = credential.split('/').slice(1).join('/');
  const canonicalQuery = params
    .filter(([n]) => n.toLowerCase() !== 'x-goog-signature')
    .map(([n, v]) => [uriEncode(n), uriEncode(v)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([n, v]) => `${n}=${v}`)
    .join('&');
  if (signedHeaders !== 'host') return { ok: false, reason: `signs more than host: ${signedHeaders}` };
  const canonicalRequest = [method, u.pathname, canonicalQuery, `host:${host ?? u.host}\n`, 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const stringToSign = ['GOOG4-RSA-SHA256', date, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  const ok = verify('sha256', Buffer.from(stringToSign), key, Buffer.from(signature, 'hex'));
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date);
  return {
    ok,
    ...(ok ? {} : { reason: 'signature does not verify' }),
    credential,
    signedHeaders,
    ...(m ? { date: Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!) } : {}),
    expiresSeconds: Number(get('X-Goog-Expires')),
  };
}
