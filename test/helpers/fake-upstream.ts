import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A request the fake upstream received. */
export interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  bodyBytes: number;
  bodySha256: string;
}

export interface FakeUpstream {
  url: string;
  seen: Seen[];
  /** Blobs per repository: repository -> digest -> bytes. */
  blobs: Map<string, Map<string, Buffer>>;
  /** Override the handler for one path prefix (method + path startsWith). */
  override(fn: ((req: http.IncomingMessage, res: http.ServerResponse) => boolean) | undefined): void;
  close(): Promise<void>;
}

export const USER = 'alice';
export const PASS = 's3cret';
export const BASIC = `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`;

export function digestOf(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/**
 * A small registry-shaped upstream for integration tests: Basic auth, per-repository blob
 * membership, a streamed upload echo, and a recorder of everything it receives. The real
 * distribution registry is used by the e2e suites; this one lets a test shape rare answers.
 */
export async function startFakeUpstream(): Promise<FakeUpstream> {
  const seen: Seen[] = [];
  const blobs = new Map<string, Map<string, Buffer>>();
  let override: ((req: http.IncomingMessage, res: http.ServerResponse) => boolean) | undefined;

  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let bodyBytes = 0;
    req.on('data', (c: Buffer) => {
      bodyBytes += c.length;
      hash.update(c);
    });
    req.on('end', () => {
      const entry: Seen = { method: req.method!, url: req.url!, headers: req.headers, bodyBytes, bodySha256: hash.digest('hex') };
      seen.push(entry);
      if (override?.(req, res)) return;
      handle(req, res, entry);
    });
  });

  function handle(req: http.IncomingMessage, res: http.ServerResponse, entry: Seen): void {
    const url = req.url!;
    if (req.headers.authorization !== BASIC) {
      const body = JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }] });
      res.writeHead(401, {
        'WWW-Authenticate': 'Basic realm="fake-registry"',
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
        'Docker-Distribution-API-Version': 'registry/2.0',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const blob = /^\/v2\/(.+)\/blobs\/(sha\d+:[a-f0-9]+)$/.exec(url);
    if (blob && (req.method === 'GET' || req.method === 'HEAD')) {
      const data = blobs.get(blob[1]!)?.get(blob[2]!);
      if (!data) {
        const body = JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry', detail: blob[2] }] });
        res.writeHead(404, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      const range = req.headers.range;
      if (range) {
        res.writeHead(206, { 'Content-Range': `bytes 0-0/${data.length}`, 'Content-Length': 1, 'Docker-Content-Digest': blob[2] });
        res.end(req.method === 'HEAD' ? undefined : data.subarray(0, 1));
        return;
      }
      res.writeHead(200, { 'Content-Length': data.length, 'Docker-Content-Digest': blob[2], 'Content-Type': 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : data);
      return;
    }
    if (/\/blobs\/uploads\//.test(url)) {
      // Echo what arrived so tests can check byte identity, and a Location built from the
      // forwarded host, the way distribution builds absolute upload URLs.
      const host = req.headers['x-forwarded-host'] ?? req.headers.host;
      const proto = req.headers['x-forwarded-proto'] ?? 'http';
      res.writeHead(req.method === 'PUT' ? 201 : 202, {
        Location: `${proto}://${host}/v2/up/blobs/uploads/session-1?_state=x`,
        'X-Body-Sha256': entry.bodySha256,
        'X-Body-Bytes': String(entry.bodyBytes),
        'Content-Length': 0,
      });
      res.end();
      return;
    }
    const body = `{"echo":"${req.method} ${url}"}`;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'X-Upstream': 'fake' });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    blobs,
    override(fn) {
      override = fn;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
