#!/usr/bin/env node
/**
 * `npm start`: the whole thing on loopback, nothing to set up, until Ctrl-C.
 *
 *   - an upstream registry on a local filesystem: distribution (`docker-registry`) when installed,
 *     otherwise the Node registry of examples/express-node-registry (blobs on disk, same layout);
 *   - registry-redirect in front of it (dist/, what `registry-redirect serve` runs) in origin mode:
 *     blob GETs get a 307 to a signed URL of the origin, which serves the registry's own files.
 *
 * The proxy listens on 127.0.0.1:15080 and the origin on 127.0.0.2:15081: another host name, since
 * podman, skopeo and containerd send registry credentials along a redirect to the same host name.
 * No auth on this local stack. Everything lives in one temp dir, removed on exit, with every child.
 *
 * Environment: LISTEN (default 127.0.0.1:15080), ORIGIN_LISTEN (default 127.0.0.2:15081, or
 * 127.0.0.1 named "localhost" where 127.0.0.2 is missing, as on macOS).
 */
/* global fetch */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clearTimeout, setTimeout } from 'node:timers';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const say = (text = '') => process.stdout.write(`${text}\n`);

function findBinary(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      if (statSync(path).isFile()) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

function parseHostPort(text, name) {
  const m = /^(.+):(\d{1,5})$/.exec(text);
  if (!m) throw new Error(`${name}: ${JSON.stringify(text)} is not host:port, e.g. 127.0.0.1:15080`);
  return { host: m[1], port: Number(m[2]) };
}

function canBind(host, port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err) => resolve(err.code));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

function freePort(host) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitFor(label, probe, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await probe()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${label} did not come up within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Cleanups run in reverse order on the way out, whatever the way out is. */
const cleanups = [];
const children = new Set();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

function startChild(cmd, args, options) {
  // Its own process group: Ctrl-C reaches only this script, which then stops the child in order.
  const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.add(child);
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString('utf8')).slice(-16_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  void exited.then(() => children.delete(child));
  cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  });
  return { child, output: () => output };
}

async function startDistribution(bin, work, storage) {
  const port = await freePort('127.0.0.1');
  const config = join(work, 'registry.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log: { level: error, accesslog: { disabled: true } }',
      `storage: { filesystem: { rootdirectory: ${JSON.stringify(storage)} }, delete: { enabled: true }, redirect: { disable: true } }`,
      `http: { addr: "127.0.0.1:${port}", secret: "${randomBytes(16).toString('hex')}" }`,
      '',
    ].join('\n'),
  );
  const env = { ...process.env };
  delete env.AWS_CA_BUNDLE; // distribution's s3 driver panics at start when it is set
  const registry = startChild(bin, ['serve', config], { env, cwd: work });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('docker-registry', async () => {
    if (registry.child.exitCode !== null) throw new Error(`docker-registry exited:\n${registry.output()}`);
    return (await fetch(`${url}/v2/`)).status === 200;
  });
  return { url, pid: registry.child.pid, describe: `distribution (${bin})` };
}

async function startNodeRegistry(storage) {
  const { createRegistry } = await import('../examples/express-node-registry/registry.js');
  const { fsContainer } = await import('../examples/express-node-registry/fs-container.js');
  const container = fsContainer(storage);
  await container.createIfNotExists();
  const registry = await createRegistry({ container });
  const server = await new Promise((resolve) => {
    const s = registry.app.listen(0, '127.0.0.1', () => resolve(s));
  });
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await registry.close();
  });
  return { url: `http://127.0.0.1:${server.address().port}`, describe: 'the Node registry of examples/express-node-registry (in this process)' };
}

/** Short access lines: what a newcomer wants to see is the 307 and where it points. */
function trail(server, label) {
  server.prependListener('request', (req, res) => {
    const writeHead = res.writeHead;
    let location;
    res.writeHead = function (status, ...rest) {
      const headers = rest.find((a) => a !== null && typeof a === 'object' && !Array.isArray(a));
      location = headers?.Location ?? headers?.location;
      return writeHead.call(this, status, ...rest);
    };
    res.once('finish', () => {
      const path = (req.url ?? '').split('?')[0].replace(/[a-f0-9]{64}/g, (hex) => `${hex.slice(0, 12)}…`);
      const to = location ? ` -> ${String(location).split('?')[0].replace(/[a-f0-9]{64}/g, (hex) => `${hex.slice(0, 12)}…`)}?<signed>` : '';
      say(`${label} ${req.method} ${path} ${res.statusCode}${to}`);
    });
  });
}

