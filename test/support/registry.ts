/**
 * Start a real upstream registry: distribution 2.8 (`/usr/bin/docker-registry`,
 * Debian package `docker-registry`) with filesystem storage in a temp dir.
 *
 * Traps handled here:
 * - The s3-aws driver compiled into the binary panics at start when
 *   `AWS_CA_BUNDLE` is set in the environment, so it is removed from the child env.
 * - htpasswd entries must be bcrypt; we generate them with bcryptjs.
 * - `storage.redirect.disable: true` so the registry serves blobs itself (the
 *   project under test is what adds redirects).
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { stringify } from 'yaml';
import { findBinary } from './binaries.js';
import { supervise } from './child.js';
import type { Supervised } from './child.js';
import { request, waitFor } from './http.js';
import { assertLoopback, freePort } from './ports.js';

/** Basic auth against an htpasswd file generated from `users` (name -> password). */
export interface HtpasswdAuth {
  htpasswd: { users: Record<string, string> };
}

/** Docker token auth: distribution verifies JWTs signed by a cert in `rootCertBundle`. */
export interface TokenAuth {
  token: {
    /** URL of the token server (`WWW-Authenticate: Bearer realm=...`). */
    realm: string;
    service: string;
    issuer: string;
    /** Path to a PEM file with the certificate(s) whose keys sign the tokens. */
    rootCertBundle: string;
  };
}

/** Options for {@link startRegistry}. */
export interface StartRegistryOptions {
  /** Loopback address to bind (default `127.0.0.1`). */
  host?: string;
  /** No auth when omitted. */
  auth?: HtpasswdAuth | TokenAuth;
  /**
   * Filesystem `rootdirectory` to use. When omitted a temp dir is created (and
   * removed by `stop()`); a caller-supplied directory is left in place.
   */
  rootDirectory?: string;
  /** Startup timeout in ms (default 15 000). */
  startTimeoutMs?: number;
  /**
   * Serve HTTPS (`http.tls`): PEM files of the certificate (with its SANs for the host) and key,
   * and optionally `clientCAs` (`http.tls.clientcas`: mTLS). The URL is then `https://`.
   */
  tls?: {
    certificate: string;
    key: string;
    clientCAs?: string[];
    /** With `clientCAs`: a client certificate (PEM file paths) for the start-up check. */
    probeClient?: { cert: string; key: string };
  };
}

/** A running registry. */
export interface RunningRegistry {
  /** `http://HOST:PORT` (`https://` with `tls`; no trailing slash). */
  url: string;
  host: string;
  port: number;
  /** `HOST:PORT`, as used in `docker://HOST:PORT/repo:tag` references. */
  hostPort: string;
  /** The filesystem storage rootdirectory; blobs are under `docker/registry/v2/blobs/`. */
  storageRoot: string;
  /** Path of the generated config.yml (for debugging). */
  configPath: string;
  /** Tail of the registry's stdout/stderr. */
  logs(): string;
  /** Kill the registry and remove the temp dirs this helper created. */
  stop(): Promise<void>;
}

/** Generate htpasswd content with bcrypt hashes (cost 5 keeps tests fast). */
export function htpasswdFile(users: Record<string, string>, cost = 5): string {
  return Object.entries(users)
    .map(([user, pass]) => `${user}:${bcrypt.hashSync(pass, cost)}\n`)
    .join('');
}

/** Build the distribution config object (exported for tests of the config itself). */
export function registryConfig(opts: {
  addr: string;
  rootDirectory: string;
  htpasswdPath?: string;
  token?: TokenAuth['token'];
  tls?: StartRegistryOptions['tls'];
}): Record<string, unknown> {
  const cfg: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'warn', formatter: 'text', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: opts.rootDirectory },
      delete: { enabled: true },
      redirect: { disable: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: {
      addr: opts.addr,
      secret: randomBytes(16).toString('hex'),
      headers: { 'X-Content-Type-Options': ['nosniff'] },
      ...(opts.tls && {
        tls: { certificate: opts.tls.certificate, key: opts.tls.key, ...(opts.tls.clientCAs && { clientcas: opts.tls.clientCAs }) },
      }),
    },
  };
  if (opts.htpasswdPath !== undefined) {
    cfg.auth = { htpasswd: { realm: 'registry-redirect-test', path: opts.htpasswdPath } };
  } else if (opts.token !== undefined) {
    cfg.auth = {
      token: {
        realm: opts.token.realm,
        service: opts.token.service,
        issuer: opts.token.issuer,
        rootcertbundle: opts.token.rootCertBundle,
      },
    };
  }
  return cfg;
}

