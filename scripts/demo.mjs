#!/usr/bin/env node
/**
 * `npm run demo`: registry-redirect end to end on loopback, no cloud account, stops by itself.
 *
 *   1. Azurite (the Azure Blob emulator, from node_modules) as the blob storage.
 *   2. An upstream registry: distribution (`docker-registry`) when installed; otherwise the Node
 *      registry of examples/express-node-registry.
 *   3. registry-redirect in front of it (the same server `registry-redirect serve` runs, from dist/).
 *   4. A small generated image, pushed THROUGH the proxy (skopeo when installed, else fetch).
 *   5. The image pulled through the proxy (skopeo, or a fetch walk-through that follows each 307
 *      and checks every digest), then the trail of what the proxy answered.
 *
 * Exit code 0 when the pull was verified and every blob GET was a 307 to storage.
 */
/* global fetch */
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative, sep } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Buffer } from 'node:buffer';
import { clearTimeout, setTimeout } from 'node:timers';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { createStack, findBinary, freePort, requireDist, say, serveNodeRegistry, startDistribution, waitFor } from './lib/stack.mjs';

const DEADLINE_MS = Number(process.env.DEMO_TIMEOUT_MS ?? 120_000);
/** Azurite's well-known development account and key (public, documented by Microsoft). */
const ACCOUNT = 'devstoreaccount1';
const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const CONTAINER = 'registry';
const REPOSITORY = 'demo/hello';
const TAG = 'v1';

const stack = createStack({ name: 'demo', killAfterMs: 3_000 });
let step = 0;
const STEPS = 6;

const stepLine = (text) => say(`[${++step}/${STEPS}] ${text}`);
const note = (text) => say(`      ${text}`);

// ---- small utilities ----------------------------------------------------------------------------

/** 127.0.0.2 is loopback on Linux, but not configured on macOS. */
async function storageHost() {
  try {
    await freePort('127.0.0.2');
    return { bind: '127.0.0.2', name: '127.0.0.2' };
  } catch {
    return { bind: '127.0.0.1', name: 'localhost' };
  }
}

function run(cmd, args, options = {}, timeoutMs = 60_000) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

const sha256 = (data) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
/** Long hex strings shortened so the trail fits on a line; signatures never printed. */
const shorten = (text) => text.replace(/[a-f0-9]{64}/g, (hex) => `${hex.slice(0, 12)}…`).replace(/([?&]sig=)[^&]+/, '$1<redacted>');

// ---- a small image, generated (no docker needed) ------------------------------------------------

function tarOneFile(name, content) {
  const header = Buffer.alloc(512, 0);
  const octal = (value, width) => value.toString(8).padStart(width - 1, '0') + '\0';
  header.write(name, 0, 100);
  header.write(octal(0o644, 8), 100);
  header.write(octal(0, 8), 108);
  header.write(octal(0, 8), 116);
  header.write(octal(content.length, 12), 124);
  header.write(octal(0, 12), 136);
  header.write('        ', 148);
  header.write('0', 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const pad = (512 - (content.length % 512)) % 512;
  return Buffer.concat([header, content, Buffer.alloc(pad), Buffer.alloc(1024)]);
}

function makeImage() {
  const noise = (seed, size) => {
    const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16));
    return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
  };
  const tars = [tarOneFile('hello.txt', Buffer.from('hello from registry-redirect\n')), tarOneFile('data.bin', noise('registry-redirect demo', 512 * 1024))];
  const layers = tars.map((tar) => gzipSync(tar, { level: 1 }));
  const diffIds = tars.map(sha256);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(l), size: l.length })),
    }),
  );
  const blobs = [config, ...layers].map((data) => ({ digest: sha256(data), data }));
  return { blobs, manifest, manifestDigest: sha256(manifest) };
}

async function writeOciLayout(dir, image) {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const { digest, data } of [...image.blobs, { digest: image.manifestDigest, data: image.manifest }]) {
    await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), data);
  }
  const index = {
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: image.manifestDigest, size: image.manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
}

// ---- the parts ----------------------------------------------------------------------------------

