/**
 * Start a real nginx (Debian `nginx-light`, `/usr/sbin/nginx`) with one `server { ... }` block on
 * a free loopback port: the fronts operators put before distribution (http->https `301`, SSO
 * `302 /login`, `real_ip_header` + `allow`/`deny`) and a storage/CDN that verifies signed links.
 *
 * Everything lives in a temp prefix (config, pid, temp paths, logs); `daemon off` and
 * `master_process off` keep it one foreground process (no privilege drop, so it can read the
 * registry's 0700 temp storage), stopped with SIGTERM/SIGKILL by `stop()` or at process exit.
 *
 * @module
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './binaries.js';
import { supervise } from './child.js';
import { request, waitFor } from './http.js';
import { assertLoopback, freePort } from './ports.js';

/** Options for {@link startNginx}. */
export interface StartNginxOptions {
  /** Loopback address to listen on (default `127.0.0.1`). */
  host?: string;
  /**
   * Directives inside `server { }` (the helper adds `listen`). A function gets the address nginx
   * will listen on, for configs that name themselves (e.g. `return 301 https://HOST:PORT...`).
   */
  server: string | ((self: { host: string; port: number; hostPort: string }) => string);
  /** Extra directives at `http { }` level (maps, upstreams, `log_format`). */
  http?: string;
  /** Startup timeout in ms (default 10 000). */
  startTimeoutMs?: number;
}

/** A running nginx. */
export interface RunningNginx {
  /** `http://HOST:PORT`. */
  url: string;
  host: string;
  port: number;
  hostPort: string;
  /** The generated nginx.conf (for debugging). */
  configPath: string;
  /** nginx's error log so far. */
  errorLog(): Promise<string>;
  /** Tail of nginx's stdout/stderr. */
  output(): string;
  stop(): Promise<void>;
}

/** The nginx binary (`findBinary` also looks in sbin, where Debian puts it). */
export function nginxBinary(): string | undefined {
  return findBinary('nginx');
}

/**
 * Start nginx with `opts.server` as its only server block and wait (bounded) until it answers
 * HTTP on its port. On failure the error carries nginx's own messages (config errors included).
 */
export async function startNginx(opts: StartNginxOptions): Promise<RunningNginx> {
  const bin = nginxBinary();
  if (!bin) throw new Error('nginx not installed; apt-get install nginx-light');
  const host = opts.host ?? '127.0.0.1';
  assertLoopback(host);
  const prefix = await mkdtemp(join(tmpdir(), 'rr-nginx-'));
  const configPath = join(prefix, 'nginx.conf');
  const errorLogPath = join(prefix, 'error.log');
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort(host);
    const hostPort = `${host}:${port}`;
    const body = typeof opts.server === 'function' ? opts.server({ host, port, hostPort }) : opts.server;
    await writeFile(
      configPath,
      `daemon off;
master_process off;
pid ${join(prefix, 'nginx.pid')};
error_log ${errorLogPath} warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${join(prefix, 'client_body')};
  proxy_temp_path ${join(prefix, 'proxy')};
  fastcgi_temp_path ${join(prefix, 'fastcgi')};
  uwsgi_temp_path ${join(prefix, 'uwsgi')};
  scgi_temp_path ${join(prefix, 'scgi')};
  default_type application/octet-stream;
${opts.http ?? ''}
  server {
    listen ${hostPort};
${body}
  }
}
`,
    );
    const proc = supervise(bin, ['-e', errorLogPath, '-p', prefix, '-c', configPath], { cwd: prefix });
    let exited: string | undefined;
    void proc.exited.then((code) => {
      exited = `nginx exited (${String(code)})`;
    });
    const url = `http://${hostPort}`;
    try {
      await waitFor(async () => (await request(`${url}/`, { timeoutMs: 1_000 })).status > 0, {
        timeoutMs: opts.startTimeoutMs ?? 10_000,
        label: `nginx on ${url}`,
        giveUp: () => exited,
      });
    } catch (err) {
      await proc.stop(500);
      const log = await readFile(errorLogPath, 'utf8').catch(() => '');
      lastError = new Error(`${err instanceof Error ? err.message : String(err)}\nnginx output:\n${proc.output()}\n${log}`);
      if (/Address already in use/i.test(log + proc.output())) continue;
      break;
    }
    return {
      url,
      host,
      port,
      hostPort,
      configPath,
      errorLog: () => readFile(errorLogPath, 'utf8').catch(() => ''),
      output: () => proc.output(),
      async stop() {
        await proc.stop();
        await rm(prefix, { recursive: true, force: true });
      },
    };
  }
  await rm(prefix, { recursive: true, force: true });
  throw lastError instanceof Error ? lastError : new Error('startNginx failed');
}
