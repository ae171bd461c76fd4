import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import type http from 'node:http';
import type http2 from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname } from 'node:path';
import type { TLSSocket } from 'node:tls';
import type tls from 'node:tls';
import { RegistryRedirectError } from '../errors.js';
import { zod } from '../lazy.js';
import { errorForLog } from '../log.js';
import type { Logger, UpstreamTlsOptions } from '../types.js';
import { createServer } from './node-http.js';
import { parseConfigPart } from './validate.js';

// node:http2 and node:tls are taken with process.getBuiltinModule where they are used: a
// plain-HTTP server never loads them (node:http: see node-http.ts).

// The same zod instance as the signers' and rollout schemas (lazy.ts): a static import would load
// zod's ESM build next to the CommonJS one that `require` gets, twice the start-up cost.
const { z } = zod();

const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
const path = (what: string, example: string) => z.string({ error: `write the path of ${what}, e.g. "${example}"` });

const tlsBlock = z
  .object({
    certificate: path('the PEM certificate (chain) to serve', '/etc/registry-redirect/tls.crt'),
    key: path('the PEM private key of the certificate', '/etc/registry-redirect/tls.key'),
    clientCA: path('a PEM bundle of CAs that sign client certificates (mTLS)', '/etc/registry-redirect/client-ca.pem').optional(),
    minVersion: z.enum(TLS_VERSIONS, { error: `write ${TLS_VERSIONS.join(' or ')}` }).optional(),
  })
  .strict();

const upstreamTlsBlock = z
  .object({
    ca: path('a PEM bundle of CAs that sign the upstream\'s certificate', '/etc/registry-redirect/upstream-ca.pem').optional(),
    certificate: path('a PEM client certificate for mTLS to the upstream', '/etc/registry-redirect/upstream-client.crt').optional(),
    key: path('the PEM private key of upstreamTLS.certificate', '/etc/registry-redirect/upstream-client.key').optional(),
    insecureSkipVerify: z
      .boolean({ error: 'write false (default: verify the upstream\'s certificate) or true (accept any certificate: logged as a warning)' })
      .optional(),
  })
  .strict();

/** `tls:` of the config: serve HTTPS (HTTP/2 via ALPN, HTTP/1.1 fallback). Paths; contents are read by {@link loadTlsMaterial}. */
export interface TlsServerConfig {
  certificate: string;
  key: string;
  clientCA?: string | undefined;
  minVersion: (typeof TLS_VERSIONS)[number];
}

/** What one read of the `tls:` files gave, checked: a certificate with its key, the client CAs. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | undefined;
  /** The leaf's subject, SANs and expiry, for the log. */
  summary: { subject: string; subjectAltName: string | undefined; validTo: string; fingerprint256: string };
}

function readFile(file: string, key: string): Buffer {
  try {
    return readFileSync(file);
  } catch (cause) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: cannot read ${file}: ${(cause as Error).message}; check the path and that this user may read it`, { cause });
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate of a PEM bundle, parsed; throws naming `key` when there is none or one is broken. */
function parseCertificates(pem: Buffer, file: string, key: string): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERT) ?? [];
  if (blocks.length === 0) {
    throw new RegistryRedirectError('CONFIG_INVALID', `${key}: ${file} holds no PEM certificate; write the path of a file with "-----BEGIN CERTIFICATE-----" blocks`);
  }
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (cause) {
      throw new RegistryRedirectError('CONFIG_INVALID', `${key}: certificate ${i + 1} in ${file} does not parse (${(cause as Error).message}); write a PEM certificate`, { cause });
    }
  });
}

function parsePrivateKey(pem: Buffer, file: string, key: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (cause) {
    const message = (cause as Error).message;
    const encrypted = /passphrase|encrypted/i.test(message) || pem.includes('ENCRYPTED');
    throw new RegistryRedirectError(
      'CONFIG_INVALID',
      encrypted
        ? `${key}: ${file} is an encrypted private key; write an unencrypted PEM key (e.g. openssl pkey -in ${basename(file)} -out tls.key)`
        : `${key}: ${file} is not a PEM private key (${message}); write the path of a file with "-----BEGIN PRIVATE KEY-----"`,
      { cause },
    );
  }
}

/**
 * Reads a certificate and its key, and checks that they belong together: a key for another
 * certificate (the usual mistake of a half-finished rotation) fails here, naming both keys.
 */
function certificateAndKey(certFile: string, keyFile: string, certKey: string, keyKey: string): { cert: Buffer; key: Buffer; leaf: X509Certificate } {
  const cert = readFile(certFile, certKey);
  const key = readFile(keyFile, keyKey);
  const leaf = parseCertificates(cert, certFile, certKey)[0]!;
  const privateKey = parsePrivateKey(key, keyFile, keyKey);
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new RegistryRedirectError(
      'CONFIG_INVALID',
      `${keyKey}: ${keyFile} does not match ${certKey} ${certFile} (subject ${leaf.subject.replace(/\n/g, ', ')}); write the key the certificate was issued for (the first certificate of the file is the server's)`,
    );
  }
  return { cert, key, leaf };
}

