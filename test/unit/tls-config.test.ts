import { chmodSync, copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registryRedirect } from '../../src/index.js';
import { buildConfig } from '../../src/server/config.js';
import { upstreamAgentOptions, upstreamFailureDetail } from '../../src/upstream-tls.js';
import { RegistryRedirectError } from '../../src/errors.js';
import { AZURITE_KEY } from '../helpers/constants.js';
import { testSigner } from '../helpers/token-registry.js';
import { requireBinary } from '../support/binaries.js';
import { makeTestCa, type IssuedCert, type TestCa } from '../support/tls.js';

const base = (extra: Record<string, unknown>) => ({
  upstream: 'https://registry.example.com',
  signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry' } },
  ...extra,
});

const message = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RegistryRedirectError);
    return (err as Error).message;
  }
  throw new Error('did not throw');
};

describe.skipIf(!requireBinary('openssl'))('tls: and upstreamTLS: fail at start, naming the key and the fix', () => {
  let ca: TestCa;
  let a: IssuedCert;
  let b: IssuedCert;
  beforeAll(() => {
    ca = makeTestCa();
    a = ca.issue('a');
    b = ca.issue('b');
  });
  afterAll(() => ca?.remove());

  it('a valid pair (and clientCA) loads', () => {
    const config = buildConfig(base({ tls: { certificate: a.cert, key: a.key, clientCA: ca.cert, minVersion: 'TLSv1.3' } }));
    expect(config.tls).toEqual({ certificate: a.cert, key: a.key, clientCA: ca.cert, minVersion: 'TLSv1.3' });
    expect(buildConfig(base({ tls: { certificate: a.cert, key: a.key } })).tls?.minVersion).toBe('TLSv1.2');
  });

  it('an unreadable file names the key and the path', () => {
    expect(message(() => buildConfig(base({ tls: { certificate: join(ca.dir, 'missing.crt'), key: a.key } })))).toMatch(/^tls\.certificate: cannot read .*missing\.crt: ENOENT/);
    const locked = join(ca.dir, 'locked.key');
    copyFileSync(a.key, locked);
    chmodSync(locked, 0o000);
    if (process.getuid?.() !== 0) expect(message(() => buildConfig(base({ tls: { certificate: a.cert, key: locked } })))).toMatch(/^tls\.key: cannot read .*EACCES/);
  });

  it('PEM that does not parse, and a key that does not match the certificate', () => {
    const junk = join(ca.dir, 'junk.pem');
    writeFileSync(junk, 'hello\n');
    expect(message(() => buildConfig(base({ tls: { certificate: junk, key: a.key } })))).toMatch(/^tls\.certificate: .*junk\.pem holds no PEM certificate/);
    expect(message(() => buildConfig(base({ tls: { certificate: a.cert, key: junk } })))).toMatch(/^tls\.key: .*junk\.pem is not a PEM private key/);
    const broken = join(ca.dir, 'broken.crt');
    writeFileSync(broken, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expect(message(() => buildConfig(base({ tls: { certificate: broken, key: a.key } })))).toMatch(/^tls\.certificate: certificate 1 in .* does not parse/);
    expect(message(() => buildConfig(base({ tls: { certificate: a.cert, key: b.key } })))).toMatch(/^tls\.key: .*b\.key does not match tls\.certificate .*a\.crt .*write the key the certificate was issued for/);
    expect(message(() => buildConfig(base({ tls: { certificate: a.cert, key: a.key, clientCA: junk } })))).toMatch(/^tls\.clientCA: /);
  });

  it('unknown keys, missing key, bad minVersion', () => {
    expect(message(() => buildConfig(base({ tls: { certificate: a.cert, key: a.key, cert: a.cert } })))).toMatch(/^tls\.cert: unknown key/);
    expect(message(() => buildConfig(base({ tls: { certificate: a.cert } })))).toMatch(/^tls\.key: write the path/);
    expect(message(() => buildConfig(base({ tls: { certificate: a.cert, key: a.key, minVersion: 'TLSv1' } })))).toMatch(/^tls\.minVersion: write TLSv1\.2 or TLSv1\.3/);
  });

  it('upstreamTLS: files read into agent options; http upstream, half a client pair, mismatch and junk are refused', () => {
    const config = buildConfig(base({ upstreamTLS: { ca: ca.cert, certificate: a.cert, key: a.key } }));
    expect(config.upstreamTLS?.ca?.toString()).toContain('BEGIN CERTIFICATE');
    expect(config.upstreamTLS?.cert).toBeInstanceOf(Buffer);
    expect(buildConfig(base({ upstreamTLS: { insecureSkipVerify: true } })).upstreamTLS).toEqual({ rejectUnauthorized: false });
    expect(message(() => buildConfig(base({ upstream: 'http://127.0.0.1:5000', upstreamTLS: { ca: ca.cert } })))).toMatch(/^upstreamTLS: upstream http:\/\/127\.0\.0\.1:5000 is plain http/);
    expect(message(() => buildConfig(base({ upstreamTLS: { certificate: a.cert } })))).toMatch(/^upstreamTLS\.key: missing/);
    expect(message(() => buildConfig(base({ upstreamTLS: { certificate: a.cert, key: b.key } })))).toMatch(/^upstreamTLS\.key: .* does not match upstreamTLS\.certificate/);
    expect(message(() => buildConfig(base({ upstreamTLS: { ca: a.key } })))).toMatch(/^upstreamTLS\.ca: .* holds no PEM certificate/);
    expect(message(() => buildConfig(base({ upstreamTLS: { caFile: ca.cert } })))).toMatch(/^upstreamTLS\.caFile: unknown key/);
  });
});

describe('upstreamTLS in the library', () => {
  it('agent options: only TLS keys copied; verification only off when explicitly false', () => {
    expect(upstreamAgentOptions(undefined)).toEqual({});
    expect(upstreamAgentOptions({ ca: 'PEM' })).toEqual({ ca: 'PEM', rejectUnauthorized: true });
    expect(upstreamAgentOptions({ rejectUnauthorized: false }).rejectUnauthorized).toBe(false);
  });

  it('is refused for an http upstream, in embedded mode, with unknown keys', () => {
    const signer = testSigner();
    expect(message(() => registryRedirect({ upstream: 'http://127.0.0.1:5000', signer, upstreamTLS: { ca: 'x' } }))).toMatch(/plain http/);
    expect(message(() => registryRedirect({ authorize: () => undefined, signer, upstreamTLS: { ca: 'x' } }))).toMatch(/needs `upstream`/);
    expect(message(() => registryRedirect({ upstream: 'https://r.example', signer, upstreamTLS: { caFile: 'x' } as never }))).toMatch(/unknown upstreamTLS\.caFile/);
  });

  it('502 detail: TLS codes get the message and a hint; others only the code', () => {
    const tlsErr = Object.assign(new Error('unable to verify the first certificate'), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
    expect(upstreamFailureDetail(new RegistryRedirectError('UPSTREAM_UNREACHABLE', 'x', { cause: tlsErr }))).toEqual({
      reason: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      tls: 'unable to verify the first certificate',
      hint: expect.stringContaining('upstreamTLS.ca'),
    });
    expect(upstreamFailureDetail(Object.assign(new Error('altname'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' })).hint).toMatch(/does not name the host/);
    expect(upstreamFailureDetail(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))).toEqual({ reason: 'ECONNREFUSED' });
    expect(upstreamFailureDetail(new Error('no code'))).toEqual({ reason: 'error' });
  });
});
