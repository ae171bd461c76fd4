/**
 * A minimal Docker token-auth server for distribution's `auth.token` mode.
 *
 * distribution verifies the JWTs for real: RS256, signed by a key whose
 * certificate is in `rootcertbundle`; the certificate travels in the JWT's
 * `x5c` header. The certificate is created with the `openssl` CLI (node:crypto
 * cannot issue X.509 certificates), the key with node:crypto.
 *
 * Flow: client gets `401 WWW-Authenticate: Bearer realm=...,service=...,scope=...`
 * from the registry, calls `GET realm?service=...&scope=repository:NAME:pull,push`
 * (with Basic credentials if it has any), and retries with `Authorization: Bearer <token>`.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { X509Certificate, generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import jwt from 'jsonwebtoken';
import { findBinary } from './binaries.js';
import { assertLoopback, freePort } from './ports.js';
import type { TokenAuth } from './registry.js';

const execFileAsync = promisify(execFile);

/** One granted (or requested) access entry, as in the token's `access` claim. */
export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

/** An RSA key and self-signed certificate that sign registry tokens. */
export interface TokenSigner {
  /** PEM file with the certificate: pass as `rootCertBundle`. */
  certPath: string;
  certPem: string;
  keyPem: string;
  issuer: string;
  /** Mint an RS256 JWT for `service` carrying `access`. */
  mint(opts: { service: string; access: AccessEntry[]; subject?: string; expiresInSec?: number }): string;
  /** Remove the temp dir holding the certificate. */
  cleanup(): Promise<void>;
}

/**
 * Create an RSA-2048 key and a self-signed certificate (`openssl req -x509`).
 * Requires the `openssl` binary.
 */
