import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import jwt from 'jsonwebtoken';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { azureSigner } from '../../src/signers/azure.js';
import { AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY, azuriteBlobMain } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { supervise, type Supervised } from '../support/child.js';
import { waitFor } from '../support/http.js';
import { freePort } from '../support/ports.js';

const has = requireBinary('openssl');
const HOST = '127.0.0.2';
const BLOB = Buffer.from('user delegation sas payload');
const DIGEST_HEX = 'ab'.repeat(32);
const KEY = `docker/registry/v2/blobs/sha256/ab/${DIGEST_HEX}/data`;

/** A token the way Azure AD shapes it; Azurite's `--oauth basic` checks iss/aud/nbf/exp, not the signature. */
function aadToken(): string {
  // Real time even when a test fakes Date: Azurite checks nbf/exp against its own clock.
  const now = Math.floor((performance.timeOrigin + performance.now()) / 1000);
  return jwt.sign(
    { aud: 'https://storage.azure.com', iss: 'https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/', nbf: now - 60, exp: now + 3600, oid: '11111111-2222-3333-4444-555555555555', tid: '72f988bf-86f1-41af-91ab-2d7cd011db47' },
    'not-checked-by-azurite',
  );
}

function get(url: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { rejectUnauthorized: false, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      })
      .on('error', reject);
  });
}

/**
 * Managed-identity deployments have no account key: the signer gets a user delegation key from
 * Azure AD (DefaultAzureCredential in production; here a credential minting Azure-shaped tokens)
 * and issues user delegation SAS. Azurite (HTTPS + OAuth) hands out the key and verifies the SAS.
 */
describe.skipIf(!has)('azureSigner without accountKey: user delegation SAS against Azurite', () => {
  let dir: string;
  let azurite: Supervised;
  let endpoint: string;
  const tlsSetting = process.env.NODE_TLS_REJECT_UNAUTHORIZED;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rr-aad-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.2', '-addext', 'subjectAltName=IP:127.0.0.2', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const port = await freePort(HOST);
    azurite = supervise(process.execPath, [azuriteBlobMain(), '--blobHost', HOST, '--blobPort', String(port), '--location', dir, '--skipApiVersionCheck', '--loose', '--silent', '--disableTelemetry', '--disableProductStyleUrl', '--oauth', 'basic', '--cert', join(dir, 'cert.pem'), '--key', join(dir, 'key.pem')], { cwd: dir });
    endpoint = `https://${HOST}:${port}/${AZURITE_ACCOUNT}`;
    // The SDK talks to a self-signed Azurite: trust it for this test file's process only.
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
    await waitFor(async () => (await get(`${endpoint}?comp=properties&restype=service`).catch(() => undefined)) !== undefined, { timeoutMs: 20_000, label: 'azurite https', describe: () => azurite.output() });
    const seed = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY)).getContainerClient('registry');
    await seed.createIfNotExists();
    await seed.getBlockBlobClient(KEY).uploadData(BLOB);
  });

  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  afterAll(async () => {
    if (tlsSetting === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    else process.env.NODE_TLS_REJECT_UNAUTHORIZED = tlsSetting;
    await azurite?.stop(1_000);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const request = { repository: 'team/app', digest: `sha256:${DIGEST_HEX}`, method: 'GET' as const };
  const credential = { getToken: async () => ({ token: aadToken(), expiresOnTimestamp: Date.now() + 3_600_000 }) };

  it('signs a user delegation SAS that Azurite accepts; tampering is refused', async () => {
    const signer = azureSigner({ account: AZURITE_ACCOUNT, container: 'registry', endpoint, credential });
    const signed = await signer.sign(request);
    const url = new URL(signed.url);
    expect(url.searchParams.get('skoid')).toBe('11111111-2222-3333-4444-555555555555');
    expect(url.searchParams.get('sp')).toBe('r');
    expect(url.searchParams.get('sr')).toBe('b');
    const ok = await get(signed.url);
    expect(ok.status).toBe(200);
    expect(ok.body.equals(BLOB)).toBe(true);
    const sig = url.searchParams.get('sig')!;
    url.searchParams.set('sig', (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1));
    expect((await get(url.href)).status).toBe(403);
  });

  it('fetches the delegation key once for concurrent signs, reuses it, and renews it before a URL could outlive it', async () => {
    const spy = vi.spyOn(BlobServiceClient.prototype, 'getUserDelegationKey');
    const signer = azureSigner({ account: AZURITE_ACCOUNT, container: 'registry', endpoint, credential, expiry: '20m' });
    const urls = await Promise.all(Array.from({ length: 20 }, () => signer.sign(request)));
    expect(spy).toHaveBeenCalledTimes(1);
    expect(new Set(urls.map((u) => new URL(u.url).searchParams.get('skt'))).size).toBe(1);
    await signer.sign(request); // cached: synchronous path, no new key
    expect(spy).toHaveBeenCalledTimes(1);
    // Jump to 10 minutes before the key's expiry: a 20-minute SAS would outlive it -> renew.
    const keyExpiry = Date.parse(new URL(urls[0]!.url).searchParams.get('ske')!);
    vi.useFakeTimers({ toFake: ['Date'], now: keyExpiry - 10 * 60_000 });
    const renewed = await signer.sign(request);
    expect(spy).toHaveBeenCalledTimes(2);
    expect(Date.parse(new URL(renewed.url).searchParams.get('ske')!)).toBeGreaterThan(keyExpiry);
  });

  it('a credential that cannot get a token makes sign() reject (the middleware then falls back to proxying)', async () => {
    const signer = azureSigner({ account: AZURITE_ACCOUNT, container: 'registry', endpoint, credential: { getToken: async () => { throw new Error('no identity'); } } });
    await expect(Promise.resolve().then(() => signer.sign(request))).rejects.toThrow();
  });
});
