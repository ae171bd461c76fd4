/**
 * A real nginx (Debian `nginx-light`: secure_link, proxy_cache) as a CDN or storage front in tests.
 *
 * Runs in the foreground with one process (`master_process off`): a SIGKILL from the supervisor
 * then leaves no orphaned worker behind. Every path (pid, logs, temp and cache dirs) is in its own
 * temp dir, removed by `stop()`.
 *
 * @module
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './binaries.js';
import { supervise } from './child.js';
import { request, waitFor } from './http.js';
import { assertLoopback, freePort } from './ports.js';

/** Where nginx is: on PATH, or Debian's /usr/sbin (not on a normal user's PATH). */
export function nginxBinary(): string | undefined {
  return findBinary('nginx') ?? findBinary('/usr/sbin/nginx');
}

export interface StartNginxOptions {
  /** Loopback address (default 127.0.0.3). */
  host?: string;
  /**
   * The `server { }` body after `listen`; `{{dir}}` is replaced by nginx's temp dir. It must
   * answer `GET /__nginx_up` (the helper's readiness probe), e.g. `location = /__nginx_up { return 204; }`.
   */
  server: string;
  /** Extra `http { }` directives (e.g. `proxy_cache_path {{dir}}/cache keys_zone=blobs:1m;`). */
  http?: string;
}

export interface RunningNginx {
  url: string;
  host: string;
  port: number;
  dir: string;
  /** nginx's error log plus its stdout/stderr. */
  logs(): Promise<string>;
  stop(): Promise<void>;
}

export async function startNginx(options: StartNginxOptions): Promise<RunningNginx> {
  const bin = nginxBinary();
  if (!bin) throw new Error('nginx is not installed; apt-get install nginx-light');
  const host = options.host ?? '127.0.0.3';
  assertLoopback(host);
  const port = await freePort(host);
  const dir = await mkdtemp(join(tmpdir(), 'rr-nginx-'));
  for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(join(dir, sub));
  const fill = (text: string) => text.replaceAll('{{dir}}', dir);
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  ${fill(options.http ?? '')}
  server {
    listen ${host}:${port};
    ${fill(options.server)}
  }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const child = supervise(bin, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')]);
  const url = `http://${host}:${port}`;
  const logs = async () => `${await readFile(join(dir, 'error.log'), 'utf8').catch(() => '')}\n${child.output()}`;
  try {
    await waitFor(async () => (await request(`${url}/__nginx_up`, { timeoutMs: 1_000 })).status === 204, {
      timeoutMs: 10_000,
      label: 'nginx',
      describe: () => child.output(),
      giveUp: () => (child.child.exitCode !== null ? `nginx exited with ${child.child.exitCode}` : undefined),
    });
  } catch (err) {
    await child.stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url,
    host,
    port,
    dir,
    logs,
    async stop() {
      await child.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
