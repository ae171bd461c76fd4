/**
 * Threat: token mode reads a well-signed but unusual token differently from the upstream. Where
 * the proxy redirects and distribution refuses (`aud` as a list, a float `exp`, a token naming no
 * key), anyone holding such a token reads blobs the registry would not serve them. Where the proxy
 * refuses and distribution serves (a long token, `class` in an access entry, `Access` spelled in
 * capitals), pulls break. Invariant: the proxy parses like distribution 2.8 (Go's encoding/json:
 * case-insensitive names, int64 times, typed fields), redirects only what distribution grants, and
 * hands a properly signed token that some registry might read differently to the upstream rather
 * than answering for it; never the other way round.
 *
 * First a unit matrix of the verifier's verdicts, then each case against real distribution 2.8.2
 * with `auth: token`: the proxy's answer next to distribution's own.
 */
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { libtrustKeyId } from '../../src/authorize/token-keys.js';
import { createTokenVerifier } from '../../src/authorize/token.js';
import { answerShape } from '../helpers/registry-api.js';
import { startProxy } from '../helpers/proxy-server.js';
import type { RunningProxy } from '../helpers/proxy-server.js';
import { startTokenRegistry, testSigner } from '../helpers/token-registry.js';
import type { TokenRegistry } from '../helpers/token-registry.js';
import { signRawToken } from '../helpers/tokens.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeTokenSigner } from '../support/token-auth.js';
import type { TokenSigner } from '../support/token-auth.js';

/** What the proxy does with the token: 307, hand the GET to the upstream, or answer 401 itself. */
type Outcome = 'redirect' | 'upstream' | 'local-401';

interface Material {
  issuer: string;
  service: string;
  /** JSON text of the header fields naming the trusted key (`"x5c":[...]` or `"kid":"..."`). */
  keyField: string;
  /** The same key as a `kid` (libtrust key ID) and as a JWK. */
  kid: string;
  jwk: object;
  sign(header: string, payload: string, alg?: 'RS256' | 'RS384' | 'PS256'): string;
  /** Signs with a key nobody trusts. */
  signForeign(header: string, payload: string): string;
  /** An `x5c` header field: the trusted certificate, then an unrelated one (e2e only). */
  x5cWithStranger?: string;
}

/**
 * `[name, authorization, expected proxy outcome, distribution 2.8.2's status ('reset' = it drops
 * the connection)]`. The statuses are what distribution answered when these were written; the e2e
 * below checks them again on every run.
 */