async function startAzurite(work, host) {
  const main = join(dirname(createRequire(import.meta.url).resolve('azurite/package.json')), 'dist', 'src', 'blob', 'main.js');
  const port = await freePort(host.bind);
  const location = join(work, 'azurite');
  await mkdir(location);
  const env = { ...process.env };
  delete env.AZURITE_ACCOUNTS;
  const azurite = stack.startChild(process.execPath, [main, '--blobHost', host.bind, '--blobPort', String(port), '--location', location, '--skipApiVersionCheck', '--loose', '--silent', '--disableTelemetry', '--disableProductStyleUrl'], { cwd: location, env });
  const endpoint = `http://${host.name}:${port}/${ACCOUNT}`;
  const service = new BlobServiceClient(`http://${host.bind}:${port}/${ACCOUNT}`, new StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY));
  await waitFor('Azurite', async () => {
    if (azurite.child.exitCode !== null) throw new Error(`Azurite exited:\n${azurite.output()}`);
    await service.getContainerClient(CONTAINER).createIfNotExists();
    return true;
  });
  return { endpoint, container: service.getContainerClient(CONTAINER) };
}

async function startNodeRegistry(container, endpoint) {
  const { createRegistry } = await import('../examples/express-node-registry/registry.js');
  const { azureSigner } = await import('../dist/signers/azure.js');
  const registry = await createRegistry({ container, signer: azureSigner({ account: ACCOUNT, accountKey: ACCOUNT_KEY, container: CONTAINER, endpoint }) });
  return { url: await serveNodeRegistry(stack, registry), kind: 'node' };
}

/** The proxy exactly as `registry-redirect serve --config proxy.yaml` runs it, plus a trail recorder. */
async function startProxy(work, upstream, storageEndpoint) {
  const { loadConfig } = await import('../dist/server/config.js');
  const { startServer } = await import('../dist/server/server.js');
  const port = await freePort('127.0.0.1');
  const yaml = [
    `listen: 127.0.0.1:${port}`,
    `upstream: ${upstream}`,
    'signer:',
    '  azure:',
    `    account: ${ACCOUNT}`,
    '    accountKey: ${DEMO_AZURE_KEY}',
    `    container: ${CONTAINER}`,
    `    endpoint: ${storageEndpoint}`,
    'expiry: 5m',
    '',
  ].join('\n');
  const path = join(work, 'proxy.yaml');
  await writeFile(path, yaml);
  const config = await loadConfig(path, { DEMO_AZURE_KEY: ACCOUNT_KEY });
  const quiet = () => {};
  const logger = { debug: quiet, info: quiet, warn: (o, m) => say(`      proxy: ${m ?? ''} ${JSON.stringify(o)}`), error: (o, m) => say(`      proxy error: ${m ?? ''} ${JSON.stringify(o)}`) };
  const running = await startServer(config, logger);
  stack.onStop(() => running.close());

  const trail = [];
  running.server.prependListener('request', (req, res) => {
    const entry = { method: req.method, path: req.url, status: 0, location: undefined };
    const writeHead = res.writeHead;
    res.writeHead = function (status, ...rest) {
      const headers = rest.find((a) => a !== null && typeof a === 'object');
      const location = headers && !Array.isArray(headers) ? (headers.Location ?? headers.location) : undefined;
      entry.location = location ?? res.getHeader('location');
      return writeHead.call(this, status, ...rest);
    };
    res.once('finish', () => {
      entry.status = res.statusCode;
      trail.push(entry);
    });
  });
  return { url: running.url, hostPort: new URL(running.url).host, yaml, trail };
}

