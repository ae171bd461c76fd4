/**
 * Small clients for distribution's HTTP API and the token server, plus a recording front that
 * shows exactly what the proxy sends to the upstream. Used by the token-mode e2e and the
 * security suite, which push a few blobs per repository without needing skopeo.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from '../support/http.js';
import type { HttpResponse } from '../support/http.js';
import type { RunningTokenServer } from '../support/token-auth.js';

export const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Pushes `data` as a blob into `repository` (POST + monolithic PUT). Returns its digest. */
export async function pushBlob(registryUrl: string, repository: string, data: Buffer, authorization: string): Promise<string> {
  const digest = sha256(data);
  const post = await request(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: { authorization, 'content-length': 0 } });
  if (post.status !== 202 || typeof post.headers.location !== 'string') throw new Error(`upload start failed: ${post.status} ${post.body.toString()}`);
  const location = new URL(post.headers.location, registryUrl);
  location.searchParams.set('digest', digest);
  const put = await request(location, {
    method: 'PUT',
    headers: { authorization, 'content-type': 'application/octet-stream', 'content-length': data.length },
    body: data,
  });
  if (put.status !== 201) throw new Error(`upload finish failed: ${put.status} ${put.body.toString()}`);
  return digest;
}

/** Asks the token server for a token as `user` (Basic credentials) for `scope`, like a client does. */
export async function fetchToken(tokens: RunningTokenServer, scope: string, user?: { username: string; password: string }): Promise<string> {
  const url = new URL(tokens.realm);
  url.searchParams.set('service', tokens.service);
  url.searchParams.set('scope', scope);
  const headers = user ? { authorization: `Basic ${Buffer.from(`${user.username}:${user.password}`).toString('base64')}` } : undefined;
  const res = await request(url, { headers });
  if (res.status !== 200) throw new Error(`token server answered ${res.status}`);
  return (JSON.parse(res.body.toString()) as { token: string }).token;
}

/** The parts of a registry answer that must agree between the proxy and the upstream. */
export function answerShape(res: HttpResponse): { status: number; challenge: string | undefined; body: unknown } {
  const text = res.body.toString();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : '';
  } catch {
    // not JSON: compare as text
  }
  return { status: res.status, challenge: res.headers['www-authenticate'] as string | undefined, body };
}

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export interface RecordingFront {
  url: string;
  seen: SeenRequest[];
  close(): Promise<void>;
}

/** A streaming reverse proxy on 127.0.0.1 in front of `target` that records every request. */
export async function startRecordingFront(target: string): Promise<RecordingFront> {
  const t = new URL(target);
  const seen: SeenRequest[] = [];
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers } });
    const up = http.request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers, agent }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      agent.destroy();
    },
  };
}
