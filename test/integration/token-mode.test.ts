import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { registryRedirect } from '../../src/index.js';
import type { RegistryRedirectOptions } from '../../src/types.js';
import { testSigner } from '../helpers/token-registry.js';

const publicPem = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
const tokenAuth = { issuer: 'i', service: 's', realm: 'https://auth.example.test/token', publicKeys: [publicPem] };

describe('registryRedirect({ tokenAuth, decisionCache }) construction', () => {
  it('accepts token mode and a decision cache in proxy mode', async () => {
    const mw = registryRedirect({ upstream: 'http://127.0.0.1:5000', signer: testSigner(), tokenAuth, decisionCache: { ttl: 5_000, maxEntries: 100 } });
    await mw.close();
    const off = registryRedirect({ upstream: 'http://127.0.0.1:5000', signer: testSigner(), decisionCache: false });
    await off.close();
  });

  it.each([
    [{ signer: testSigner(), authorize: (): undefined => undefined, tokenAuth }, /`tokenAuth` and `decisionCache` need `upstream` \(proxy mode\)/],
    [{ signer: testSigner(), authorize: (): undefined => undefined, decisionCache: { ttl: 1 } }, /`tokenAuth` and `decisionCache` need `upstream`/],
    [{ upstream: 'http://x', signer: testSigner(), tokenAuth: { ...tokenAuth, algorithms: ['HS256'] } }, /tokenAuth\.algorithms: "HS256" is not accepted/],
    [{ upstream: 'http://x', signer: testSigner(), tokenAuth: { ...tokenAuth, publicKeys: [] } }, /tokenAuth: no signing keys/],
    [{ upstream: 'http://x', signer: testSigner(), decisionCache: { ttl: -5 } }, /decisionCache\.ttl: -5 is not a duration/],
    [{ upstream: 'http://x', signer: testSigner(), tokenauth: tokenAuth }, /unknown option "tokenauth"/],
  ])('rejects %# with a message that says what to fix', (options, message) => {
    expect(() => registryRedirect(options as unknown as RegistryRedirectOptions)).toThrow(message);
  });
});