/** Environment for the registry: the caller's env minus variables that break it. */
function registryEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // distribution's s3-aws driver panics at init when AWS_CA_BUNDLE is set.
  delete env.AWS_CA_BUNDLE;
  // Never let the registry reach out through a developer's proxy.
  for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) delete env[k];
  return env;
}

/**
 * Start distribution on a free loopback port and wait until `GET /v2/` answers
 * (200 without auth, 401 with auth). On failure the error includes the
 * registry's output. Retries on a lost port race.
 */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RunningRegistry> {
  const host = opts.host ?? '127.0.0.1';
  assertLoopback(host);
  const bin = findBinary('docker-registry') ?? '/usr/bin/docker-registry';
  const workDir = await mkdtemp(join(tmpdir(), 'rr-registry-'));
  const ownsRoot = opts.rootDirectory === undefined;
  const storageRoot = opts.rootDirectory ?? join(workDir, 'storage');

  let htpasswdPath: string | undefined;
  let token: TokenAuth['token'] | undefined;
  if (opts.auth && 'htpasswd' in opts.auth) {
    htpasswdPath = join(workDir, 'htpasswd');
    await writeFile(htpasswdPath, htpasswdFile(opts.auth.htpasswd.users), { mode: 0o600 });
  } else if (opts.auth && 'token' in opts.auth) {
    token = opts.auth.token;
  }

  const cleanup = async (): Promise<void> => {
    await rm(workDir, { recursive: true, force: true });
  };

  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort(host);
    const hostPort = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    const configPath = join(workDir, 'config.yml');
    await writeFile(
      configPath,
      stringify(registryConfig({ addr: hostPort, rootDirectory: storageRoot, htpasswdPath, token, tls: opts.tls })),
    );
    const proc: Supervised = supervise(bin, ['serve', configPath], { env: registryEnv(), cwd: workDir });
    let exitedEarly: string | undefined;
    void proc.exited.then((code) => {
      exitedEarly = `registry exited (${String(code)})`;
    });
    const url = `${opts.tls ? 'https' : 'http'}://${hostPort}`;
    try {
      await waitFor(
        async () => {
          // Only "is it up": the tests themselves decide what to trust.
          const client = opts.tls?.probeClient;
          const res = await request(`${url}/v2/`, {
            timeoutMs: 1_000,
            tls: { rejectUnauthorized: false, ...(client && { cert: readFileSync(client.cert), key: readFileSync(client.key) }) },
          });
          return res.status === 200 || res.status === 401;
        },
        {
          timeoutMs: opts.startTimeoutMs ?? 15_000,
          label: `docker-registry on ${url}`,
          giveUp: () => exitedEarly,
        },
      );
    } catch (err) {
      await proc.stop(500);
      lastError = new Error(
        `${err instanceof Error ? err.message : String(err)}\nregistry output:\n${proc.output()}`,
      );
      if (/address already in use/i.test(proc.output())) continue;
      await cleanup();
      throw lastError;
    }
    return {
      url,
      host,
      port,
      hostPort,
      storageRoot,
      configPath,
      logs: () => proc.output(),
      async stop(): Promise<void> {
        await proc.stop();
        if (ownsRoot) await rm(storageRoot, { recursive: true, force: true });
        await cleanup();
      },
    };
  }
  await cleanup();
  throw lastError instanceof Error ? lastError : new Error('startRegistry failed');
}
