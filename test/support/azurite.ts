/**
 * Real Azure Blob emulator (Azurite) behind a tiny recording reverse proxy.
 *
 * Layout:
 *
 *     client ──► recording front  http://HOST:FRONT/devstoreaccount1   (`endpoint`)
 *                      │  (streams, records method/url/headers)
 *                      ▼
 *                Azurite           http://HOST:PRIVATE/devstoreaccount1 (`directEndpoint`)
 *
 * Tests hand out URLs on the front and assert on `requests` (e.g. that storage
 * never received `Authorization`). Seeding through {@link RunningAzurite.containerClient}
 * goes straight to Azurite, so its Shared Key requests do not pollute `requests`.
 *
 * Azurite verifies SAS signatures for real (wrong key, tampered `sig`, expired -> 403).
 *
 * @module
 */
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  BlobSASPermissions,
  BlobServiceClient,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
} from '@azure/storage-blob';
import type { ContainerClient } from '@azure/storage-blob';
import { supervise } from './child.js';
import { forwardHeaders, request, waitFor } from './http.js';
import { assertLoopback, freePort } from './ports.js';

/** Azurite's well-known development account (public, documented by Microsoft). */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
/** Azurite's well-known development account key (public, documented by Microsoft). */
export const AZURITE_ACCOUNT_KEY =
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

/** One request as seen by the recording front. */
export interface RecordedRequest {
  method: string;
  /** Path and query as received, e.g. `/devstoreaccount1/c/b?sv=...&sig=...`. */
  url: string;
  /** Lower-cased request headers as received. */
  headers: Record<string, string | string[] | undefined>;
  /** Response status, filled in once Azurite answered (undefined if it never did). */
  status?: number;
}

/** Options for {@link startAzurite}. */
export interface StartAzuriteOptions {
  /** Loopback address for both Azurite and the front (default `127.0.0.2`). */
  host?: string;
  /** Startup timeout in ms (default 20 000). */
  startTimeoutMs?: number;
}

/** Options for {@link RunningAzurite.sasUrl}. */
export interface SasOptions {
  /** Permissions string (default `r`). */
  permissions?: string;
  /** Expiry (default now + 10 min). */
  expiresOn?: Date;
  /** Start (default now - 5 min, to tolerate clock skew). */
  startsOn?: Date;
  /** Sign with this key instead of the real one (to produce a wrong signature). */
  accountKey?: string;
}

/** A running Azurite with its recording front. */
export interface RunningAzurite {
  /** Front endpoint: `http://HOST:PORT/devstoreaccount1`. Requests here are recorded. */
  endpoint: string;
  /** Azurite itself (not recorded): `http://HOST:PRIVATE/devstoreaccount1`. */
  directEndpoint: string;
  host: string;
  port: number;
  account: 'devstoreaccount1';
  accountKey: string;
  credential: StorageSharedKeyCredential;
  /** Requests received by the front, in arrival order. Clear with `requests.length = 0`. */
  requests: RecordedRequest[];
  /** Shared Key client talking directly to Azurite (for seeding; not recorded). */
  containerClient(name: string): ContainerClient;
  /** Front URL of a blob (unsigned). Blob names are path-encoded per segment. */
  blobUrl(container: string, blob: string): string;
  /** Front URL of a blob with a service SAS signed by the account key. */
  sasUrl(container: string, blob: string, opts?: SasOptions): string;
  /** Tail of Azurite's console output. */
  logs(): string;
  /** Stop the front and Azurite, remove the data dir. */
  stop(): Promise<void>;
  /**
   * Stop only the Azurite process (SIGTERM, it saves its data): the front keeps its port and
   * answers 502 meanwhile, like a CDN whose origin is down. For outage tests.
   */
  stopEmulator(): Promise<void>;
  /** Start Azurite again on the same port and data dir (blobs seeded before are still there). */
  startEmulator(): Promise<void>;
}

function encodeBlobPath(blob: string): string {
  return blob.split('/').map(encodeURIComponent).join('/');
}

/** Env for Azurite: no custom accounts, so the well-known dev account is the only one. */
function azuriteEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.AZURITE_ACCOUNTS;
  return env;
}

/** Path of Azurite's blob entry point, run with the current Node binary. */
export function azuriteBlobMain(): string {
  const req = createRequire(import.meta.url);
  return join(dirname(req.resolve('azurite/package.json')), 'dist', 'src', 'blob', 'main.js');
}

/**
 * Start the streaming recording proxy on `host:port` forwarding to `target`.
 * The `Host` header is forwarded unchanged so Azurite builds URLs for the front.
 */
