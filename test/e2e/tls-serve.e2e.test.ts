/**
 * `serve` with `tls:`: the proxy is the HTTPS endpoint clients talk to, as distribution's
 * `http.tls` is. Real parts: a CA made by openssl, distribution 2.8.2 (htpasswd) upstream,
 * Azurite as storage, skopeo verifying the proxy's certificate, curl negotiating h2 by ALPN.
 */
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { silentLogger } from '../../src/log.js';
import { startAzurite, type RunningAzurite } from '../support/azurite.js';
import { requireBinary } from '../support/binaries.js';
import { h2Request, h2Session } from '../support/h2.js';
import { request, waitFor } from '../support/http.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { copyRegistryBlobsToAzure } from '../support/seed-storage.js';
import { skopeo, verifyPulledDir } from '../support/skopeo.js';
import { makeTestCa, type TestCa } from '../support/tls.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo') && requireBinary('openssl') && requireBinary('curl');
const alice = { username: 'alice', password: 'alice-pw' };
const basic = `Basic ${Buffer.from(`${alice.username}:${alice.password}`).toString('base64')}`;

/** The certificate a fresh TLS connection to `url` is served, by SHA-256 fingerprint. */
function servedFingerprint(url: string, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${url}/healthz`, { ca, agent: false }, (res) => {
      const fp = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
      res.resume();
      res.on('end', () => resolve(fp));
    });
    req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

function fingerprintOf(certFile: string): string {
  return new X509Certificate(readFileSync(certFile)).fingerprint256;
}

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '10', ...args], { timeout: 15_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe.skipIf(!has)('serve over HTTPS (tls:) with HTTP/2', () => {
  let ca: TestCa;
  let caPem: Buffer;
  let registry: RunningRegistry;
  let azurite: RunningAzurite;
  let proxy: RunningServer;
  let work: string;
  let certDir: string;
  let image: OciImage;
  let proxyHost: string;
  let configPath: string;

  /** Puts a leaf's cert/key where the proxy reads them, each by atomic rename. */
  const install = (leaf: { cert: string; key: string }, dir = certDir) => {
    copyFileSync(leaf.cert, join(dir, 'tls.crt.tmp'));
    copyFileSync(leaf.key, join(dir, 'tls.key.tmp'));
    renameSync(join(dir, 'tls.key.tmp'), join(dir, 'tls.key'));
    renameSync(join(dir, 'tls.crt.tmp'), join(dir, 'tls.crt'));
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-tls-e2e-'));
    ca = makeTestCa();
    caPem = readFileSync(ca.cert);
    certDir = join(work, 'certs');
    mkdirSync(certDir);
    install(ca.issue('proxy-1'));
    [registry, azurite] = await Promise.all([startRegistry({ auth: { htpasswd: { users: { [alice.username]: alice.password } } } }), startAzurite({ host: '127.0.0.2' })]);
    await azurite.containerClient('registry').createIfNotExists();
    configPath = join(work, 'proxy.yaml');
    writeFileSync(
      configPath,
      `listen: 127.0.0.1:0
upstream: ${registry.url}
tls:
  certificate: ${join(certDir, 'tls.crt')}
  key: ${join(certDir, 'tls.key')}
signer:
  azure: { account: ${azurite.account}, accountKey: "${azurite.accountKey}", container: registry, endpoint: "${azurite.endpoint}" }
reload: { watch: false }
log: { requests: false }
`,
    );
    proxy = await startServer(await loadConfig(configPath), silentLogger, { configPath });
    proxyHost = new URL(proxy.url).host;
    image = await makeOciImage(join(work, 'img'), { layers: [{ size: 2 << 20, seed: 'tls-a' }, { size: 30_000, seed: 'tls-b' }] });
  }, 60_000);

  afterAll(async () => {
    await proxy?.close();
    await Promise.all([registry?.stop(), azurite?.stop()]);
    ca?.remove();
    if (work) await rm(work, { recursive: true, force: true });
  }, 30_000);

  it('listens on https:// and refuses plain HTTP on the TLS port', async () => {
    expect(proxy.url.startsWith('https://127.0.0.1:')).toBe(true);
    expect((await request(`${proxy.url}/healthz`, { tls: { ca: caPem } })).status).toBe(200);
    await expect(request(`${proxy.url.replace('https:', 'http:')}/healthz`, { timeoutMs: 2_000 })).rejects.toThrow();
  });

  it('skopeo pushes and pulls through the proxy over verified HTTPS (CA as ca.crt in --*-cert-dir); blobs come from storage via the 307', async () => {
    const certs = join(work, 'skopeo-certs');
    mkdirSync(certs);
    copyFileSync(ca.cert, join(certs, 'ca.crt'));
    const creds = `${alice.username}:${alice.password}`;
    const push = await skopeo(['copy', `--dest-cert-dir=${certs}`, `--dest-creds=${creds}`, image.ref, `docker://${proxyHost}/team/app:v1`]);
    expect(push.code, push.stderr).toBe(0);
    await copyRegistryBlobsToAzure(registry.storageRoot, azurite.containerClient('registry'));
    azurite.requests.length = 0;
    const out = join(work, 'pulled');
    const pull = await skopeo(['copy', `--src-cert-dir=${certs}`, `--src-creds=${creds}`, `docker://${proxyHost}/team/app:v1`, `dir:${out}`]);
    expect(pull.code, pull.stderr).toBe(0);
    expect((await verifyPulledDir(out, image)).problems).toEqual([]);
    const served = azurite.requests.filter((r) => r.method === 'GET' && r.status === 200);
    expect(served.length).toBeGreaterThanOrEqual(image.layers.length);
    expect(azurite.requests.every((r) => r.headers.authorization === undefined)).toBe(true);
    // Without the CA, skopeo refuses the proxy (tls-verify is on by default).
    const untrusted = await skopeo(['inspect', `--creds=${creds}`, `docker://${proxyHost}/team/app:v1`], { timeoutMs: 30_000 });
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stderr).toMatch(/certificate/);
  }, 120_000);

  it('curl --http2 negotiates h2 by ALPN and gets the 307; curl --http1.1 gets HTTP/1.1', async () => {
    const layer = image.layers[0]!;
    const h2 = await curl(['--http2', '--cacert', ca.cert, '-o', '/dev/null', '-D', '-', '-w', 'version=%{http_version}\n', '-u', `${alice.username}:${alice.password}`, `${proxy.url}/v2/team/app/blobs/${layer.digest}`]);
    expect(h2.code, h2.stderr).toBe(0);
    expect(h2.stdout).toMatch(/^HTTP\/2 307/m);
    expect(h2.stdout).toContain(`location: ${azurite.endpoint}/registry/`);
    expect(h2.stdout).toContain('version=2');
    // Response headers are legal HTTP/2 (curl would fail on connection-specific ones).
    expect(h2.stdout).not.toMatch(/^(connection|keep-alive|transfer-encoding):/im);
    const h1 = await curl(['--http1.1', '--cacert', ca.cert, '-o', '/dev/null', '-w', '%{http_version} %{http_code}', '-u', `${alice.username}:${alice.password}`, `${proxy.url}/v2/`]);
    expect(h1.stdout).toBe('1.1 200');
  });

  it('HTTP/2 pass-through streams manifests and uploads, and upload Locations point at the proxy\'s :authority', async () => {
    const session = await h2Session(proxy.url, { ca: caPem });
    try {
      const manifest = await session.request(`/v2/team/app/manifests/v1`, { headers: { authorization: basic, accept: 'application/vnd.oci.image.manifest.v1+json' } });
      expect(manifest.alpnProtocol).toBe('h2');
      expect(manifest.status).toBe(200);
      expect(manifest.headers['docker-content-digest']).toBe(image.manifestDigest);
      const post = await session.request('/v2/team/app/blobs/uploads/', { method: 'POST', headers: { authorization: basic } });
      expect(post.status).toBe(202);
      expect(post.headers.location!.startsWith(`https://${proxyHost}/v2/team/app/blobs/uploads/`)).toBe(true);
      const body = Buffer.from('hello over h2');
      const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
      const put = await session.request(`${new URL(post.headers.location!).pathname}${new URL(post.headers.location!).search}&digest=${digest}`, {
        method: 'PUT',
        headers: { authorization: basic, 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
        body,
      });
      expect(put.status, put.body.toString()).toBe(201);
      const head = await session.request(`/v2/team/app/blobs/${digest}`, { method: 'HEAD', headers: { authorization: basic } });
      expect(head.status).toBe(200);
      expect(head.headers['content-length']).toBe(String(body.length));
    } finally {
      await session.close();
    }
  });

  it('certificate rotation under traffic: 200 requests across a reload, none fails; open HTTP/2 sessions keep working; new handshakes get the new certificate', async () => {
    const before = await servedFingerprint(proxy.url, caPem);
    const kept = await h2Session(proxy.url, { ca: caPem });
    const next = ca.issue('proxy-2');
    let failures = 0;
    let done = 0;
    const errors: string[] = [];
    const one = async (i: number) => {
      try {
        const res = i % 2 === 0 ? await request(`${proxy.url}/v2/`, { headers: { authorization: basic }, tls: { ca: caPem } }) : await kept.request('/v2/', { headers: { authorization: basic } });
        if (res.status !== 200) throw new Error(`status ${res.status}`);
      } catch (err) {
        failures++;
        errors.push(String(err));
      }
      done++;
    };
    const worker = async (start: number) => {
      for (let i = start; i < 200; i += 4) {
        if (i === 100) {
          install(next);
          const result = await proxy.reload('test');
          expect(result.tls).toMatchObject({ ok: true, changed: true });
        }
        await one(i);
      }
    };
    await Promise.all([0, 1, 2, 3].map(worker));
    expect(done).toBe(200);
    expect(errors).toEqual([]);
    expect(failures).toBe(0);
    const after = await servedFingerprint(proxy.url, caPem);
    expect(after).not.toBe(before);
    expect(after).toBe(fingerprintOf(next.cert));
    // The session opened before the rotation still answers.
    expect((await kept.request('/healthz')).status).toBe(200);
    await kept.close();
  }, 60_000);

  it('a certificate with a key that does not match is rejected on reload; the old certificate keeps serving', async () => {
    const serving = await servedFingerprint(proxy.url, caPem);
    const a = ca.issue('mismatch-a');
    const b = ca.issue('mismatch-b');
    install({ cert: a.cert, key: b.key });
    const result = await proxy.reload('test');
    expect(result.tls?.ok).toBe(false);
    expect(result.tls && !result.tls.ok && result.tls.error).toMatch(/^tls\.key: .* does not match tls\.certificate/);
    expect(await servedFingerprint(proxy.url, caPem)).toBe(serving);
    // Garbage instead of PEM is refused the same way.
    writeFileSync(join(certDir, 'tls.crt'), 'not a certificate\n');
    const garbage = await proxy.reload('test');
    expect(garbage.tls && !garbage.tls.ok && garbage.tls.error).toMatch(/^tls\.certificate: .* holds no PEM certificate/);
    expect(await servedFingerprint(proxy.url, caPem)).toBe(serving);
    expect((await request(`${proxy.url}/v2/`, { headers: { authorization: basic }, tls: { ca: caPem } })).status).toBe(200);
  });
});

