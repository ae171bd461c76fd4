// Real peers for the bench (JS mirrors of test/support/): distribution 2.8, s3rver, Azurite,
// skopeo and a deterministic OCI image. Everything binds loopback and is stopped by procs.stopAll().
import { spawn } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { clearTimeout, setTimeout } from 'node:timers';
import { gzipSync } from 'node:zlib';
import { assertLoopback, freePort, start, waitForHttp } from './procs.js';

const require = createRequire(import.meta.url);

/** Environment for distribution: its s3-aws driver panics at start when AWS_CA_BUNDLE is set. */
function registryEnv() {
  const env = { ...process.env };
  delete env.AWS_CA_BUNDLE;
  for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) delete env[k];
  return env;
}

/**
 * distribution 2.8 (`/usr/bin/docker-registry`). `storage` is its storage block (default:
 * filesystem under `dir`); `redirect: true` lets it answer blob GETs with its own 307.
 */
export async function startRegistry({ dir, name = 'registry', host = '127.0.0.1', storage, redirect = false }) {
  assertLoopback(host);
  const root = join(dir, `${name}-storage`);
  const port = await freePort(host);
  const config = {
    version: '0.1',
    log: { level: 'error', formatter: 'text', accesslog: { disabled: true } },
    storage: {
      ...(storage ?? { filesystem: { rootdirectory: root } }),
      delete: { enabled: true },
      redirect: { disable: !redirect },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: `${host}:${port}`, secret: randomBytes(16).toString('hex') },
  };
  const file = join(dir, `${name}.yml`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  const proc = start('/usr/bin/docker-registry', ['serve', file], { env: registryEnv(), cwd: dir, label: name });
  const url = `http://${host}:${port}`;
  await waitForHttp(`${url}/v2/`, { proc, ok: (s) => s === 200 || s === 401 });
  return { proc, url, hostPort: `${host}:${port}`, storageRoot: root, pids: () => [proc.pid] };
}

/** s3rver (Node) on `host` with bucket `bucket`; credentials S3RVER/S3RVER. */
export async function startS3rver({ dir, host = '127.0.0.2', bucket = 'registry' }) {
  const data = join(dir, 's3rver');
  mkdirSync(data, { recursive: true });
  const port = await freePort(host);
  const main = join(dirname(require.resolve('s3rver/package.json')), 'bin', 's3rver.js');
  const proc = start(process.execPath, [main, '-d', data, '-a', host, '-p', String(port), '--configure-bucket', bucket, '--silent'], { label: 's3rver' });
  const endpoint = `http://${host}:${port}`;
  await waitForHttp(`${endpoint}/`, { proc, ok: (s) => s > 0 });
  return { proc, endpoint, bucket, pids: () => [proc.pid] };
}

/** Azurite (blob service) on `host`; account devstoreaccount1. */
export async function startAzurite({ dir, host = '127.0.0.2' }) {
  const location = join(dir, 'azurite');
  mkdirSync(location, { recursive: true });
  const port = await freePort(host);
  const main = join(dirname(require.resolve('azurite/package.json')), 'dist', 'src', 'blob', 'main.js');
  const env = { ...process.env };
  delete env.AZURITE_ACCOUNTS;
  const proc = start(
    process.execPath,
    [main, '--blobHost', host, '--blobPort', String(port), '--location', location, '--skipApiVersionCheck', '--loose', '--silent', '--disableTelemetry', '--disableProductStyleUrl'],
    { env, cwd: location, label: 'azurite' },
  );
  const endpoint = `http://${host}:${port}/devstoreaccount1`;
  await waitForHttp(`${endpoint}?comp=properties&restype=service`, { proc, ok: (s) => s > 0 });
  return { proc, endpoint, pids: () => [proc.pid] };
}

/** Regular files under `dir`, recursively (absolute paths). */
export function listFiles(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Keys and paths of a filesystem registry's tree (`docker/registry/v2/...`), optionally filtered. */
export function registryObjects(storageRoot, keep = () => true) {
  return listFiles(storageRoot)
    .map((file) => ({ file, key: relative(storageRoot, file).split(sep).join('/'), size: statSync(file).size }))
    .filter((o) => keep(o.key));
}

/** Deterministic incompressible bytes (AES-256-CTR keystream keyed by the seed). */
export function pseudoRandomBytes(seed, size) {
  const key = createHash('sha256').update(`registry-redirect-bench:${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

const sha256 = (data) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

function tarOf(name, content) {
  const h = Buffer.alloc(512, 0);
  const octal = (v, w) => `${v.toString(8).padStart(w - 1, '0')}\0`;
  h.write(name, 0, 100, 'utf8');
  h.write(octal(0o644, 8), 100, 8, 'ascii');
  h.write(octal(0, 8), 108, 8, 'ascii');
  h.write(octal(0, 8), 116, 8, 'ascii');
  h.write(octal(content.length, 12), 124, 12, 'ascii');
  h.write(octal(0, 12), 136, 12, 'ascii');
  h.write('        ', 148, 8, 'ascii');
  h.write('0', 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  const pad = (512 - (content.length % 512)) % 512;
  return Buffer.concat([h, content, Buffer.alloc(pad), Buffer.alloc(1024)]);
}

/** An OCI image layout in `dir` with layers of the given payload sizes (no docker needed). */
export function makeOciImage(dir, layerSizes, seed = 'bench') {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const write = (data) => {
    const digest = sha256(data);
    writeFileSync(join(blobs, digest.slice(7)), data);
    return { digest, size: data.length };
  };
  const layers = layerSizes.map((size, i) => {
    const tar = tarOf(`layer-${i}.bin`, pseudoRandomBytes(`${seed}-${i}`, size));
    return { ...write(gzipSync(tar, { level: 1 })), diffId: sha256(tar) };
  });
  const config = write(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) } })));
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
    }),
  );
  const manifest = write(manifestBytes);
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifest.digest, size: manifest.size, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }));
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const total = layers.reduce((s, l) => s + l.size, 0) + config.size;
  return { dir, ref: `oci:${dir}:latest`, manifest, config, layers, blobBytes: total };
}

/**
 * Runs skopeo isolated (temp HOME, auth file, policy; it would otherwise read the user's
 * credentials) and bounded (SIGKILL after `timeoutMs`). Resolves { code, stderr, seconds }.
 */
export function skopeo(args, { timeoutMs = 120_000 } = {}) {
  const home = mkdtempSync(join(tmpdir(), 'rr-bench-skopeo-'));
  for (const d of ['.config/containers', 'run', '.docker', 'tmp']) mkdirSync(join(home, d), { recursive: true, mode: 0o700 });
  const policy = join(home, 'policy.json');
  writeFileSync(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  writeFileSync(join(home, 'auth.json'), '{"auths":{}}');
  writeFileSync(join(home, 'registries.conf'), 'unqualified-search-registries = []\n');
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_RUNTIME_DIR: join(home, 'run'),
    DOCKER_CONFIG: join(home, '.docker'),
    REGISTRY_AUTH_FILE: join(home, 'auth.json'),
    CONTAINERS_REGISTRIES_CONF: join(home, 'registries.conf'),
    TMPDIR: join(home, 'tmp'),
    LANG: 'C',
  };
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/skopeo', ['--policy', policy, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr = (stderr + c).slice(-8_192)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      rmSync(home, { recursive: true, force: true });
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      rmSync(home, { recursive: true, force: true });
      resolve({ code: code ?? -1, stderr, seconds: (performance.now() - started) / 1_000 });
    });
  });
}

export async function skopeoPush(image, ref) {
  const r = await skopeo(['copy', '--dest-tls-verify=false', image.ref, ref]);
  if (r.code !== 0) throw new Error(`skopeo push ${ref} failed: ${r.stderr}`);
  return r;
}