/** Reads and checks the `tls:` files (at start, and on every reload of them). Throws CONFIG_INVALID naming the key. */
export function loadTlsMaterial(config: TlsServerConfig): TlsMaterial {
  const { cert, key, leaf } = certificateAndKey(config.certificate, config.key, 'tls.certificate', 'tls.key');
  let ca: Buffer | undefined;
  if (config.clientCA !== undefined) {
    ca = readFile(config.clientCA, 'tls.clientCA');
    parseCertificates(ca, config.clientCA, 'tls.clientCA');
  }
  try {
    process.getBuiltinModule('node:tls').createSecureContext({ cert, key, ca, minVersion: config.minVersion });
  } catch (cause) {
    throw new RegistryRedirectError('CONFIG_INVALID', `tls: OpenSSL refuses ${config.certificate} with ${config.key}: ${(cause as Error).message}`, { cause });
  }
  return {
    cert,
    key,
    ca,
    summary: { subject: leaf.subject.replace(/\n/g, ', '), subjectAltName: leaf.subjectAltName, validTo: leaf.validTo, fingerprint256: leaf.fingerprint256 },
  };
}

/** Validates `tls:` and reads its files once, so a bad certificate stops `serve` before it listens. */
export function tlsFromConfig(raw: unknown): TlsServerConfig | undefined {
  if (raw === undefined) return undefined;
  const block = parseConfigPart(tlsBlock, raw, 'tls');
  const config: TlsServerConfig = { certificate: block.certificate, key: block.key, clientCA: block.clientCA, minVersion: block.minVersion ?? 'TLSv1.2' };
  loadTlsMaterial(config);
  return config;
}

/**
 * Validates `upstreamTLS:` and reads its files into agent options. Read again on every config
 * reload, so a rotated upstream CA is picked up by SIGHUP.
 */
export function upstreamTlsFromConfig(raw: unknown, upstream: URL): UpstreamTlsOptions | undefined {
  if (raw === undefined) return undefined;
  const block = parseConfigPart(upstreamTlsBlock, raw, 'upstreamTLS');
  if (upstream.protocol !== 'https:') {
    throw new RegistryRedirectError('CONFIG_INVALID', `upstreamTLS: upstream ${upstream.origin} is plain http, so there is no TLS to configure; write an https:// upstream or remove upstreamTLS`);
  }
  if ((block.certificate === undefined) !== (block.key === undefined)) {
    throw new RegistryRedirectError('CONFIG_INVALID', `upstreamTLS.${block.certificate === undefined ? 'certificate' : 'key'}: missing; a client certificate for the upstream needs both certificate and key`);
  }
  const out: UpstreamTlsOptions = {};
  if (block.ca !== undefined) {
    out.ca = readFile(block.ca, 'upstreamTLS.ca');
    parseCertificates(out.ca, block.ca, 'upstreamTLS.ca');
  }
  if (block.certificate !== undefined && block.key !== undefined) {
    const pair = certificateAndKey(block.certificate, block.key, 'upstreamTLS.certificate', 'upstreamTLS.key');
    out.cert = pair.cert;
    out.key = pair.key;
  }
  if (block.insecureSkipVerify === true) out.rejectUnauthorized = false;
  return out;
}

