import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildConfig, loadConfig } from '../../src/server/config.js';
import { AZURITE_ACCOUNT_KEY as AZURITE_KEY } from '../support/azurite.js';

const dir = mkdtempSync(join(tmpdir(), 'rr-authorize-config-'));
const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pemPath = join(dir, 'token.pem');
writeFileSync(pemPath, publicKey.export({ type: 'spki', format: 'pem' }));
const privatePath = join(dir, 'private.pem');
writeFileSync(privatePath, privateKey.export({ type: 'pkcs8', format: 'pem' }));

// The documented token-mode shape, as external checks use it, with the key path pointing at a real file.
const ISSUE_YAML = `
upstream: http://127.0.0.1:5000
signer: { azure: { account: devstoreaccount1, accountKey: "${AZURITE_KEY}", container: registry } }
authorize:
  mode: token                  # upstream (default) | token
  token:
    issuer: my-issuer
    service: my-registry       # expected \`aud\`, and \`service\` in the challenge
    realm: https://auth.example.com/token
    publicKeys: [${pemPath}]   # PEM public keys or certificates
    algorithms: [RS256]
`;

const base = () => ({
  upstream: 'http://127.0.0.1:5000',
  signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry' } },
});
const token = (over: Record<string, unknown> = {}) => ({
  issuer: 'my-issuer',
  service: 'my-registry',
  realm: 'https://auth.example.com/token',
  publicKeys: [pemPath],
  ...over,
});

describe('authorize: config block', () => {
  it('loads the documented token-mode YAML and reads the key file', async () => {
    const file = join(dir, 'proxy.yaml');
    writeFileSync(file, ISSUE_YAML);
    const config = await loadConfig(file, {});
    expect(config.authorize.mode).toBe('token');
    expect(config.authorize.tokenAuth).toMatchObject({ issuer: 'my-issuer', service: 'my-registry', realm: 'https://auth.example.com/token', algorithms: ['RS256'] });
    expect(config.authorize.tokenAuth?.publicKeys?.[0]).toContain('-----BEGIN PUBLIC KEY-----');
    expect(config.authorize.cache).toEqual({ ttl: 30_000, maxEntries: 10_000, maxBytes: 16_777_216 });
  });

  it('defaults to upstream mode with the 30 s decision cache', () => {
    const config = buildConfig(base());
    expect(config.authorize).toEqual({ mode: 'upstream', cache: { ttl: 30_000, maxEntries: 10_000, maxBytes: 16_777_216 }, acceptUpstreamRedirect: false });
  });

  it.each([
    [{ ttl: '5s', maxEntries: 500 }, { ttl: 5_000, maxEntries: 500, maxBytes: 16_777_216 }],
    [{ maxBytes: 1_048_576 }, { ttl: 30_000, maxEntries: 10_000, maxBytes: 1_048_576 }],
    [{ ttl: 0 }, { ttl: 0, maxEntries: 10_000, maxBytes: 16_777_216 }],
    [{ ttl: '0s' }, { ttl: 0, maxEntries: 10_000, maxBytes: 16_777_216 }],
    [{ ttl: '0' }, { ttl: 0, maxEntries: 10_000, maxBytes: 16_777_216 }],
    [{ ttl: '500ms' }, { ttl: 500, maxEntries: 10_000, maxBytes: 16_777_216 }],
  ])('cache %j -> %j', (cache, expected) => {
    expect(buildConfig({ ...base(), authorize: { cache } }).authorize.cache).toEqual(expected);
  });

  it('clockSkew and jwksCacheMaxAge take durations', () => {
    const config = buildConfig({ ...base(), authorize: { mode: 'token', token: token({ clockSkew: '10s', jwksCacheMaxAge: '5m', jwksUrl: 'https://auth.example.com/jwks' }) } });
    expect(config.authorize.tokenAuth).toMatchObject({ clockSkew: 10_000, jwksCacheMaxAge: 300_000, jwksUrl: 'https://auth.example.com/jwks' });
  });

  it.each([
    ['mode token without a token block', { mode: 'token' }, /authorize\.token: missing; mode: token needs e\.g\./],
    ['a token block without mode token', { token: token() }, /authorize\.token: only used with mode: token; add "mode: token"/],
    ['unknown mode', { mode: 'jwt' }, /authorize\.mode: write "upstream" .* or "token"/],
    ['misspelt key', { mode: 'token', token: { ...token(), isuer: 'x' } }, /authorize\.token\.isuer: unknown key; did you mean "issuer"\?/],
    ['missing issuer', { mode: 'token', token: { ...token(), issuer: undefined } }, /authorize\.token\.issuer: write the expected `iss`/],
    ['unreadable key file', { mode: 'token', token: token({ publicKeys: ['/nonexistent/token.pem'] }) }, /authorize\.token\.publicKeys\[0\]: cannot read \/nonexistent\/token\.pem: ENOENT; write the path of a readable PEM file/],
    ['a private key file', { mode: 'token', token: token({ publicKeys: [privatePath] }) }, /authorize\.token\.publicKeys\[0\]: holds a private key/],
    ['HS256', { mode: 'token', token: token({ algorithms: ['HS256'] }) }, /authorize\.token\.algorithms\[0\]: write a list of RS256, .* \(never none or HS\*\)/],
    ['no key source', { mode: 'token', token: token({ publicKeys: undefined }) }, /authorize\.token: no signing keys; set publicKeys/],
    ['bad realm', { mode: 'token', token: token({ realm: 'auth.example.com/token' }) }, /authorize\.token\.realm: .* is not an http\(s\) URL/],
    ['bad cache ttl', { cache: { ttl: 'soon' } }, /authorize\.cache\.ttl: "soon" is not a duration/],
    ['bad maxEntries', { cache: { maxEntries: 0 } }, /authorize\.cache\.maxEntries: 0 is not a positive integer/],
    ['misspelt cache key', { cache: { tll: '5s' } }, /authorize\.cache\.tll: unknown key; did you mean "ttl"\?/],
  ])('%s fails naming the key and the fix', (_why, authorize, message) => {
    expect(() => buildConfig({ ...base(), authorize })).toThrow(message);
  });
});