export async function makeTokenSigner(issuer = 'registry-redirect-test-issuer'): Promise<TokenSigner> {
  const openssl = findBinary('openssl');
  if (openssl === undefined) throw new Error('openssl not installed; apt-get install openssl');
  const dir = await mkdtemp(join(tmpdir(), 'rr-token-'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  await writeFile(keyPath, keyPem, { mode: 0o600 });
  await execFileAsync(
    openssl,
    ['req', '-x509', '-new', '-key', keyPath, '-out', certPath, '-days', '2', '-subj', `/CN=${issuer}`],
    { timeout: 10_000, env: { ...process.env, OPENSSL_CONF: '/dev/null' } },
  );
  await rm(keyPath, { force: true });
  const certPem = await readFile(certPath, 'utf8');
  const certDerB64 = new X509Certificate(certPem).raw.toString('base64');
  return {
    certPath,
    certPem,
    keyPem,
    issuer,
    mint({ service, access, subject = '', expiresInSec = 300 }) {
      const now = Math.floor(Date.now() / 1000);
      return jwt.sign(
        { iss: issuer, sub: subject, aud: service, iat: now, nbf: now - 10, exp: now + expiresInSec, jti: randomUUID(), access },
        keyPem,
        { algorithm: 'RS256', header: { alg: 'RS256', typ: 'JWT', x5c: [certDerB64] } },
      );
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Parse `repository:team/app:pull,push` (several may be space-separated). */
export function parseScopes(scopes: string[]): AccessEntry[] {
  const out: AccessEntry[] = [];
  for (const s of scopes.flatMap((x) => x.split(' ')).filter((x) => x !== '')) {
    const first = s.indexOf(':');
    const last = s.lastIndexOf(':');
    if (first < 0 || last <= first) continue;
    out.push({
      type: s.slice(0, first),
      name: s.slice(first + 1, last),
      actions: s.slice(last + 1).split(',').filter((a) => a !== ''),
    });
  }
  return out;
}

/** Options for {@link startTokenServer}. */
export interface StartTokenServerOptions {
  host?: string;
  /** `service` expected by the registry (default `registry-redirect-test`). */
  service?: string;
  /** Users allowed everything they ask for (name -> password). */
  users?: Record<string, string>;
  /** Actions granted to anonymous clients (default none). */
  anonymousActions?: string[];
  /**
   * Per-user policy: the actions `user` (undefined = anonymous) may have on the requested
   * resource; only those also asked for are granted. Replaces the default (valid users get
   * everything they ask for, anonymous clients `anonymousActions`).
   */
  grant?: (user: string | undefined, requested: AccessEntry) => string[];
  signer?: TokenSigner;
}

/** A running token server. */
export interface RunningTokenServer {
  /** Realm URL (`http://HOST:PORT/token`). */
  realm: string;
  service: string;
  issuer: string;
  signer: TokenSigner;
  /** Config for `startRegistry({ auth: tokenServer.registryAuth })`. */
  registryAuth: TokenAuth;
  /** Token requests received (GET with Basic, or containerd's POST form), with the user when valid. */
  requests: Array<{ url: string; method: string; user?: string; granted: AccessEntry[] }>;
  stop(): Promise<void>;
}

/**
 * Start a Docker token server on a loopback port. It answers `GET` (Basic
 * credentials, docker/skopeo/podman) and `POST` with an OAuth2 form
 * (`grant_type=password`, `username`, `password`, `scope`: containerd). Valid
 * credentials get every requested action; anonymous clients get
 * `anonymousActions`; invalid credentials get 401.
 */
export async function startTokenServer(opts: StartTokenServerOptions = {}): Promise<RunningTokenServer> {
  const host = opts.host ?? '127.0.0.1';
  assertLoopback(host);
  const service = opts.service ?? 'registry-redirect-test';
  const ownsSigner = opts.signer === undefined;
  const signer = opts.signer ?? (await makeTokenSigner());
  const users = opts.users ?? {};
  const requests: RunningTokenServer['requests'] = [];
  const answer = (req: http.IncomingMessage, res: http.ServerResponse, params: URLSearchParams): void => {
    let user: string | undefined;
    let credentials: { name: string; password: string } | undefined;
    const auth = req.headers.authorization;
    if (auth?.startsWith('Basic ')) {
      const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
      const i = decoded.indexOf(':');
      credentials = i < 0 ? { name: decoded, password: '\u0000' } : { name: decoded.slice(0, i), password: decoded.slice(i + 1) };
    } else if (req.method === 'POST' && params.get('grant_type') === 'password') {
      // containerd's OAuth2 form: grant_type=password&username=..&password=..&scope=..
      credentials = { name: params.get('username') ?? '', password: params.get('password') ?? '\u0000' };
    }
    if (credentials) {
      if (users[credentials.name] === undefined || users[credentials.name] !== credentials.password) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
        return;
      }
      user = credentials.name;
    }
    const asked = parseScopes(params.getAll('scope'));
    const granted = asked.map((a) => {
      const allowed = opts.grant ? opts.grant(user, a) : user !== undefined ? a.actions : (opts.anonymousActions ?? []);
      return { ...a, actions: a.actions.filter((x) => allowed.includes(x)) };
    });
    requests.push({ url: req.url ?? '', method: req.method ?? 'GET', user, granted });
    const token = signer.mint({ service: params.get('service') ?? service, access: granted, subject: user });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }));
  };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://token.invalid');
    if (u.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    if (req.method !== 'POST') {
      answer(req, res, u.searchParams);
      return;
    }
    // POST: an OAuth2 form body (containerd), bounded; its fields join the query's.
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 65_536) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      for (const [k, v] of u.searchParams) if (!form.has(k)) form.append(k, v);
      answer(req, res, form);
    });
  });
  const port = await freePort(host);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => resolve());
  });
  const realm = `http://${host}:${port}/token`;
  return {
    realm,
    service,
    issuer: signer.issuer,
    signer,
    registryAuth: { token: { realm, service, issuer: signer.issuer, rootCertBundle: signer.certPath } },
    requests,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (ownsSigner) await signer.cleanup();
    },
  };
}
