import type { Duplex } from 'node:stream';

// Node's parser error codes -> the status a client should see. Everything else is a plain 400.
const STATUS_BY_CODE: Readonly<Record<string, string>> = {
  HPE_HEADER_OVERFLOW: '431 Request Header Fields Too Large',
  ERR_HTTP_REQUEST_TIMEOUT: '408 Request Timeout',
};

/**
 * Answers a request Node's HTTP parser refused (oversized headers or URL, headers not complete
 * within `headersTimeout`, ambiguous framing such as `Content-Length` with `Transfer-Encoding`)
 * and closes the connection: nothing of it reaches the upstream, and a half-parsed request can
 * never leave the upstream connection out of step.
 */
export function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const status = STATUS_BY_CODE[err.code ?? ''] ?? '400 Bad Request';
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  // end() sends the answer and a FIN, but the socket stays open until the client closes its side,
  // and a client that never reads never does: without this, every such connection is held for good.
  // Not destroyed at once: unread request bytes would turn the close into a reset that can discard
  // the answer before the client reads it.
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** How long a refused connection may stay open for the client to read the answer. */
const LINGER_MS = 2_000;

/**
 * How often Node checks connections for `headersTimeout`/`requestTimeout`. Node's default is 30 s,
 * which lets a slow client hold a connection up to 30 s past the configured timeout.
 */
export function connectionsCheckInterval(headersTimeoutMs: number): number {
  return Math.max(100, Math.min(1_000, Math.floor(headersTimeoutMs / 4)));
}