async function skopeo(bin, work, args) {
  const home = await mkdtemp(join(work, 'skopeo-home-'));
  await mkdir(join(home, 'run'), { mode: 0o700 });
  await writeFile(join(home, 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  await writeFile(join(home, 'registries.conf'), 'unqualified-search-registries = []\n');
  await writeFile(join(home, 'auth.json'), '{"auths":{}}');
  const env = {
    PATH: process.env.PATH,
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_RUNTIME_DIR: join(home, 'run'),
    REGISTRY_AUTH_FILE: join(home, 'auth.json'),
    CONTAINERS_REGISTRIES_CONF: join(home, 'registries.conf'),
    DOCKER_CONFIG: join(home, '.docker'),
    TMPDIR: home,
  };
  const result = await run(bin, ['--policy', join(home, 'policy.json'), ...args], { env });
  if (result.code !== 0) throw new Error(`skopeo ${args.join(' ')} failed:\n${result.out}`);
}

async function pushWithFetch(proxy, image) {
  for (const { digest, data } of image.blobs) {
    const start = await fetch(`${proxy.url}/v2/${REPOSITORY}/blobs/uploads/`, { method: 'POST' });
    if (start.status !== 202) throw new Error(`POST upload: ${start.status} ${await start.text()}`);
    const location = new URL(start.headers.get('location'), proxy.url);
    location.searchParams.set('digest', digest);
    const put = await fetch(location, { method: 'PUT', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
    if (put.status !== 201) throw new Error(`PUT blob ${digest}: ${put.status} ${await put.text()}`);
  }
  const put = await fetch(`${proxy.url}/v2/${REPOSITORY}/manifests/${TAG}`, { method: 'PUT', body: image.manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  if (put.status !== 201) throw new Error(`PUT manifest: ${put.status} ${await put.text()}`);
}

/** What a client does on pull, spelled out: manifest, then each blob: 307 -> storage -> verify. */
async function pullWithFetch(proxy, image) {
  const res = await fetch(`${proxy.url}/v2/${REPOSITORY}/manifests/${TAG}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const manifest = await res.json();
  if (res.headers.get('docker-content-digest') !== image.manifestDigest) throw new Error('manifest digest mismatch');
  note(`GET /v2/${REPOSITORY}/manifests/${TAG} -> ${res.status} (from the registry, through the proxy)`);
  for (const { digest, size } of [manifest.config, ...manifest.layers]) {
    const redirect = await fetch(`${proxy.url}/v2/${REPOSITORY}/blobs/${digest}`, { redirect: 'manual' });
    const location = redirect.headers.get('location');
    if (redirect.status !== 307 || !location) throw new Error(`blob ${digest}: expected 307, got ${redirect.status}`);
    const blob = Buffer.from(await (await fetch(location)).arrayBuffer());
    if (sha256(blob) !== digest || blob.length !== size) throw new Error(`blob ${digest}: storage returned other bytes`);
    note(`storage GET ${shorten(new URL(location).pathname)} -> ${blob.length} bytes, sha256 verified`);
  }
}

async function verifyDir(dir, image) {
  for (const { digest } of image.blobs) {
    if (sha256(await readFile(join(dir, digest.slice(7)))) !== digest) throw new Error(`pulled ${digest} does not match`);
  }
}

/** distribution writes to its filesystem here; in production it writes to the same container. */
async function copyBlobsToStorage(storageRoot, container) {
  const base = join(storageRoot, 'docker', 'registry', 'v2', 'blobs');
  let count = 0;
  const walk = async (dir) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else {
        const key = ['docker/registry/v2/blobs', ...relative(base, path).split(sep)].join('/');
        await container.getBlockBlobClient(key).uploadFile(path, { blobHTTPHeaders: { blobContentType: 'application/octet-stream' } });
        count++;
      }
    }
  };
  await walk(base);
  return count;
}

// ---- main ---------------------------------------------------------------------------------------

async function main() {
  requireDist('npm run demo');
  const work = await stack.tempDir('registry-redirect-demo-');
  say('registry-redirect demo: every server on loopback, everything stops at the end.\n');

  const host = await storageHost();
  const storage = await startAzurite(work, host);
  stepLine(`Azurite (Azure Blob emulator) at ${storage.endpoint}, container "${CONTAINER}"`);
  if (host.bind !== '127.0.0.2') note('127.0.0.2 is not available here: storage is reached as "localhost", the proxy as 127.0.0.1');

  const registryBin = findBinary('docker-registry');
  let upstream;
  if (registryBin) {
    const storage = join(work, 'registry-storage');
    upstream = { url: await startDistribution(stack, registryBin, work, storage), storage, kind: 'distribution' };
    stepLine(`upstream registry: distribution (${registryBin}) at ${upstream.url}, storage.redirect.disable: true`);
  } else {
    upstream = await startNodeRegistry(storage.container, storage.endpoint);
    stepLine(`upstream registry: the Node registry of examples/express-node-registry at ${upstream.url}`);
    note('docker-registry is not installed (Debian/Ubuntu: apt-get install docker-registry), so the demo');
    note('uses the Node registry instead; it stores blobs in Azurite itself.');
  }

  const proxy = await startProxy(work, upstream.url, storage.endpoint);
  stepLine(`registry-redirect at ${proxy.url} (what \`registry-redirect serve --config proxy.yaml\` runs), with:`);
  for (const line of proxy.yaml.trimEnd().split('\n')) note(`  ${line}`);

  const image = makeImage();
  const skopeoBin = findBinary('skopeo');
  const ref = `docker://${proxy.hostPort}/${REPOSITORY}:${TAG}`;
  if (skopeoBin) {
    const layout = join(work, 'image');
    await writeOciLayout(layout, image);
    await skopeo(skopeoBin, work, ['copy', '--dest-tls-verify=false', `oci:${layout}:latest`, ref]);
    stepLine(`pushed ${REPOSITORY}:${TAG} (${image.blobs.length} blobs) through the proxy with skopeo: uploads pass through to the registry`);
  } else {
    await pushWithFetch(proxy, image);
    stepLine(`pushed ${REPOSITORY}:${TAG} (${image.blobs.length} blobs) through the proxy with fetch (skopeo is not installed; apt-get install skopeo)`);
  }
  if (upstream.kind === 'distribution') {
    const copied = await copyBlobsToStorage(upstream.storage, storage.container);
    note(`shared storage: copied ${copied} blobs from the registry's filesystem into Azurite. In production the`);
    note('registry writes to the same bucket or container the signer points at (this distribution build has no azure driver).');
  }

  const pullStart = proxy.trail.length;
  if (skopeoBin) {
    const out = join(work, 'pulled');
    await skopeo(skopeoBin, work, ['copy', '--src-tls-verify=false', ref, `dir:${out}`]);
    await verifyDir(out, image);
    stepLine(`pulled ${REPOSITORY}:${TAG} through the proxy with skopeo: it followed each 307 to storage and verified every digest`);
  } else {
    stepLine(`pull walk-through with fetch: manifest from the registry, each blob via a 307 to storage`);
    await pullWithFetch(proxy, image);
  }

  const pull = proxy.trail.slice(pullStart);
  stepLine('what the proxy answered during the pull:');
  for (const e of pull) {
    note(`${e.method} ${shorten(e.path)} -> ${e.status}${e.location ? ` Location: ${shorten(String(e.location))}` : ''}`);
  }
  const blobGets = pull.filter((e) => e.method === 'GET' && /\/blobs\/sha256:/.test(e.path));
  const redirected = blobGets.filter((e) => e.status === 307 && String(e.location).startsWith(storage.endpoint));
  const wanted = new Set(image.blobs.map((b) => b.digest));
  const missing = [...wanted].filter((d) => !redirected.some((e) => e.path.endsWith(d)));
  say('');
  if (missing.length > 0) throw new Error(`blobs not redirected to storage: ${missing.join(', ')}`);
  say(`${redirected.length} of ${blobGets.length} blob GETs answered with 307 to storage: the layer bytes never went through the proxy or the registry.`);
}

let exitCode = 0;
const timer = setTimeout(() => {
  say(`\ndemo: still not done after ${DEADLINE_MS} ms; stopping everything`);
  exitCode = 1;
  void stack.stop().then(() => process.exit(1));
}, DEADLINE_MS);

process.once('SIGINT', () => {
  say('\ndemo: interrupted; stopping everything');
  void stack.stop().then(() => process.exit(130));
});

try {
  await main();
} catch (err) {
  say(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}`);
  exitCode = 1;
} finally {
  await stack.stop();
  clearTimeout(timer);
  say('stopped everything.');
  process.exitCode = exitCode;
}
