// nginx baselines (Debian `nginx-light`): what this machine can do for a fixed 307 and for a
// keepalive reverse proxy in front of distribution. Optional: scenarios skip their nginx rows when
// it is not installed. One foreground worker (`daemon off; master_process off`), temp prefix,
// loopback only, stopped with everything else the bench started.
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, start, waitForHttp, assertLoopback } from './procs.js';

const CANDIDATES = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx'];

/** Path of nginx, or undefined. */
export function findNginx() {
  return CANDIDATES.find((p) => existsSync(p));
}

/**
 * Starts nginx with `server` (directives inside `server { }`; `listen` is added) and `http`
 * (directives at `http { }` level). Resolves once it answers on its port.
 */
export async function startNginx({ dir, name, server, http = '', host = '127.0.0.1' }) {
  const bin = findNginx();
  if (!bin) throw new Error('nginx is not installed (apt-get install nginx-light)');
  assertLoopback(host);
  const prefix = mkdtempSync(join(dir, `${name}-`));
  const port = await freePort(host);
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;
master_process off;
worker_processes 1;
pid ${join(prefix, 'nginx.pid')};
error_log ${join(prefix, 'error.log')} error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${join(prefix, 'body')};
  proxy_temp_path ${join(prefix, 'proxy')};
  fastcgi_temp_path ${join(prefix, 'fastcgi')};
  uwsgi_temp_path ${join(prefix, 'uwsgi')};
  scgi_temp_path ${join(prefix, 'scgi')};
  keepalive_requests 1000000;
${http}
  server {
    listen ${host}:${port} backlog=4096;
${server}
  }
}
`,
  );
  const proc = start(bin, ['-p', prefix, '-c', conf, '-e', join(prefix, 'error.log')], { label: name });
  const origin = `http://${host}:${port}`;
  await waitForHttp(`${origin}/v2/`, { proc });
  return { proc, origin, pids: () => [proc.pid] };
}

/**
 * `return 307` with the same headers as the proxy's redirect. nginx adds its default HTML body to
 * a 3xx with a URL (about 170 bytes); that is what nginx does, so it is kept.
 */
export function nginxRedirect({ dir, location, digest }) {
  return startNginx({
    dir,
    name: 'nginx-307',
    server: `    location / {
      add_header Docker-Content-Digest "${digest}" always;
      add_header Docker-Distribution-API-Version registry/2.0 always;
      add_header Cache-Control no-store always;
      return 307 "${location}";
    }`,
  });
}

/** `proxy_pass` to `upstream` (http://host:port) over a keepalive pool, Host kept, as operators front distribution. */
export function nginxProxy({ dir, upstream }) {
  const target = new URL(upstream);
  return startNginx({
    dir,
    name: 'nginx-proxy',
    http: `  upstream registry { server ${target.host}; keepalive 64; }`,
    server: `    client_max_body_size 0;
    location / {
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_request_buffering off;
      proxy_buffering off;
    }`,
  });
}
