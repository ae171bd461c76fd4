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
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { createStack, findBinary, requireDist, say, serveNodeRegistry, startDistribution } from './lib/stack.mjs';

const stack = createStack({ name: 'start', detached: true, killAfterMs: 5_000 });

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

async function startNodeRegistry(storage) {
  const { createRegistry } = await import('../examples/express-node-registry/registry.js');
  const { fsContainer } = await import('../examples/express-node-registry/fs-container.js');
  const container = fsContainer(storage);
  await container.createIfNotExists();
  const url = await serveNodeRegistry(stack, await createRegistry({ container }));
  return { url, describe: 'the Node registry of examples/express-node-registry (in this process)' };
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
  requireDist('npm start');
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

  const work = await stack.tempDir('registry-redirect-start-');
  const storage = join(work, 'storage');
  say(`registry-redirect: a local stack on loopback (state in ${work}, removed on exit)`);

  const bin = findBinary('docker-registry');
  const upstream = bin ? { url: await startDistribution(stack, bin, work, storage), describe: `distribution (${bin})` } : await startNodeRegistry(storage);
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
  stack.onStop(() => running.close());
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
    await stack.stop();
    say('stopped everything.');
    process.exit(code);
  })();
  return stopping;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    if (stopping) {
      say('start: stopping now');
      stack.killAll();
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