async function main() {
  if (!existsSync(join(ROOT, 'dist', 'server', 'server.js'))) throw new Error('dist/ is missing: run `npm start` (it builds first) or `npm run build`');
  const listen = parseHostPort(process.env.LISTEN ?? '127.0.0.1:15080', 'LISTEN');
  let originListen = parseHostPort(process.env.ORIGIN_LISTEN ?? '127.0.0.2:15081', 'ORIGIN_LISTEN');
  let originName = originListen.host;
  if (process.env.ORIGIN_LISTEN === undefined && (await canBind('127.0.0.2', 0)) !== true) {
    // macOS has only 127.0.0.1: "localhost" is still another host name than 127.0.0.1 for clients.
    originListen = { host: '127.0.0.1', port: originListen.port };
    originName = 'localhost';
  }
  for (const [what, l] of [['LISTEN', listen], ['ORIGIN_LISTEN', originListen]]) {
    const bound = await canBind(l.host, l.port);
    if (bound !== true) throw new Error(`${what} ${l.host}:${l.port} is not available (${bound}); stop what uses it or set ${what}=host:port`);
  }

  const work = await mkdtemp(join(tmpdir(), 'registry-redirect-start-'));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  const storage = join(work, 'storage');
  say(`registry-redirect: a local stack on loopback (state in ${work}, removed on exit)`);

  const bin = findBinary('docker-registry');
  const upstream = bin ? await startDistribution(bin, work, storage) : await startNodeRegistry(storage);
  say(`  upstream registry: ${upstream.describe} at ${upstream.url}, blobs in ${storage}`);
  if (!bin) say('  (docker-registry is not installed; Debian/Ubuntu: apt-get install docker-registry)');

  const yaml = [
    `listen: ${listen.host}:${listen.port}`,
    `upstream: ${upstream.url}`,
    'signer:',
    '  origin:',
    `    root: ${storage}`,
    '    key: ${ORIGIN_KEY}',
    `    listen: ${originListen.host}:${originListen.port}`,
    ...(originName !== originListen.host ? [`    baseUrl: http://${originName}:${originListen.port}`] : []),
    'expiry: 20m',
    '',
  ].join('\n');
  const configPath = join(work, 'proxy.yaml');
  await writeFile(configPath, yaml);
  const { loadConfig } = await import('../dist/server/config.js');
  const { startServer } = await import('../dist/server/server.js');
  const config = await loadConfig(configPath, { ...process.env, ORIGIN_KEY: randomBytes(32).toString('hex') });
  const log = (level) => (obj, msg) => process.stderr.write(`proxy ${level}: ${msg ?? ''} ${JSON.stringify(obj)}\n`);
  const quiet = () => {};
  const running = await startServer(config, { debug: quiet, info: quiet, warn: log('warn'), error: log('error') });
  cleanups.push(() => running.close());
  trail(running.server, 'proxy ');
  for (const s of running.originServers) trail(s, 'origin');

  const hostPort = `${listen.host}:${listen.port}`;
  say(`  registry-redirect: ${running.url} -> ${upstream.url}, origin (blob bytes) at ${running.originUrls.join(', ')}`);
  say('');
  say('  proxy.yaml (what `registry-redirect serve --config proxy.yaml` runs here):');
  for (const line of yaml.trimEnd().split('\n')) say(`    ${line}`);
  say('');
  say('Push and pull through it (no auth, plain HTTP), e.g. with skopeo:');
  say(`  1. skopeo copy --dest-tls-verify=false docker://docker.io/library/alpine:latest docker://${hostPort}/library/alpine:latest`);
  say(`  2. skopeo copy --src-tls-verify=false docker://${hostPort}/library/alpine:latest dir:/tmp/alpine-pulled`);
  say(`  3. curl -sI http://${hostPort}/v2/library/alpine/blobs/$(jq -r '.layers[0].digest' /tmp/alpine-pulled/manifest.json)   # 307 to the origin`);
  say('  podman: podman push --tls-verify=false IMAGE ' + `${hostPort}/library/alpine:latest; podman pull --tls-verify=false ${hostPort}/library/alpine:latest`);
  say(`  docker: docker tag alpine ${hostPort}/library/alpine && docker push ${hostPort}/library/alpine && docker pull ${hostPort}/library/alpine  (127.0.0.0/8 is insecure-allowed by default)`);
  say(`  crane:  crane copy --insecure alpine ${hostPort}/library/alpine && crane pull --insecure ${hostPort}/library/alpine /tmp/alpine.tar`);
  say('');
  say(`registry-redirect is up at ${running.url}; Ctrl-C stops everything.`);
}

let stopping;
function stopAll(code) {
  stopping ??= (async () => {
    while (cleanups.length > 0) {
      const cleanup = cleanups.pop();
      try {
        await cleanup();
      } catch (err) {
        say(`start: cleanup failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    say('stopped everything.');
    process.exit(code);
  })();
  return stopping;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    if (stopping) {
      say('start: stopping now');
      for (const child of children) child.kill('SIGKILL');
      process.exit(130);
    }
    say(`\n${signal}: stopping everything`);
    void stopAll(0);
  });
}

try {
  await main();
} catch (err) {
  say(`\nstart failed: ${err instanceof Error ? err.message : String(err)}`);
  await stopAll(1);
}
