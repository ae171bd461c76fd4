import { createHash, createHmac, webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hmacSigner, type HmacSignerOptions } from '../../src/signers/hmac.js';
import type { SignedUrl } from '../../src/types.js';

const HEX = '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03';
const req = { repository: 'library/alpine', digest: `sha256:${HEX}`, method: 'GET' as const };
const PATH = `/docker/registry/v2/blobs/sha256/58/${HEX}/data`;
const T0 = Date.UTC(2025, 0, 1, 12, 0, 0, 900);
const ISSUED = Math.floor(T0 / 1_000);

function sign(options: Partial<HmacSignerOptions>): SignedUrl {
  return hmacSigner({ baseUrl: 'https://cdn.example.com', key: 'my secret symmetric key', now: () => T0, ...options }).sign(req) as SignedUrl;
}

/**
 * The verifier of Cloudflare's "Sign requests" Worker example (WebCrypto, as a Worker runs it):
 * `verify=<timestamp>-<base64 mac>`, mac = HMAC-SHA256(key, pathname + timestamp), valid for
 * EXPIRY seconds after the timestamp.
 */
async function cloudflareWorkerVerify(url: string, secret: string, expirySeconds: number, nowSeconds: number): Promise<boolean> {
  const u = new URL(url);
  const param = u.searchParams.get('verify');
  if (!param) return false;
  const [timestamp, mac] = [param.slice(0, param.indexOf('-')), param.slice(param.indexOf('-') + 1)];
  const key = await webcrypto.subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
  const ok = await webcrypto.subtle.verify('HMAC', key, Buffer.from(mac, 'base64'), new TextEncoder().encode(`${u.pathname}${timestamp}`));
  return ok && nowSeconds < Number(timestamp) + expirySeconds;
}