async function startFront(
  host: string,
  targetPort: number,
  requests: RecordedRequest[],
): Promise<{ server: http.Server; port: number; agent: http.Agent }> {
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    const rec: RecordedRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: { ...req.headers } };
    requests.push(rec);
    const up = http.request(
      {
        host,
        port: targetPort,
        method: req.method,
        path: req.url,
        headers: forwardHeaders(req.headers),
        agent,
      },
      (upRes) => {
        rec.status = upRes.statusCode;
        const headers = forwardHeaders(upRes.headers);
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, headers);
        upRes.pipe(res);
        upRes.on('error', () => res.destroy());
      },
    );
    up.on('error', (err) => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`azurite front: ${err.message}`);
      } else {
        res.destroy(err);
      }
    });
    req.pipe(up);
    req.on('aborted', () => up.destroy());
  });
  const port = await freePort(host);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => resolve());
  });
  return { server, port, agent };
}

/**
 * Start Azurite (`azurite-blob`, from node_modules, run with this Node) on a
 * private loopback port with a temp `--location`, then the recording front on
 * another port of the same host. Resolves once Azurite answers HTTP.
 */
export async function startAzurite(opts: StartAzuriteOptions = {}): Promise<RunningAzurite> {
  const host = opts.host ?? '127.0.0.2';
  assertLoopback(host);
  const location = await mkdtemp(join(tmpdir(), 'rr-azurite-'));
  const privatePort = await freePort(host);
  const directEndpoint = `http://${host}:${privatePort}/${AZURITE_ACCOUNT}`;
  const launch = async (): Promise<ReturnType<typeof supervise>> => {
    const proc = supervise(
      process.execPath,
      [
        azuriteBlobMain(),
        '--blobHost', host,
        '--blobPort', String(privatePort),
        '--location', location,
        '--skipApiVersionCheck',
        '--loose',
        '--silent',
        '--disableTelemetry',
        // account from the first path segment only, whatever Host the client sends
        '--disableProductStyleUrl',
      ],
      { cwd: location, env: azuriteEnv() },
    );
    let exited: string | undefined;
    void proc.exited.then((code) => {
      exited = `azurite exited (${String(code)})`;
    });
    try {
      await waitFor(
        async () => {
          // Any HTTP answer means it is listening (an unauthenticated GET gets 400/403).
          await request(`${directEndpoint}?comp=properties&restype=service`, { timeoutMs: 1_000 });
          return true;
        },
        {
          timeoutMs: opts.startTimeoutMs ?? 20_000,
          label: `azurite on ${host}:${privatePort}`,
          giveUp: () => exited,
          describe: () => `azurite output:\n${proc.output()}`,
        },
      );
    } catch (err) {
      await proc.stop(500);
      throw err;
    }
    return proc;
  };
  let proc: ReturnType<typeof supervise>;
  try {
    proc = await launch();
  } catch (err) {
    await rm(location, { recursive: true, force: true });
    throw err;
  }

  const requests: RecordedRequest[] = [];
  let front: Awaited<ReturnType<typeof startFront>>;
  try {
    front = await startFront(host, privatePort, requests);
  } catch (err) {
    await proc.stop(500);
    await rm(location, { recursive: true, force: true });
    throw err;
  }
  const endpoint = `http://${host}:${front.port}/${AZURITE_ACCOUNT}`;
  const credential = new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY);
  const service = new BlobServiceClient(directEndpoint, credential);

  const blobUrl = (container: string, blob: string): string =>
    `${endpoint}/${encodeURIComponent(container)}/${encodeBlobPath(blob)}`;

  return {
    endpoint,
    directEndpoint,
    host,
    port: front.port,
    account: AZURITE_ACCOUNT,
    accountKey: AZURITE_ACCOUNT_KEY,
    credential,
    requests,
    containerClient: (name) => service.getContainerClient(name),
    blobUrl,
    sasUrl(container, blob, o = {}) {
      const cred =
        o.accountKey === undefined ? credential : new StorageSharedKeyCredential(AZURITE_ACCOUNT, o.accountKey);
      const now = Date.now();
      const qp = generateBlobSASQueryParameters(
        {
          containerName: container,
          blobName: blob,
          permissions: BlobSASPermissions.parse(o.permissions ?? 'r'),
          startsOn: o.startsOn ?? new Date(now - 5 * 60_000),
          expiresOn: o.expiresOn ?? new Date(now + 10 * 60_000),
        },
        cred,
      );
      return `${blobUrl(container, blob)}?${qp.toString()}`;
    },
    logs: () => proc.output(),
    async stop() {
      front.server.closeAllConnections();
      await new Promise<void>((resolve) => front.server.close(() => resolve()));
      front.agent.destroy();
      await proc.stop();
      await rm(location, { recursive: true, force: true });
    },
    async stopEmulator() {
      await proc.stop();
    },
    async startEmulator() {
      proc = await launch();
    },
  };
}
