/**
 * Token material for token-mode tests: a CA -> leaf certificate chain made with the openssl CLI,
 * and hand-built JWTs for the forgeries jsonwebtoken refuses to produce (alg none, HS256 keyed
 * with a public key, tampered payloads).
 */
import { execFile } from 'node:child_process';
import { X509Certificate, constants as cryptoConstants, createHmac, createPrivateKey, sign as cryptoSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import jwt from 'jsonwebtoken';
import { findBinary } from '../support/binaries.js';
import type { AccessEntry } from '../support/token-auth.js';

const execFileAsync = promisify(execFile);

/** A CA certificate and a leaf signed by it (EC P-256, so tokens are ES256). */
export interface CertChain {
  caPem: string;
  leafPem: string;
  leafKey: KeyObject;
  /** `x5c` header value: leaf first, then the CA (base64 DER). */
  x5c: string[];
  cleanup(): Promise<void>;
}

/** Creates a CA (basicConstraints CA:TRUE) and a leaf it signed, with the openssl CLI. */
export async function makeCertChain(name = 'rr-test'): Promise<CertChain> {
  const openssl = findBinary('openssl');
  if (openssl === undefined) throw new Error('openssl not installed; apt-get install openssl');
  const dir = await mkdtemp(join(tmpdir(), 'rr-chain-'));
  const run = (args: string[]) => execFileAsync(openssl, args, { cwd: dir, timeout: 10_000, env: { ...process.env, OPENSSL_CONF: '/dev/null' } });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await run(['req', '-x509', '-new', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', `/CN=${name}-ca`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  await run(['req', '-new', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', `/CN=${name}-signer`]);
  await run(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', '7', '-out', 'leaf.pem', '-days', '2']);
  const caPem = await readFile(join(dir, 'ca.pem'), 'utf8');
  const leafPem = await readFile(join(dir, 'leaf.pem'), 'utf8');
  const leafKey = createPrivateKey(await readFile(join(dir, 'leaf.key'), 'utf8'));
  const der = (pem: string) => new X509Certificate(pem).raw.toString('base64');
  return { caPem, leafPem, leafKey, x5c: [der(leafPem), der(caPem)], cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Standard registry claims, valid now for five minutes. */
export function registryClaims(opts: { issuer: string; service: string; access: AccessEntry[]; expiresInSec?: number; notBeforeSec?: number }): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: opts.issuer,
    sub: 'tester',
    aud: opts.service,
    iat: now,
    nbf: now + (opts.notBeforeSec ?? -10),
    exp: now + (opts.expiresInSec ?? 300),
    jti: `jti-${now}-${Math.random()}`,
    access: opts.access,
  };
}

/** Signs `claims` with `key` (RS256/ES256/...), with extra JOSE header fields. */
export function signToken(claims: Record<string, unknown>, key: KeyObject | string, alg: jwt.Algorithm, header: Record<string, unknown> = {}): string {
  return jwt.sign(claims, key, { algorithm: alg, header: { alg, typ: 'JWT', ...header } as jwt.JwtHeader });
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An unsigned token (`alg: none`, empty signature). */
export function unsignedToken(claims: Record<string, unknown>): string {
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
}

/** The algorithm-confusion forgery: HS256 whose HMAC key is the server's public key text. */
export function hs256WithPublicKey(claims: Record<string, unknown>, publicPem: string, header: Record<string, unknown> = {}): string {
  const signingInput = `${b64({ alg: 'HS256', typ: 'JWT', ...header })}.${b64(claims)}`;
  return `${signingInput}.${createHmac('sha256', publicPem).update(signingInput).digest('base64url')}`;
}

/** Replaces the payload of a signed token, keeping header and signature (a tampered token). */
export function withPayload(token: string, claims: Record<string, unknown>): string {
  const [header, , signature] = token.split('.');
  return `${header}.${b64(claims)}.${signature}`;
}

export const pull = (name: string): AccessEntry[] => [{ type: 'repository', name, actions: ['pull'] }];

/**
 * Signs a token whose header and payload are given as raw JSON text (so a test controls what
 * JSON.stringify would normalise: `1.0`, `1e9`, duplicate or case-variant keys). The header's
 * `alg` is not read: `alg` here picks the signature scheme.
 */
export function signRawToken(headerJson: string, payloadJson: string, key: KeyObject | string, alg: 'RS256' | 'RS384' | 'PS256' | 'ES256' = 'RS256'): string {
  const input = `${Buffer.from(headerJson).toString('base64url')}.${Buffer.from(payloadJson).toString('base64url')}`;
  const privateKey = typeof key === 'string' ? createPrivateKey(key) : key;
  const hash = alg === 'RS384' ? 'sha384' : 'sha256';
  const signature = cryptoSign(
    hash,
    Buffer.from(input),
    alg === 'ES256'
      ? { key: privateKey, dsaEncoding: 'ieee-p1363' }
      : alg === 'PS256'
        ? { key: privateKey, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST }
        : privateKey,
  );
  return `${input}.${signature.toString('base64url')}`;
}