describe.skipIf(!has)('serve over HTTPS: file-watch rotation and mTLS (tls.clientCA)', () => {
  let ca: TestCa;
  let clientCa: TestCa;
  let work: string;
  const servers: RunningServer[] = [];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-tls-watch-'));
    ca = makeTestCa();
    clientCa = makeTestCa('registry-redirect client CA');
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    ca?.remove();
    clientCa?.remove();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const start = async (extra: string, watch: boolean) => {
    const dir = await mkdtemp(join(work, 'srv-'));
    const leaf = ca.issue(`srv-${servers.length}`);
    copyFileSync(leaf.cert, join(dir, 'tls.crt'));
    copyFileSync(leaf.key, join(dir, 'tls.key'));
    const configPath = join(dir, 'proxy.yaml');
    writeFileSync(
      configPath,
      `listen: 127.0.0.1:0
upstream: http://127.0.0.1:1
tls:
  certificate: ${join(dir, 'tls.crt')}
  key: ${join(dir, 'tls.key')}
${extra}
signer: { hmac: { baseUrl: "https://cdn.example.com", key: k, preset: cloudflare } }
reload: { watch: ${watch} }
`,
    );
    const s = await startServer(await loadConfig(configPath), silentLogger, { configPath });
    servers.push(s);
    return { server: s, dir };
  };

  it('replacing the files by rename reloads the certificate without SIGHUP (the watch is on the directory)', async () => {
    const { server, dir } = await start('', true);
    const caPem = readFileSync(ca.cert);
    const before = await servedFingerprint(server.url, caPem);
    const next = ca.issue('watched-2');
    copyFileSync(next.key, join(dir, 'tls.key.new'));
    copyFileSync(next.cert, join(dir, 'tls.crt.new'));
    renameSync(join(dir, 'tls.key.new'), join(dir, 'tls.key'));
    renameSync(join(dir, 'tls.crt.new'), join(dir, 'tls.crt'));
    await waitFor(async () => (await servedFingerprint(server.url, caPem)) === fingerprintOf(next.cert), { timeoutMs: 5_000, label: 'new certificate served' });
    expect(before).not.toBe(fingerprintOf(next.cert));
  });

  it('mTLS: a client without a certificate is refused; one with a certificate from clientCA gets through, over HTTP/1.1 and HTTP/2', async () => {
    const { server } = await start(`  clientCA: ${clientCa.cert}`, false);
    const caPem = readFileSync(ca.cert);
    await expect(request(`${server.url}/healthz`, { tls: { ca: caPem }, timeoutMs: 3_000 })).rejects.toThrow();
    await expect(h2Request(`${server.url}/healthz`, { ca: caPem, timeoutMs: 3_000 })).rejects.toThrow();
    // A certificate from another CA (the server's own) is refused too.
    const stranger = ca.issue('stranger');
    await expect(request(`${server.url}/healthz`, { tls: { ca: caPem, cert: readFileSync(stranger.cert), key: readFileSync(stranger.key) }, timeoutMs: 3_000 })).rejects.toThrow();
    const client = clientCa.issue('client');
    const tls = { ca: caPem, cert: readFileSync(client.cert), key: readFileSync(client.key) };
    expect((await request(`${server.url}/healthz`, { tls })).status).toBe(200);
    const h2 = await h2Request(`${server.url}/healthz`, tls);
    expect(h2.status).toBe(200);
    expect(h2.alpnProtocol).toBe('h2');
  });
});
