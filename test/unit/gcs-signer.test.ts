import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { gcsSigner, type GcsSignerOptions } from '../../src/signers/gcs.js';
import { checkGcsV4Url } from '../support/gcs-v4.js';

interface Vector {
  description: string;
  bucket: string;
  object: string;
  expiration: string;
  timestamp: string;
  expectedUrl: string;
  scheme: string;
  urlStyle?: string;
  bucketBoundDomain?: string;
}
const conformance = JSON.parse(readFileSync(new URL('../fixtures/gcs-v4-conformance.json', import.meta.url), 'utf8')) as {
  serviceAccount: { client_email: string; private_key: string };
  signingV4Tests: Vector[];
};

const HEX = 'ef'.repeat(32);
const req = { repository: 'library/alpine', digest: `sha256:${HEX}`, method: 'GET' as const };
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PEM = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const EMAIL = 'registry@my-project.iam.gserviceaccount.com';
// In the future: @google-cloud/storage refuses to sign expiry dates before the real clock.
const T0 = Date.UTC(2036, 5, 7, 8, 9, 10, 500);

function make(options: Partial<GcsSignerOptions>) {
  return gcsSigner({ bucket: 'registry', clientEmail: EMAIL, privateKey: PEM, ...options });
}

/** Query parameter names compared case-insensitively: Google's vectors spell the signature both ways. */
function normalized(url: string): { base: string; query: Record<string, string> } {
  const u = new URL(url);
  return { base: `${u.origin}${u.pathname}`, query: Object.fromEntries([...u.searchParams].map(([k, v]) => [k.toLowerCase(), v])) };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("gcsSigner against Google's V4 conformance vectors", () => {
  it.each(conformance.signingV4Tests.map((v) => [v.description, v] as const))('%s', async (_description, v) => {
    const at = Date.parse(v.timestamp);
    // @google-cloud/storage refuses expiry dates in the past by the real clock: move only Date.
    vi.useFakeTimers({ now: at, toFake: ['Date'] });
    const signer = gcsSigner({
      bucket: v.bucket,
      clientEmail: conformance.serviceAccount.client_email,
      privateKey: conformance.serviceAccount.private_key,
      layout: () => v.object,
      expiry: Number(v.expiration) * 1_000,
      now: () => at,
      ...(v.urlStyle === 'VIRTUAL_HOSTED_STYLE' ? { virtualHostedStyle: true } : {}),
      ...(v.urlStyle === 'BUCKET_BOUND_DOMAIN' ? { bucketBoundHostname: `${v.scheme}://${v.bucketBoundDomain}` } : {}),
    });
    const signed = await signer.sign(req);
    expect(normalized(signed.url)).toEqual(normalized(v.expectedUrl));
    expect(signed.expiresAt).toBe(at + Number(v.expiration) * 1_000);
    // and the independent checker agrees with Google's expected URL
    expect(checkGcsV4Url(v.expectedUrl, createPublicKey(conformance.serviceAccount.private_key)).ok).toBe(true);
  });
});

describe('gcsSigner', () => {
  it('signs a V4 GET for exactly one object: host only, path style, https, 20 min by default', async () => {
    const signed = await make({ now: () => T0 }).sign(req);
    const url = new URL(signed.url);
    expect(`${url.origin}${url.pathname}`).toBe(`https://storage.googleapis.com/registry/docker/registry/v2/blobs/sha256/ef/${HEX}/data`);
    const check = checkGcsV4Url(signed.url, publicKey);
    expect(check).toMatchObject({ ok: true, signedHeaders: 'host', expiresSeconds: 1200, date: Date.UTC(2036, 5, 7, 8, 9, 10) });
    expect(check.credential).toBe(`${EMAIL}/20360607/auto/storage/goog4_request`);
    expect(signed.expiresAt).toBe(Date.UTC(2036, 5, 7, 8, 9, 10) + 1_200_000);
    // GCS signatures are method-bound: the URL is not valid for HEAD (never redirected anyway)
    expect(checkGcsV4Url(signed.url, publicKey, 'HEAD').ok).toBe(false);
    // another key does not verify it
    expect(checkGcsV4Url(signed.url, generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey).ok).toBe(false);
  });

  it('tampering with the object or the expiry breaks the signature', async () => {
    const { url } = await make({}).sign(req);
    const other = new URL(url);
    other.pathname = other.pathname.replace('/data', '/link');
    expect(checkGcsV4Url(other.href, publicKey).ok).toBe(false);
    const longer = new URL(url);
    longer.searchParams.set('X-Goog-Expires', '604800');
    expect(checkGcsV4Url(longer.href, publicKey).ok).toBe(false);
  });

  it.each([
    ['virtual-hosted', { virtualHostedStyle: true }, `https://registry.storage.googleapis.com/docker/registry/v2/blobs/sha256/ef/${HEX}/data`],
    ['bucket-bound hostname', { bucketBoundHostname: 'https://blobs.example.com/' }, `https://blobs.example.com/docker/registry/v2/blobs/sha256/ef/${HEX}/data`],
    ['private endpoint', { endpoint: 'https://storage-registry.p.googleapis.com' }, `https://storage-registry.p.googleapis.com/registry/docker/registry/v2/blobs/sha256/ef/${HEX}/data`],
    ['oci-per-repo under a root', { layout: 'oci-per-repo', rootDirectory: 'zot' }, `https://storage.googleapis.com/registry/zot/library/alpine/blobs/sha256/${HEX}`],
  ] as const)('%s URLs verify', async (_what, options, base) => {
    const { url } = await make(options).sign(req);
    expect(url.startsWith(`${base}?`)).toBe(true);
    expect(checkGcsV4Url(url, publicKey).ok).toBe(true);
  });

  it('keeps an http endpoint and its port (emulators); the library signs the host name without the port', async () => {
    const { url } = await make({ endpoint: 'http://127.0.0.2:4443' }).sign(req);
    expect(url.startsWith(`http://127.0.0.2:4443/registry/docker/registry/v2/blobs/sha256/ef/${HEX}/data?`)).toBe(true);
    expect(checkGcsV4Url(url, publicKey).ok).toBe(false);
    expect(checkGcsV4Url(url, publicKey, 'GET', '127.0.0.2').ok).toBe(true);
  });

  it('reads a service account key file, and a PEM with literal \\n from an environment variable', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rr-gcs-'));
    const file = join(dir, 'sa.json');
    writeFileSync(file, JSON.stringify({ type: 'service_account', client_email: EMAIL, private_key: PEM }));
    expect(checkGcsV4Url((await gcsSigner({ bucket: 'registry', keyFile: file }).sign(req)).url, publicKey).ok).toBe(true);
    const escaped = PEM.replace(/\n/g, '\\n');
    expect(checkGcsV4Url((await make({ privateKey: escaped }).sign(req)).url, publicKey).ok).toBe(true);
  });

  it('without credentials (no ADC): ready() fails naming the keys, sign() rejects', async () => {
    const saved = process.env.GOOGLE_APPLICATION_CREDENTIALS;
    process.env.GOOGLE_APPLICATION_CREDENTIALS = '/nonexistent/rr-adc.json';
    try {
      const signer = gcsSigner({ bucket: 'registry' });
      await expect(signer.ready!()).rejects.toThrow(/signer\.gcs: no Google credentials: .*Set signer\.gcs\.keyFile/);
      await expect(signer.sign(req)).rejects.toThrow();
    } finally {
      if (saved === undefined) delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
      else process.env.GOOGLE_APPLICATION_CREDENTIALS = saved;
    }
  });

  it('prints nothing at construction (no google-auth-library deprecation line in the server log)', () => {
    const warn = vi.spyOn(console, 'warn');
    try {
      make({});
      expect(warn).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
    }
  });

  it('exposes the object key for the cache', () => {
    expect(make({}).objectKey!(req)).toBe(`docker/registry/v2/blobs/sha256/ef/${HEX}/data`);
  });

  const dir = mkdtempSync(join(tmpdir(), 'rr-gcs-bad-'));
  const noKey = join(dir, 'user.json');
  writeFileSync(noKey, JSON.stringify({ type: 'authorized_user', client_id: 'x', refresh_token: 'y' }));
  it.each([
    [{ bucket: '' }, /signer\.gcs\.bucket: must be a non-empty string/],
    [{ bucket: 'Registry' }, /signer\.gcs\.bucket: "Registry" is not a bucket name/],
    [{ clientEmail: undefined, privateKey: undefined, keyFile: '/nonexistent/sa.json' }, /signer\.gcs\.keyFile: cannot read \/nonexistent\/sa\.json/],
    [{ clientEmail: undefined, privateKey: undefined, keyFile: noKey }, /signer\.gcs\.keyFile: .* has no client_email\/private_key/],
    [{ keyFile: noKey }, /signer\.gcs: set keyFile or clientEmail\/privateKey, not both/],
    [{ privateKey: 'not a key' }, /signer\.gcs\.privateKey: not a PEM private key/],
    [{ privateKey: undefined }, /signer\.gcs\.privateKey: missing; clientEmail is set/],
    [{ clientEmail: undefined }, /signer\.gcs\.clientEmail: missing; privateKey is set/],
    [{ expiry: '8d' }, /expiry: 8d is longer than 7 days, the longest a GCS V4 signed URL can live/],
    [{ endpoint: 'https://storage.googleapis.com/v1' }, /signer\.gcs\.endpoint: write only scheme and host/],
    [{ endpoint: 'gs://registry' }, /signer\.gcs\.endpoint: protocol gs: is not supported/],
    [{ virtualHostedStyle: true, bucketBoundHostname: 'https://blobs.example.com' }, /signer\.gcs: set bucketBoundHostname or virtualHostedStyle, not both/],
  ])('rejects bad options at construction, naming the key: %j', (options, message) => {
    expect(() => make(options as Partial<GcsSignerOptions>)).toThrow(message);
  });
});