function cases(m: Material): Array<[string, string, Outcome, number | 'reset']> {
  const now = Math.floor(Date.now() / 1000);
  const acc = '[{"type":"repository","name":"team/app","actions":["pull"]}]';
  /** Claims as raw JSON; `over` replaces a claim's JSON text ('' drops it); `name#2` adds a second occurrence. */
  const claims = (over: Record<string, string> = {}) => {
    const base: Record<string, string> = {
      iss: JSON.stringify(m.issuer),
      sub: '"tester"',
      aud: JSON.stringify(m.service),
      iat: String(now),
      nbf: String(now - 10),
      exp: String(now + 300),
      jti: '"jti-1"',
      access: acc,
    };
    const fields = Object.entries({ ...base, ...over }).filter(([, v]) => v !== '');
    return `{${fields.map(([k, v]) => `${JSON.stringify(k.replace(/#\d$/, ''))}:${v}`).join(',')}}`;
  };
  const header = `{"alg":"RS256","typ":"JWT",${m.keyField}}`;
  const bearer = (h: string, p: string) => `Bearer ${m.sign(h, p)}`;
  const signed = (over: Record<string, string>) => bearer(header, claims(over));
  return [
    ['control: an ordinary token', signed({}), 'redirect', 200],
    // distribution says 401; the proxy used to redirect.
    ['aud as a list holding the service', signed({ aud: JSON.stringify([m.service]) }), 'upstream', 401],
    ['aud as a list without the service', signed({ aud: JSON.stringify(['another-registry']) }), 'local-401', 401],
    ['exp as a float (now + 300.5)', signed({ exp: `${now + 300}.5` }), 'upstream', 401],
    ['exp written 1700000000.0', signed({ exp: `${now + 300}.0` }), 'upstream', 401],
    ['exp in exponent notation (1e10)', signed({ exp: '1e10' }), 'upstream', 401],
    ['exp as a float in the past', signed({ exp: `${now - 300}.5` }), 'local-401', 401],
    ['nbf as a float', signed({ nbf: `${now - 10}.5` }), 'upstream', 401],
    ['iat as a float', signed({ iat: `${now}.5` }), 'upstream', 401],
    ['token naming no key (no x5c, no kid), signed by the trusted key', bearer('{"alg":"RS256","typ":"JWT"}', claims()), 'upstream', 401],
    ['token naming no key, signed by another key', `Bearer ${m.signForeign('{"alg":"RS256","typ":"JWT"}', claims())}`, 'local-401', 401],
    ['jwk header with the trusted key, no x5c', bearer(`{"alg":"RS256","jwk":${JSON.stringify(m.jwk)}}`, claims()), 'upstream', 200],
    ['jwk header with a bogus key next to the trusted kid', bearer(`{"alg":"RS256","kid":"${m.kid}","jwk":{"kty":"RSA","n":"AQAB","e":"AQAB"}}`, claims()), 'local-401', 401],
    // distribution says 200; the proxy used to answer 401.
    ['a token over 8192 characters', signed({ pad: JSON.stringify('x'.repeat(9_000)) }), 'redirect', 200],
    ['an access entry with a class', signed({ access: '[{"type":"repository","class":"image","name":"team/app","actions":["pull"]}]' }), 'redirect', 200],
    ['the claim spelled Access', signed({ access: '', Access: acc }), 'redirect', 200],
    ['the claim spelled ACCESS', signed({ access: '', ACCESS: acc }), 'redirect', 200],
    ['the claim spelled acce\u017fs (U+017F folds to s in Go)', signed({ access: '', 'acce\u017fs': acc }), 'redirect', 200],
    ['access entry fields in capitals', signed({ access: '[{"Type":"repository","NAME":"team/app","Actions":["pull"]}]' }), 'redirect', 200],
    ['iss spelled ISS', signed({ iss: '', ISS: JSON.stringify(m.issuer) }), 'redirect', 200],
    ['header field spelled KID / X5C / Alg', bearer(`{"Alg":"RS256",${m.keyField.replace(/^"(\w+)"/, (_, k: string) => `"${k.toUpperCase()}"`)}}`, claims()), 'redirect', 200],
    ['empty x5c next to the trusted kid', bearer(`{"alg":"RS256","x5c":[],"kid":"${m.kid}"}`, claims()), 'redirect', 200],
    ['exp 2^62 (far future, still int64)', signed({ exp: '4611686018427387904' }), 'redirect', 200],
    ['no nbf', signed({ nbf: '' }), 'redirect', 200],
    // One claim written twice (or in two spellings): Go decodes each in text order, the last wins;
    // JSON.parse would keep the first position and the last value of each exact spelling.
    ['access [] then Access with pull', signed({ access: '[]', Access: acc }), 'redirect', 200],
    ['Access with pull then access []', signed({ access: '', Access: acc, 'access#2': '[]' }), 'local-401', 401],
    ['access with pull, then access [] again', signed({ 'access#2': '[]' }), 'local-401', 401],
    ['exp, then exp null (Go: null leaves the first value)', signed({ 'exp#2': 'null' }), 'redirect', 200],
    ['kid as a number, then the trusted kid (Go: type error)', bearer(`{"alg":"RS256","kid":5,"kid":"${m.kid}"}`, claims()), 'local-401', 401],
    ['a null entry in access (distribution panics)', signed({ access: `[null,${acc.slice(1, -1)}]` }), 'upstream', 'reset'],
    // Go type errors: distribution refuses the token as malformed, and so does the proxy.
    ['exp as a string', signed({ exp: `"${now + 300}"` }), 'local-401', 401],
    ['exp beyond int64', signed({ exp: '99999999999999999999' }), 'local-401', 401],
    ['exp null (Go: 0, expired)', signed({ exp: 'null' }), 'local-401', 401],
    ['iat as a string', signed({ iat: '"x"' }), 'local-401', 401],
    ['sub as a number', signed({ sub: '5' }), 'local-401', 401],
    ['aud null', signed({ aud: 'null' }), 'local-401', 401],
    ['actions as a string', signed({ access: '[{"type":"repository","name":"team/app","actions":"pull"}]' }), 'local-401', 401],
    ['access as an object', signed({ access: '{}' }), 'local-401', 401],
    ['access null', signed({ access: 'null' }), 'local-401', 401],
    ['kid as a number', bearer(`{"alg":"RS256","kid":5,${m.keyField}}`, claims()), 'local-401', 401],
    ['typ as a number', bearer(`{"alg":"RS256","typ":5,${m.keyField}}`, claims()), 'local-401', 401],
    ['two spaces after Bearer', `Bearer  ${m.sign(header, claims())}`, 'local-401', 401],
    // Only RS256 is configured: other asymmetric algorithms are the upstream's call.
    ['RS384 signed by the trusted key', `Bearer ${m.sign(header.replace('RS256', 'RS384'), claims(), 'RS384')}`, 'upstream', 200],
    ['PS256 signed by the trusted key', `Bearer ${m.sign(header.replace('RS256', 'PS256'), claims(), 'PS256')}`, 'upstream', 401],
    ['RS384 signed by another key', `Bearer ${m.signForeign(header.replace('RS256', 'RS384'), claims())}`, 'local-401', 401],
    // Go's x509 treats the rest of x5c as a pool, not an ordered chain.
    ...(m.x5cWithStranger === undefined
      ? []
      : [['x5c: the trusted certificate, then an unrelated one', bearer(`{"alg":"RS256",${m.x5cWithStranger}}`, claims()), 'redirect', 200] satisfies [string, string, Outcome, number]]),
  ];
}

const LOCAL: Record<Outcome, (check: Awaited<ReturnType<ReturnType<typeof createTokenVerifier>['check']>>) => boolean> = {
  redirect: (c) => c.ok,
  upstream: (c) => !c.ok && c.error === 'unusual',
  'local-401': (c) => !c.ok && (c.error === 'invalid_token' || c.error === 'insufficient_scope' || c.error === 'missing'),
};

describe('the verifier reads unusual tokens like distribution 2.8 (unit matrix)', () => {
  const trusted = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const foreign = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = libtrustKeyId(trusted.publicKey);
  const material: Material = {
    issuer: 'unit-issuer',
    service: 'unit-registry',
    keyField: `"kid":"${kid}"`,
    kid,
    jwk: trusted.publicKey.export({ format: 'jwk' }),
    sign: (h, p, alg) => signRawToken(h, p, trusted.privateKey, alg),
    signForeign: (h, p) => signRawToken(h, p, foreign.privateKey),
  };
  const verifier = createTokenVerifier({
    issuer: material.issuer,
    service: material.service,
    realm: 'https://auth.example.test/token',
    publicKeys: [trusted.publicKey.export({ type: 'spki', format: 'pem' }).toString()],
  });

  it.each(cases(material))('%s', async (_name, authorization, outcome) => {
    const check = await verifier.check(authorization, 'team/app');
    expect(LOCAL[outcome](check), JSON.stringify(check)).toBe(true);
  });
});

const has = requireBinary('docker-registry') && requireBinary('openssl');

describe.skipIf(!has)('token mode never grants what distribution 2.8.2 refuses (real auth: token)', () => {
  let world: TokenRegistry;
  let proxy: RunningProxy;
  let digest: string;
  let material: Material;
  let stranger: TokenSigner;
  const foreign = generateKeyPairSync('rsa', { modulusLength: 2048 });

  beforeAll(async () => {
    world = await startTokenRegistry();
    stranger = await makeTokenSigner('stranger');
    digest = await world.push('team/app');
    proxy = await startProxy({ upstream: world.front.url, signer: testSigner(), tokenAuth: world.tokenAuth() });
    const cert = new X509Certificate(world.tokens.signer.certPem);
    const kid = libtrustKeyId(cert.publicKey);
    material = {
      issuer: world.tokens.issuer,
      service: world.tokens.service,
      keyField: `"x5c":${JSON.stringify([cert.raw.toString('base64')])}`,
      kid,
      jwk: { ...cert.publicKey.export({ format: 'jwk' }), kid },
      sign: (h, p, alg) => signRawToken(h, p, world.tokens.signer.keyPem, alg),
      signForeign: (h, p) => signRawToken(h, p, foreign.privateKey),
      x5cWithStranger: `"x5c":${JSON.stringify([cert.raw.toString('base64'), new X509Certificate(stranger.certPem).raw.toString('base64')])}`,
    };
  }, 30_000);

  afterAll(async () => {
    await stranger?.cleanup();
    await proxy?.close();
    await world?.stop();
  }, 15_000);

  async function answer(url: string, authorization: string) {
    try {
      return await request(url, { headers: { authorization }, timeoutMs: 5_000 });
    } catch {
      return 'reset' as const;
    }
  }

  it('each unusual token: distribution answers as recorded, and the proxy agrees with it', async () => {
    const path = `/v2/team/app/blobs/${digest}`;
    const seen: Array<[string, number | 'reset', Outcome]> = [];
    const expected: Array<[string, number | 'reset', Outcome]> = [];
    for (const [name, authorization, outcome, distributionStatus] of cases(material)) {
      expected.push([name, distributionStatus, outcome]);
      const direct = await answer(`${world.registry.url}${path}`, authorization);
      world.front.seen.length = 0;
      const viaProxy = await answer(`${proxy.url}${path}`, authorization);
      const askedUpstream = world.front.seen.some((r) => r.method === 'GET');
      const got: Outcome = viaProxy !== 'reset' && viaProxy.status === 307 ? 'redirect' : askedUpstream ? 'upstream' : 'local-401';
      seen.push([name, direct === 'reset' ? 'reset' : direct.status, got]);

      // The rule itself, whatever the table says: a redirect only where distribution serves.
      if (got === 'redirect') expect(direct === 'reset' ? 'reset' : direct.status, name).toBe(200);
      if (direct === 'reset') {
        expect(viaProxy === 'reset' || viaProxy.status >= 500, name).toBe(true);
        continue;
      }
      expect(viaProxy, name).not.toBe('reset');
      if (viaProxy === 'reset') continue;
      if (direct.status === 200) {
        expect([200, 307], name).toContain(viaProxy.status);
        if (viaProxy.status === 200) expect(viaProxy.body.equals(direct.body), name).toBe(true);
      } else {
        expect(viaProxy.headers.location, name).toBeUndefined();
        expect(answerShape(viaProxy), name).toEqual(answerShape(direct));
      }
    }
    expect(seen).toEqual(expected);
  }, 60_000);
});