describe('hmacSigner presets, checked by each CDN\'s own verification recipe', () => {
  it('cloudflare: ?verify=<issued>-<base64 HMAC-SHA256(path + issued)>, accepted by the Worker verifier', async () => {
    const signed = sign({ preset: 'cloudflare' });
    const url = new URL(signed.url);
    expect(`${url.origin}${url.pathname}`).toBe(`https://cdn.example.com${PATH}`);
    expect(url.searchParams.get('verify')).toMatch(new RegExp(`^${ISSUED}-[A-Za-z0-9+/]+=*$`));
    expect(signed.expiresAt).toBe((ISSUED + 1200) * 1_000);
    expect(await cloudflareWorkerVerify(signed.url, 'my secret symmetric key', 1200, ISSUED + 1199)).toBe(true);
    expect(await cloudflareWorkerVerify(signed.url, 'my secret symmetric key', 1200, ISSUED + 1200)).toBe(false);
    expect(await cloudflareWorkerVerify(signed.url, 'another key', 1200, ISSUED)).toBe(false);
    expect(await cloudflareWorkerVerify(signed.url.replace('/data?', '/date?'), 'my secret symmetric key', 1200, ISSUED)).toBe(false);
  });

  it('nginx-secure-link: reproduces the nginx documentation example exactly', () => {
    // nginx docs (ngx_http_secure_link_module): secure_link_md5 "$secure_link_expires$uri$remote_addr secret";
    // echo -n '2147483647/s/link127.0.0.1 secret' | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =
    // -> /s/link?md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483647
    const signed = hmacSigner({
      preset: 'nginx-secure-link',
      baseUrl: 'http://127.0.0.1',
      key: 'secret',
      message: '{expires}{path}127.0.0.1 {key}',
      layout: () => 's/link',
      expiry: '20m',
      now: () => (2147483647 - 1200) * 1_000,
    }).sign(req) as SignedUrl;
    expect(signed.url).toBe('http://127.0.0.1/s/link?md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483647');
  });

  it('nginx-secure-link: md5 of "<expires><uri> <key>" in base64url without padding', () => {
    const { url } = sign({ preset: 'nginx-secure-link', baseUrl: 'https://blobs.example.com/registry', key: 'secret' });
    const u = new URL(url);
    const expires = u.searchParams.get('expires');
    expect(expires).toBe(String(ISSUED + 1200));
    expect(u.searchParams.get('md5')).toBe(createHash('md5').update(`${expires}${u.pathname} secret`).digest('base64url'));
    expect(u.pathname).toBe(`/registry${PATH}`);
  });

  it('google-cdn: Signature = base64url HMAC-SHA1 (base64url-decoded key) of "<url>?Expires=..&KeyName=.."', () => {
    const key = Buffer.from('0123456789abcdef').toString('base64url') + '==';
    const { url, expiresAt } = sign({ preset: 'google-cdn', key, keyName: 'registry-key' });
    const [unsigned, signature] = url.split('&Signature=') as [string, string];
    expect(unsigned).toBe(`https://cdn.example.com${PATH}?Expires=${ISSUED + 1200}&KeyName=registry-key`);
    const expected = createHmac('sha1', Buffer.from('0123456789abcdef')).update(unsigned).digest('base64').replace(/\+/g, '-').replace(/\//g, '_');
    expect(signature).toBe(expected);
    expect(expiresAt).toBe((ISSUED + 1200) * 1_000);
  });

  it('a custom scheme: message, query, algorithm and encoding describe any other CDN', () => {
    const { url } = sign({ key: 'k', algorithm: 'hmac-sha512', encoding: 'hex', message: '{expires}|{url}', query: 'e={expires}&t={token}', expiry: '1h' });
    const u = new URL(url);
    const e = String(ISSUED + 3600);
    expect(u.searchParams.get('e')).toBe(e);
    expect(u.searchParams.get('t')).toBe(createHmac('sha512', 'k').update(`${e}|https://cdn.example.com${PATH}`).digest('hex'));
  });

  it('a preset can be adjusted, e.g. another parameter name', () => {
    const { url } = sign({ preset: 'cloudflare', query: 'token={issued}-{token}' });
    expect(new URL(url).searchParams.get('token')).toMatch(new RegExp(`^${ISSUED}-`));
  });

  it('percent-encodes base64 + and / in the query; keeps = padding', () => {
    // find a time whose MAC has + or / in it, then check how it went into the URL
    for (let i = 0; i < 50; i++) {
      const { url } = hmacSigner({ preset: 'cloudflare', baseUrl: 'https://cdn.example.com', key: 'k', now: () => T0 + i * 1_000 }).sign(req) as SignedUrl;
      const raw = url.slice(url.indexOf('verify=') + 7);
      const mac = createHmac('sha256', 'k').update(`${PATH}${ISSUED + i}`).digest('base64');
      expect(raw).toBe(`${ISSUED + i}-${encodeURIComponent(mac).replace(/%3D/g, '=')}`);
      expect(raw).not.toMatch(/[+/]/);
    }
  });

  it('is synchronous and exposes the object key', () => {
    const signer = hmacSigner({ preset: 'cloudflare', baseUrl: 'https://cdn.example.com', key: 'k' });
    expect(signer.sign(req)).not.toBeInstanceOf(Promise);
    expect(signer.objectKey!(req)).toBe(PATH.slice(1));
  });

  it.each([
    [{ preset: undefined }, /signer\.hmac: write a preset \(cloudflare, nginx-secure-link, google-cdn\) or both message and query/],
    [{ preset: 'akamai' as 'cloudflare' }, /signer\.hmac\.preset: "akamai" is not a preset/],
    [{ key: '' }, /signer\.hmac\.key: must be a non-empty string/],
    [{ baseUrl: 'cdn.example.com' }, /signer\.hmac\.baseUrl: "cdn\.example\.com" is not a URL/],
    [{ message: '{path}{expiry}' }, /signer\.hmac\.message: \{expiry\} is not allowed here/],
    [{ message: '{path}{key}{expires}' }, /signer\.hmac\.message: \{key\} is not allowed here/],
    [{ query: 'verify={issued}' }, /signer\.hmac\.query: must contain \{token\}/],
    [{ query: 'verify={token}&k={key}' }, /signer\.hmac\.query: \{key\} is not allowed here/],
    [{ message: '{path}' }, /signer\.hmac\.message: must include \{expires\} or \{issued\}/],
    [{ algorithm: 'md5' as const }, /signer\.hmac\.message: a plain md5 hash must include \{key\}/],
    [{ algorithm: 'crc32' as 'md5' }, /signer\.hmac\.algorithm: "crc32" is not supported/],
    [{ encoding: 'base32' as 'hex' }, /signer\.hmac\.encoding: write one of/],
    [{ preset: 'google-cdn' as const, key: 'nZtRohdNF9m3cKM24IcK4w==' }, /signer\.hmac\.keyName: missing/],
    [{ preset: 'google-cdn' as const, key: 'not base64url!', keyName: 'k' }, /signer\.hmac\.key: not base64url/],
    [{ keyEncoding: 'hex' as const, key: 'xyz' }, /signer\.hmac\.key: not hex/],
    [{ expiry: '8d' }, /expiry: 8d is longer than 7 days/],
  ])('rejects bad options at construction, naming the key: %j', (options, message) => {
    expect(() => hmacSigner({ preset: 'cloudflare', baseUrl: 'https://cdn.example.com', key: 'k', ...options } as HmacSignerOptions)).toThrow(message);
  });
});
