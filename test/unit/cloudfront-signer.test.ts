import { generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cloudfrontSigner, type CloudFrontSignerOptions } from '../../src/signers/cloudfront.js';

const HEX = '0a'.repeat(32);
const req = { repository: 'library/alpine', digest: `sha256:${HEX}`, method: 'GET' as const };
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PEM = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const T0 = Date.UTC(2026, 0, 1, 0, 0, 0, 250);

function make(options: Partial<CloudFrontSignerOptions> = {}) {
  return cloudfrontSigner({ baseUrl: 'https://d111111abcdef8.cloudfront.net', keyPairId: 'K2JCJMDEHXQW5F', privateKey: PEM, now: () => T0, ...options });
}

/**
 * CloudFront's check, written from the AWS docs ("Create a signed URL using a canned policy"):
 * the policy statement is rebuilt from the URL and its Expires, the URL-safe base64 of the RSA
 * signature is undone (- _ ~ for + = /), and the signature is verified with the PUBLIC key.
 */
function checkCanned(url: string, key: KeyObject): { ok: boolean; resource: string; expires: number; keyPairId: string | null } {
  const u = new URL(url);
  const expires = Number(u.searchParams.get('Expires'));
  const signature = Buffer.from(u.searchParams.get('Signature')!.replace(/-/g, '+').replace(/_/g, '=').replace(/~/g, '/'), 'base64');
  const resource = `${u.origin}${u.pathname}`;
  const policy = `{"Statement":[{"Resource":"${resource}","Condition":{"DateLessThan":{"AWS:EpochTime":${expires}}}}]}`;
  const hash = u.searchParams.get('Hash-Algorithm') === 'SHA256' ? 'sha256' : 'sha1';
  return { ok: verify(hash, Buffer.from(policy), key, signature), resource, expires, keyPairId: u.searchParams.get('Key-Pair-Id') };
}

describe('cloudfrontSigner', () => {
  it('signs a canned-policy URL for exactly one object, RSA-SHA1, 20 min by default', () => {
    const signed = make().sign(req) as { url: string; expiresAt: number };
    const url = new URL(signed.url);
    expect(`${url.origin}${url.pathname}`).toBe(`https://d111111abcdef8.cloudfront.net/docker/registry/v2/blobs/sha256/0a/${HEX}/data`);
    expect([...url.searchParams.keys()]).toEqual(['Expires', 'Key-Pair-Id', 'Signature']);
    const check = checkCanned(signed.url, publicKey);
    expect(check).toMatchObject({ ok: true, keyPairId: 'K2JCJMDEHXQW5F', expires: Math.floor(T0 / 1_000) + 1200 });
    expect(signed.expiresAt).toBe(check.expires * 1_000);
    // a different key does not verify; a policy for another object does not match the signature
    expect(checkCanned(signed.url, generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey).ok).toBe(false);
    const other = new URL(signed.url);
    other.pathname = other.pathname.replace('/data', '/other');
    expect(checkCanned(other.href, publicKey).ok).toBe(false);
    const later = new URL(signed.url);
    later.searchParams.set('Expires', String(check.expires + 3600));
    expect(checkCanned(later.href, publicKey).ok).toBe(false);
  });

  it('SHA256 signatures carry Hash-Algorithm=SHA256', () => {
    const { url } = make({ algorithm: 'SHA256' }).sign(req) as { url: string };
    expect(new URL(url).searchParams.get('Hash-Algorithm')).toBe('SHA256');
    expect(checkCanned(url, publicKey).ok).toBe(true);
  });

  it('keeps a base path and http when the baseUrl says so; honours layout and expiry', () => {
    const signed = make({ baseUrl: 'http://cdn.example.com/registry/', layout: 'oci-per-repo', rootDirectory: 'zot', expiry: '1h' }).sign(req) as { url: string; expiresAt: number };
    expect(signed.url.startsWith(`http://cdn.example.com/registry/zot/library/alpine/blobs/sha256/${HEX}?`)).toBe(true);
    expect(checkCanned(signed.url, publicKey)).toMatchObject({ ok: true, expires: Math.floor(T0 / 1_000) + 3600 });
  });

  it('reads the key from privateKeyFile (distribution: privatekey), and PEM with literal \\n', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rr-cf-'));
    const file = join(dir, 'pk.pem');
    writeFileSync(file, privateKey.export({ type: 'pkcs1', format: 'pem' }));
    expect(checkCanned((make({ privateKey: undefined, privateKeyFile: file }).sign(req) as { url: string }).url, publicKey).ok).toBe(true);
    expect(checkCanned((make({ privateKey: PEM.replace(/\n/g, '\\n') }).sign(req) as { url: string }).url, publicKey).ok).toBe(true);
  });

  it('is synchronous (no promise on the hot path) and exposes the object key', () => {
    expect(make().sign(req)).not.toBeInstanceOf(Promise);
    expect(make({ rootDirectory: 'r' }).objectKey!(req)).toBe(`r/docker/registry/v2/blobs/sha256/0a/${HEX}/data`);
  });

  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  it.each([
    [{ baseUrl: '' }, /signer\.cloudfront\.baseUrl: must be a non-empty string/],
    [{ baseUrl: 'https://d111.cloudfront.net/?x=1' }, /signer\.cloudfront\.baseUrl: write only scheme, host, port and optional path/],
    [{ keyPairId: 'k2jcjmdehxqw5f' }, /signer\.cloudfront\.keyPairId: "k2jcjmdehxqw5f" is not a CloudFront key id/],
    [{ privateKey: undefined }, /signer\.cloudfront\.privateKey: write the PEM private key .* exactly one of the two/],
    [{ privateKeyFile: '/etc/pk.pem' }, /exactly one of the two/],
    [{ privateKey: 'garbage' }, /signer\.cloudfront\.privateKey: not a PEM private key/],
    [{ privateKey: ec }, /signer\.cloudfront\.privateKey: a ec key; CloudFront signed URLs need an RSA key/],
    [{ privateKey: undefined, privateKeyFile: '/nonexistent/pk.pem' }, /signer\.cloudfront\.privateKeyFile: cannot read \/nonexistent\/pk\.pem/],
    [{ algorithm: 'MD5' as 'SHA1' }, /signer\.cloudfront\.algorithm: write "SHA1" \(default\) or "SHA256"/],
    [{ expiry: '30d' }, /expiry: 30d is longer than 7 days/],
  ])('rejects bad options at construction, naming the key: %j', (options, message) => {
    expect(() => make(options as Partial<CloudFrontSignerOptions>)).toThrow(message);
  });
});