/** The connections of a TLS listener, for a graceful stop: HTTP/2 sessions and every socket. */
export interface TlsConnections {
  /** GOAWAY to every HTTP/2 session (in-flight streams finish), idle HTTP/1.1 connections closed. */
  closeIdle(): void;
  /** Destroys whatever is still open. */
  closeAll(): void;
}

/** HTTP/1.1 settings that the HTTP/1.1 fallback of the listener needs as on a plain `http.Server`. */
export interface Http1Settings {
  headersTimeout: number;
  requestTimeout: number;
  keepAliveTimeout: number;
  connectionsCheckingInterval: number;
}

/**
 * The HTTPS listener: HTTP/2 by ALPN (`h2`), HTTP/1.1 for clients that do not offer it (skopeo,
 * podman and containerd negotiate h2; curl and old clients may not). `clientCA` turns on mTLS
 * the way distribution's `http.tls.clientcas` does: a client without a certificate from one of
 * those CAs fails the handshake.
 *
 * HTTP/2 sessions that carry no stream for `idleMs` are closed (GOAWAY), the counterpart of
 * `headersTimeout` for HTTP/1.1: an idle session otherwise holds a socket forever.
 */
export function createTlsServer(
  config: TlsServerConfig,
  material: TlsMaterial,
  http1: http.ServerOptions & Http1Settings,
  idleMs: number,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): { server: http2.Http2SecureServer; connections: TlsConnections } {
  const server = process.getBuiltinModule('node:http2').createSecureServer(
    {
      allowHTTP1: true,
      cert: material.cert,
      key: material.key,
      ca: material.ca,
      requestCert: material.ca !== undefined,
      rejectUnauthorized: material.ca !== undefined,
      minVersion: config.minVersion,
    },
    // The compatibility API gives HTTP/2 requests the shape of node:http's: the middleware, the
    // pass-through (it maps `:authority` to `Host` and drops pseudo-headers and connection-specific
    // headers) and the access log serve both protocols.
    handler as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  // Read by the HTTP/1.1 fallback exactly as on http.Server (set before listen: connection
  // tracking for headersTimeout starts on 'listening').
  Object.assign(server, http1);

  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<TLSSocket>();
  server.on('secureConnection', (socket: TLSSocket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('session', (session) => {
    sessions.add(session);
    let streams = 0;
    session.on('stream', (stream) => {
      streams++;
      stream.once('close', () => streams--);
    });
    session.setTimeout(idleMs, () => {
      if (streams === 0 && !session.closed) session.close();
    });
    session.once('close', () => sessions.delete(session));
  });
  // A client's protocol error ends its own session; it is not the server's error.
  server.on('sessionError', () => undefined);

  return {
    server,
    connections: {
      closeIdle() {
        for (const s of sessions) if (!s.closed) s.close();
        // The HTTP/1.1 fallback tracks its connections like http.Server (typed only there).
        (server as unknown as { closeIdleConnections(): void }).closeIdleConnections();
      },
      closeAll() {
        for (const s of sessions) s.destroy();
        for (const socket of sockets) socket.destroy();
      },
    },
  };
}

function sameBuffer(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}

/** The main listener of `serve`, and how to stop its connections. */
export interface Listener {
  readonly server: http.Server | http2.Http2SecureServer;
  readonly connections: TlsConnections;
  /** With `tls:`: the secure server and the certificate it started with (for {@link createTlsReloader}). */
  readonly tls?: { readonly server: http2.Http2SecureServer; readonly material: TlsMaterial } | undefined;
}

/**
 * `http.createServer(options, handler)` without `tls:`; with it, {@link createTlsServer} with the
 * same HTTP/1.1 settings for its fallback and `headersTimeout` as the HTTP/2 idle bound. The
 * HTTP/1.1 fallback reads `options` as properties of the server, so only options that http.Server
 * also exposes as properties (the timeouts, `maxHeadersCount`, ...) carry over to it.
 */
export function createListener(
  tlsConfig: TlsServerConfig | undefined,
  options: http.ServerOptions & Http1Settings,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Listener {
  if (!tlsConfig) {
    const server = createServer(options, handler);
    return { server, connections: { closeIdle: () => server.closeIdleConnections(), closeAll: () => server.closeAllConnections() } };
  }
  const material = loadTlsMaterial(tlsConfig);
  const { server, connections } = createTlsServer(tlsConfig, material, options, options.headersTimeout, handler);
  return { server, connections, tls: { server, material } };
}

/** What a TLS reload did. */
export type TlsReloadResult = { ok: true; changed: boolean; certificate: TlsMaterial['summary'] } | { ok: false; error: string };

/** Re-reads the certificate files on demand (SIGHUP) and when they change. */
export interface TlsReloader {
  reload(trigger: string): TlsReloadResult;
  close(): void;
}

/**
 * Certificate rotation without a restart: the files are read and checked (readable, PEM, key
 * matching the certificate, OpenSSL accepting the pair) and only then handed to
 * `server.setSecureContext`. New handshakes get the new certificate; open connections keep
 * theirs and are never dropped. A bad pair is logged and the old certificate keeps serving.
 *
 * The watch is on the files' directories, not the files: cert-manager and kubelet update a
 * mounted Secret by swapping a `..data` symlink, which a watch on the old inode never sees.
 * Editors and `cp` write a file in several steps, so events are debounced, and a key written a
 * moment after its certificate fails once (logged) and succeeds on the next event.
 */
export function createTlsReloader(opts: {
  server: tls.Server | http2.Http2SecureServer;
  config: TlsServerConfig;
  initial: TlsMaterial;
  logger: Logger;
  watch: boolean;
  debounceMs?: number;
}): TlsReloader {
  const { server, config, logger } = opts;
  let current = opts.initial;

  const reload = (trigger: string): TlsReloadResult => {
    let next: TlsMaterial;
    try {
      next = loadTlsMaterial(config);
      server.setSecureContext({ cert: next.cert, key: next.key, ca: next.ca, minVersion: config.minVersion });
    } catch (err) {
      const error = errorForLog(err).message;
      logger.error({ trigger, error, serving: current.summary }, 'TLS certificate reload rejected: the previous certificate keeps serving');
      return { ok: false, error };
    }
    const changed = !next.cert.equals(current.cert) || !next.key.equals(current.key) || !sameBuffer(next.ca, current.ca);
    current = next;
    if (changed) logger.info({ trigger, certificate: next.summary }, 'TLS certificate reloaded');
    return { ok: true, changed, certificate: next.summary };
  };

  const watchers: FSWatcher[] = [];
  let timer: NodeJS.Timeout | undefined;
  if (opts.watch) {
    const files = [config.certificate, config.key, ...(config.clientCA === undefined ? [] : [config.clientCA])];
    const byDir = new Map<string, Set<string>>();
    for (const f of files) {
      const names = byDir.get(dirname(f)) ?? new Set<string>();
      names.add(basename(f));
      byDir.set(dirname(f), names);
    }
    for (const [dir, names] of byDir) {
      try {
        const w = watch(dir, { persistent: false }, (_event, file) => {
          if (file !== null && !names.has(String(file)) && !String(file).startsWith('..')) return;
          clearTimeout(timer);
          timer = setTimeout(() => void reload('certificate file changed'), opts.debounceMs ?? 200);
          timer.unref();
        });
        w.on('error', (err) => logger.warn({ error: errorForLog(err), dir }, 'TLS certificate watch failed; SIGHUP still reloads'));
        watchers.push(w);
      } catch (err) {
        logger.warn({ error: errorForLog(err), dir }, 'cannot watch the TLS certificate directory; SIGHUP still reloads');
      }
    }
  }

  return {
    reload,
    close() {
      clearTimeout(timer);
      for (const w of watchers) w.close();
    },
  };
}
