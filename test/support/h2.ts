/**
 * HTTP/2 test client (node:http2): one request per call on a fresh session, or many on a kept
 * `h2Session`. Never follows redirects; always bounded. Responses look like `request()`'s in
 * http.ts (status, lower-cased headers, body), plus the negotiated ALPN protocol.
 *
 * @module
 */
import http2 from 'node:http2';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { HttpResponse } from './http.js';

/** TLS and address options of a session. */
export interface H2SessionOptions {
  ca?: Buffer | string;
  cert?: Buffer | string;
  key?: Buffer | string;
  rejectUnauthorized?: boolean;
  /** Connect from this loopback address (the proxy then sees it as the peer). */
  localAddress?: string;
}

export interface H2Response extends HttpResponse {
  /** `h2` when HTTP/2 was negotiated. */
  alpnProtocol: string | false | undefined;
}

/** A kept HTTP/2 session: `request()` opens a stream on it. */
export interface H2Session {
  readonly session: http2.ClientHttp2Session;
  request(path: string, opts?: { method?: string; headers?: OutgoingHttpHeaders; body?: Buffer | string; timeoutMs?: number }): Promise<H2Response>;
  close(): Promise<void>;
}

/** Open a session to `origin` (`https://host:port`); rejects if it cannot connect within 10 s. */
export function h2Session(origin: string, opts: H2SessionOptions = {}): Promise<H2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(origin, { ...opts, ...(opts.localAddress && { localAddress: opts.localAddress }) });
    const timer = setTimeout(() => session.destroy(new Error(`h2 connect ${origin} timed out`)), 10_000);
    session.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    session.once('connect', () => {
      clearTimeout(timer);
      session.removeAllListeners('error');
      session.on('error', () => undefined);
      resolve({
        session,
        request: (path, r = {}) =>
          new Promise<H2Response>((res, rej) => {
            const headers: OutgoingHttpHeaders = { ':method': r.method ?? 'GET', ':path': path, ...r.headers };
            const stream = session.request(headers, { endStream: r.body === undefined });
            const t = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), r.timeoutMs ?? 10_000);
            let head: IncomingHttpHeaders = {};
            const chunks: Buffer[] = [];
            stream.on('response', (h) => (head = h as IncomingHttpHeaders));
            stream.on('data', (c: Buffer) => chunks.push(c));
            stream.on('error', (err) => {
              clearTimeout(t);
              rej(err);
            });
            stream.on('close', () => {
              clearTimeout(t);
              if (head[':status'] === undefined) {
                rej(new Error(`h2 stream ${path} closed without a response (code ${stream.rstCode})`));
                return;
              }
              const { ':status': status, ...rest } = head as IncomingHttpHeaders & { ':status'?: number };
              res({ status: Number(status), headers: rest, rawHeaders: [], body: Buffer.concat(chunks), alpnProtocol: session.alpnProtocol });
            });
            if (r.body !== undefined) stream.end(r.body);
          }),
        close: () =>
          new Promise<void>((done) => {
            if (session.destroyed) {
              done();
              return;
            }
            const t = setTimeout(() => {
              session.destroy();
              done();
            }, 2_000);
            session.once('close', () => {
              clearTimeout(t);
              done();
            });
            session.close();
          }),
      });
    });
  });
}

/** One request over a fresh HTTP/2 session, closed afterwards. */
export async function h2Request(
  url: string | URL,
  opts: H2SessionOptions & { method?: string; headers?: OutgoingHttpHeaders; body?: Buffer | string; timeoutMs?: number } = {},
): Promise<H2Response> {
  const u = typeof url === 'string' ? new URL(url) : url;
  const s = await h2Session(u.origin, opts);
  try {
    return await s.request(u.pathname + u.search, opts);
  } finally {
    await s.close();
  }
}
