// Scenario 8: origin mode's file serving vs nginx serving the same file from the same directory,
// both checking the same nginx secure_link token (token: nginx-secure-link), access logs off. A
// large blob (throughput: nginx uses sendfile, the origin 1 MiB reads from a file handle) and a
// small one (per-request cost).
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lib } from '../lib/lib.js';
import { compareRounds } from '../lib/load.js';
import { freePort, httpRequest, start, waitForHttp } from '../lib/procs.js';
import { startServe } from '../lib/servers.js';

export const title = 'Origin mode serving blobs vs nginx serving the same files (req/s, MiB/s)';
const KEY = 'bench-origin-key-0123456789abcdef';
const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p));

function writeBlob(root, size, seed) {
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i += 32) createHash('sha256').update(`${seed}:${i}`).digest().copy(data, i);
  const hex = createHash('sha256').update(data).digest('hex');
  const dir = join(root, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'data'), data);
  return `sha256:${hex}`;
}

async function startNginx(ctx, root, port) {
  const dir = join(ctx.dir, 'nginx-8');
  for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub), { recursive: true });
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  sendfile on; tcp_nopush on; keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${port};
    root ${root};
    location /docker/ {
      secure_link $arg_md5,$arg_expires;
      secure_link_md5 "$secure_link_expires$uri ${KEY}";
      if ($secure_link = "") { return 403; }
      if ($secure_link = "0") { return 403; }
      default_type application/octet-stream;
      add_header Cache-Control "public, max-age=31536000, immutable";
    }
  }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const proc = start(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { label: 'nginx' });
  await waitForHttp(`http://127.0.0.1:${port}/`, { proc });
  return { proc, origin: `http://127.0.0.1:${port}`, pids: () => [proc.pid] };
}

export async function run(ctx) {
  if (!NGINX || typeof lib.originSigner !== 'function') {
    return { rows: [{ id: '8', title: `origin vs nginx: skipped (${NGINX ? 'no origin mode in this build' : 'nginx not installed: apt-get install nginx-light'})`, value: Number.NaN, unit: 'x', skipped: true }], details: {} };
  }
  const root = join(ctx.dir, 'origin-root');
  const largeSize = ctx.smoke ? 1 << 20 : ctx.quick ? 4 << 20 : 16 << 20;
  const blobs = { large: writeBlob(root, largeSize, 'large'), small: writeBlob(root, 16 << 10, 'small') };
  const [originPort, nginxPort] = await Promise.all([freePort(), freePort()]);
  const serve = await startServe(
    { upstream: 'http://127.0.0.1:9', log: { level: 'warn', requests: false }, signer: { origin: { root, key: KEY, token: 'nginx-secure-link', listen: `127.0.0.1:${originPort}` } }, expiry: '1h' },
    { dir: ctx.dir, name: 'serve-origin' },
  );
  const nginx = await startNginx(ctx, root, nginxPort);
  const signer = lib.originSigner({ root, key: KEY, token: 'nginx-secure-link', listen: { host: '127.0.0.1', port: originPort }, expiry: '1h' });
  const pathOf = (digest) => {
    const u = new URL(signer.sign({ repository: 'bench/app', digest, method: 'GET' }).url);
    return `${u.pathname}${u.search}`;
  };
  const originBase = `http://127.0.0.1:${originPort}`;
  const rows = [];
  const details = {};
  try {
    for (const [name, digest] of Object.entries(blobs)) {
      const path = pathOf(digest);
      for (const base of [originBase, nginx.origin]) {
        const res = await httpRequest(`${base}${path}`);
        if (res.status !== 200) throw new Error(`${base}${path}: ${res.status}`);
      }
      const size = name === 'large' ? largeSize : 16 << 10;
      const connections = name === 'large' ? 8 : ctx.connections;
      ctx.log(`scenario 8 (${name}, ${size} B): origin vs nginx; ${ctx.rounds} rounds x ${ctx.seconds} s, ${connections} connections`);
      const s = await compareRounds({
        variants: [
          { name: 'nginx', origin: nginx.origin, paths: [path], pids: nginx.pids },
          { name: 'origin', origin: originBase, paths: [path], pids: () => [serve.proc.pid] },
        ],
        baseline: 'nginx',
        rounds: ctx.rounds,
        seconds: ctx.seconds,
        connections,
        log: ctx.log,
      });
      const mibs = (v) => (v.rps * size) / (1 << 20);
      const fmt = (v) => (name === 'large' ? `${mibs(v).toFixed(0)} MiB/s` : `${Math.round(v.rps).toLocaleString('en-US')} req/s`);
      rows.push({
        id: name === 'large' ? '8a' : '8b',
        title: `origin vs nginx (sendfile), ${name === 'large' ? `${size >> 20} MiB blob, throughput` : '16 KiB blob, request rate'}`,
        ours: fmt(s.origin),
        baseline: fmt(s.nginx),
        value: s.origin.rpsRatio,
        unit: 'x',
        note: `same file, same secure_link token checked by both; CPU per request ${s.origin.cpuUsPerRequest.toFixed(0)} vs ${s.nginx.cpuUsPerRequest.toFixed(0)} µs; ${s.origin.bad + s.nginx.bad} bad responses`,
      });
      details[name] = { size, connections, origin: { rps: s.origin.rps, cpuUsPerRequest: s.origin.cpuUsPerRequest }, nginx: { rps: s.nginx.rps, cpuUsPerRequest: s.nginx.cpuUsPerRequest }, ratio: s.origin.rpsRatio, ratioRange: s.origin.rpsRatioRange };
    }
  } finally {
    await Promise.all([serve.proc.stop(), nginx.proc.stop()]);
  }
  return { rows, details };
}
