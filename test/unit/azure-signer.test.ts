import { describe, expect, it } from 'vitest';
import { azureSigner } from '../../src/signers/azure.js';

import { AZURITE_KEY } from '../helpers/constants.js';
const HEX = 'cd'.repeat(32);
const req = { repository: 'library/alpine', digest: `sha256:${HEX}`, method: 'GET' as const };

describe('azureSigner (shared key)', () => {
  it('signs a read-only SAS for exactly one blob, https only, 20 min by default', () => {
    const signer = azureSigner({ account: 'myaccount', accountKey: AZURITE_KEY, container: 'registry' });
    const before = Date.now();
    const signed = signer.sign(req) as { url: string; expiresAt: number };
    const url = new URL(signed.url);
    expect(url.origin).toBe('https://myaccount.blob.core.windows.net');
    expect(url.pathname).toBe(`/registry/docker/registry/v2/blobs/sha256/cd/${HEX}/data`);
    expect(url.searchParams.get('sp')).toBe('r');
    expect(url.searchParams.get('sr')).toBe('b');
    expect(url.searchParams.get('spr')).toBe('https');
    expect(url.searchParams.get('sig')).toBeTruthy();
    const se = Date.parse(url.searchParams.get('se')!);
    expect(Math.abs(se - (before + 20 * 60_000))).toBeLessThan(2_000);
    expect(Math.abs(signed.expiresAt - se)).toBeLessThan(1_000);
  });

  it('honours endpoint, rootDirectory, layout and expiry', () => {
    const signer = azureSigner({
      account: 'devstoreaccount1',
      accountKey: AZURITE_KEY,
      container: 'registry',
      endpoint: 'http://127.0.0.2:10000/devstoreaccount1/',
      rootDirectory: '/reg/',
      layout: 'oci-per-repo',
      expiry: '5m',
    });
    const signed = signer.sign(req) as { url: string; expiresAt: number };
    const url = new URL(signed.url);
    expect(`${url.origin}${url.pathname}`).toBe(`http://127.0.0.2:10000/devstoreaccount1/registry/reg/library/alpine/blobs/sha256/${HEX}`);
    // Plain-http endpoints (Azurite) need http allowed in the SAS.
    expect(url.searchParams.get('spr')).toBe('https,http');
    expect(Math.abs(signed.expiresAt - (Date.now() + 5 * 60_000))).toBeLessThan(2_000);
  });

  it.each([
    [{ account: 'My_Account', accountKey: AZURITE_KEY, container: 'registry' }, /signer\.azure\.account: "My_Account" is not a storage account name/],
    [{ account: 'acct', accountKey: AZURITE_KEY, container: 'Registry' }, /signer\.azure\.container: "Registry" is not a container name/],
    [{ account: 'acct', accountKey: AZURITE_KEY, container: 'registry', endpoint: 'not a url' }, /signer\.azure\.endpoint: "not a url" is not a URL/],
    [{ account: 'acct', accountKey: '', container: 'registry' }, /signer\.azure\.accountKey: empty/],
    [{ account: 'acct', accountKey: AZURITE_KEY, container: 'registry', expiry: '8d' }, /expiry: 8d is longer than 7 days/],
    [{ account: 'acct', accountKey: AZURITE_KEY, container: 'registry', expiry: 'soon' }, /expiry: "soon" is not a duration/],
  ])('rejects bad options at construction: %j', (opts, message) => {
    expect(() => azureSigner(opts)).toThrow(message);
  });

  it('user delegation: a credential failure rejects sign() (the middleware then falls back)', async () => {
    const signer = azureSigner({
      account: 'myaccount',
      container: 'registry',
      credential: { getToken: async () => { throw new Error('no managed identity here'); } },
    });
    await expect(Promise.resolve().then(() => signer.sign(req))).rejects.toThrow();
  });
});
