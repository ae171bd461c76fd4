/**
 * Push steering end to end: skopeo pushes through `serve` (started from a YAML file) with push steering
 * on, to a real distribution 2.8 on 127.0.0.2 that is both the upstream and the write endpoint.
 * The proxy's client-side sockets are counted byte for byte (`socket.bytesRead`) and every request
 * it receives is recorded, so "the proxy relays 0 upload body bytes" is measured, not assumed.
 * - htpasswd, ~50 MB in 4 layers: push, pull back digest-verified, 0 upload bytes through the proxy;
 * - steering off (same counters): the layer bytes do pass through, which proves the counter counts;
 * - Docker token auth (distribution verifies the JWTs): the steered session keeps working;
 * - `mode: redirect`: works anonymously; with htpasswd skopeo fails (observed error asserted);
 * - start-up and `check`: object storage and the proxy itself are refused as endpoints; reload.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/server/config.js';
import { runCheck } from '../../src/server/check.js';
import { startServer } from '../../src/server/server.js';
import type { Logger } from '../../src/types.js';
import { requireBinary } from '../support/binaries.js';
import { request } from '../support/http.js';
import { makeOciImage, type OciImage } from '../support/oci-image.js';
import { freePort } from '../support/ports.js';
import { startRegistry, type RunningRegistry } from '../support/registry.js';
import { skopeoPull, skopeoPush, verifyPulledDir, type Creds } from '../support/skopeo.js';
import { startTokenServer, type RunningTokenServer } from '../support/token-auth.js';

const has = requireBinary('docker-registry') && requireBinary('skopeo') && requireBinary('openssl');
const creds: Creds = { username: 'pusher', password: 'push-e2e-Pa55word' };
const MiB = 1 << 20;

function recordingLogger(): Logger & { lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = (obj: object, msg?: string) => void lines.push({ ...obj, msg });
  return { lines, debug: log, info: log, warn: log, error: log };
}

/** What reached the proxy: every request line and every byte its client sockets read. */
interface Traffic {
  requests: Array<{ method: string; path: string; contentLength: number }>;
  bytesRead(): number;
  /** Body bytes of PATCH/PUT to upload sessions that reached the proxy (by Content-Length). */
  uploadBodyBytes(): number;
}

function record(server: http.Server): Traffic {
  const sockets = new Set<Socket>();
  const requests: Traffic['requests'] = [];
  server.on('connection', (s: Socket) => sockets.add(s));
  server.prependListener('request', (req: http.IncomingMessage) => {
    requests.push({ method: req.method ?? '', path: (req.url ?? '').split('?')[0]!, contentLength: Number(req.headers['content-length'] ?? 0) });
  });
  return {
    requests,
    bytesRead: () => [...sockets].reduce((n, s) => n + s.bytesRead, 0),
    uploadBodyBytes: () => requests.filter((r) => (r.method === 'PATCH' || r.method === 'PUT') && r.path.includes('/blobs/uploads/')).reduce((n, r) => n + r.contentLength, 0),
  };
}

const imageBytes = (image: OciImage) => image.layers.reduce((n, l) => n + l.size, 0) + image.configSize + image.manifestSize;

describe.skipIf(!has)('push steering end to end (distribution 2.8, skopeo, serve)', () => {
  let work: string;
  const stops: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-push-e2e-'));
  });
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  }, 30_000);

  /** A fresh image each time: skopeo's blob-info cache would otherwise mount instead of uploading. */
  const image = (name: string, layers: number[]) =>
    makeOciImage(join(work, `${name}-${randomUUID()}`), { layers: layers.map((size) => ({ size, seed: `${name}-${randomUUID()}` })) });

  const serve = async (registry: RunningRegistry, extra: Record<string, unknown>, logger: Logger = recordingLogger()) => {
    const configPath = join(work, `proxy-${randomUUID()}.yaml`);
    await writeFile(
      configPath,
      stringify({
        listen: '127.0.0.1:0',
        upstream: registry.url,
        // Blob pulls are served by the proxy here: this file is about pushes (no storage to prove).
        signer: { hmac: { baseUrl: 'https://cdn.invalid', key: 'unused', preset: 'cloudflare' } },
        preflight: 'off',
        rollout: { default: 'proxy' },
        log: { level: 'silent', requests: false },
        reload: { watch: false },
        ...extra,
      }),
    );
    const running = await startServer(await loadConfig(configPath), logger, { configPath });
    stops.push(() => running.close());
    return { running, configPath, traffic: record(running.server as http.Server), hostPort: new URL(running.url).host };
  };

  describe('htpasswd', () => {
    let registry: RunningRegistry;
    beforeAll(async () => {
      registry = await startRegistry({ host: '127.0.0.2', auth: { htpasswd: { users: { [creds.username]: creds.password } } } });
      stops.push(() => registry.stop());
    }, 30_000);

    it('steering on: a ~50 MB, 4-layer image is pushed with 0 upload body bytes through the proxy, and pulls back digest-verified', async () => {
      const img = await image('big', [20 * MiB, 16 * MiB, 12 * MiB, 2 * MiB]);
      const logger = recordingLogger();
      const { running, traffic, hostPort } = await serve(registry, { push: { endpoint: registry.url }, metrics: {} }, logger);
      const pushed = await skopeoPush(img, `docker://${hostPort}/team/big:v1`, creds, { timeoutMs: 90_000 });
      expect(pushed.code, pushed.stderr).toBe(0);

      const total = imageBytes(img);
      const read = traffic.bytesRead();
      const uploadsSeen = traffic.requests.filter((r) => r.path.includes('/blobs/uploads/'));
      console.log(`push-steer: image ${total} bytes; proxy read ${read} bytes from skopeo in ${traffic.requests.length} requests; upload body bytes through the proxy: ${traffic.uploadBodyBytes()}`);
      expect(traffic.uploadBodyBytes()).toBe(0);
      expect(uploadsSeen.every((r) => r.method === 'POST' && r.contentLength === 0)).toBe(true);
      expect(uploadsSeen.length).toBe(img.layers.length + 1);
      // Everything the proxy read (headers, the manifest PUT) is far below one layer.
      expect(read).toBeLessThan(256 * 1024);
      expect(traffic.requests.some((r) => r.method === 'PUT' && r.path === '/v2/team/big/manifests/v1')).toBe(true);

      const metrics = await running.metrics!.render();
      expect(metrics).toContain(`registry_redirect_upload_decisions_total{action="steer",reason="default"} ${img.layers.length + 1}`);
      const steeredLines = logger.lines.filter((l) => l.msg === 'upload steered');
      expect(steeredLines).toHaveLength(img.layers.length + 1);
      expect(steeredLines.every((l) => l.endpoint === registry.url && l.repository === 'team/big')).toBe(true);
      expect(JSON.stringify(logger.lines)).not.toContain(creds.password);

      const out = join(work, 'pulled-big');
      const pulled = await skopeoPull(`docker://${hostPort}/team/big:v1`, out, creds, { timeoutMs: 90_000 });
      expect(pulled.code, pulled.stderr).toBe(0);
      expect(await verifyPulledDir(out, img)).toEqual({ ok: true, problems: [], manifestMatches: true });
    }, 180_000);

    it('steering off: the same counters see every layer byte pass through (the counter counts)', async () => {
      const img = await image('off', [3 * MiB, 1 * MiB]);
      const { traffic, hostPort } = await serve(registry, {});
      const pushed = await skopeoPush(img, `docker://${hostPort}/team/off:v1`, creds, { timeoutMs: 60_000 });
      expect(pushed.code, pushed.stderr).toBe(0);
      const layers = img.layers.reduce((n, l) => n + l.size, 0);
      console.log(`push-proxied: layers ${layers} bytes; proxy read ${traffic.bytesRead()} bytes; upload body bytes (Content-Length) ${traffic.uploadBodyBytes()}`);
      expect(traffic.bytesRead()).toBeGreaterThan(layers);
      expect(traffic.requests.filter((r) => r.method === 'PATCH' || (r.method === 'PUT' && r.path.includes('/blobs/uploads/'))).length).toBeGreaterThanOrEqual(img.layers.length);
    }, 120_000);

    it('mode: redirect with htpasswd fails: skopeo drops Authorization on the cross-host 307 and the endpoint answers 401', async () => {
      const img = await image('redir-auth', [256 * 1024]);
      const { hostPort } = await serve(registry, { push: { endpoint: registry.url, mode: 'redirect' } });
      const pushed = await skopeoPush(img, `docker://${hostPort}/team/redir:v1`, creds, { timeoutMs: 60_000 });
      console.log(`push mode redirect + htpasswd, skopeo stderr: ${pushed.stderr.trim().split('\n').slice(-1)[0]}`);
      expect(pushed.code).not.toBe(0);
      expect(pushed.stderr).toMatch(/401|unauthorized|authentication required/i);
    }, 90_000);

    it('start-up refuses an endpoint that is object storage or the proxy itself, naming push.endpoint; check reports it; reload keeps the old config', async () => {
      // An S3-like answer: 403 with an XML body, no registry challenge.
      const s3 = http.createServer((_req, res) => res.writeHead(403, { 'Content-Type': 'application/xml' }).end('<Error><Code>AccessDenied</Code></Error>'));
      await new Promise<void>((resolve) => s3.listen(0, '127.0.0.2', resolve));
      stops.push(() => new Promise((resolve) => s3.close(() => resolve())));
      const s3Url = `http://127.0.0.2:${(s3.address() as { port: number }).port}`;
      await expect(serve(registry, { push: { endpoint: s3Url } })).rejects.toThrow(/^push\.endpoint: http:\/\/127\.0\.0\.2:\d+ does not speak the registry API: GET \/v2\/ -> 403/);

      const port = await freePort();
      await expect(serve(registry, { listen: `127.0.0.1:${port}`, push: { endpoint: `http://127.0.0.1:${port}` } })).rejects.toThrow(/^push\.endpoint: .* is a registry-redirect proxy \(this one or another\), not the registry/);

      const { configPath, running } = await serve(registry, { push: { endpoint: registry.url } });
      const lines: string[] = [];
      expect(await runCheck({ config: configPath }, (l) => lines.push(l))).toBe(0);
      expect(lines.at(-1)).toBe(`ok    push.endpoint: ${registry.url} speaks the registry API: GET /v2/ -> 401 with a Basic challenge`);

      // Reload onto a bad endpoint: rejected, uploads still steered; onto no push: uploads proxied.
      const good = await loadConfig(configPath);
      const yaml = (push: unknown) =>
        stringify({ listen: '127.0.0.1:0', upstream: registry.url, signer: { hmac: { baseUrl: 'https://cdn.invalid', key: 'unused', preset: 'cloudflare' } }, preflight: 'off', rollout: { default: 'proxy' }, log: { level: 'silent', requests: false }, reload: { watch: false }, ...(push ? { push } : {}) });
      await writeFile(configPath, yaml({ endpoint: s3Url }));
      const rejected = await running.reload('test');
      expect(rejected).toMatchObject({ ok: false });
      expect(!rejected.ok && rejected.error).toMatch(/^push\.endpoint: .* does not speak the registry API/);
      const basic = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      const post = () => request(`${running.url}/v2/team/reload/blobs/uploads/`, { method: 'POST', headers: { Authorization: basic, 'Content-Length': '0' } });
      expect(String((await post()).headers.location).startsWith(`${good.push!.endpoint as string}/v2/`)).toBe(true);
      await writeFile(configPath, yaml(undefined));
      expect(await running.reload('test')).toMatchObject({ ok: true });
      expect(String((await post()).headers.location).startsWith(`${running.url}/v2/`)).toBe(true);
      lines.length = 0;
      await writeFile(configPath, yaml({ endpoint: s3Url }));
      expect(await runCheck({ config: configPath }, (l) => lines.push(l))).toBe(1);
      expect(lines.at(-1)).toMatch(/^FAIL {2}push\.endpoint: .* does not speak the registry API/);
    }, 60_000);
  });

  describe('anonymous registry', () => {
    let registry: RunningRegistry;
    beforeAll(async () => {
      registry = await startRegistry({ host: '127.0.0.2' });
      stops.push(() => registry.stop());
    }, 30_000);

    it('mode: redirect works anonymously: the POST is answered 307 and no upload byte reaches the proxy', async () => {
      const img = await image('redir-anon', [2 * MiB, 512 * 1024]);
      const { traffic, hostPort, running } = await serve(registry, { push: { endpoint: registry.url, mode: 'redirect' }, metrics: {} });
      const pushed = await skopeoPush(img, `docker://${hostPort}/team/anon:v1`, undefined, { timeoutMs: 60_000 });
      expect(pushed.code, pushed.stderr).toBe(0);
      expect(traffic.uploadBodyBytes()).toBe(0);
      expect(traffic.bytesRead()).toBeLessThan(128 * 1024);
      expect(await running.metrics!.render()).toMatch(/registry_redirect_upload_decisions_total\{action="redirect",reason="default"\} [1-9]/);
      const out = join(work, 'pulled-anon');
      const pulled = await skopeoPull(`docker://${hostPort}/team/anon:v1`, out, undefined, { timeoutMs: 60_000 });
      expect(pulled.code, pulled.stderr).toBe(0);
      expect((await verifyPulledDir(out, img)).ok).toBe(true);
    }, 120_000);
  });

  describe('Docker token auth', () => {
    let registry: RunningRegistry;
    let tokens: RunningTokenServer;
    beforeAll(async () => {
      tokens = await startTokenServer({ users: { [creds.username]: creds.password } });
      stops.push(() => tokens.stop());
      registry = await startRegistry({ host: '127.0.0.2', auth: tokens.registryAuth });
      stops.push(() => registry.stop());
    }, 30_000);

    it('steered sessions work with bearer tokens: push with 0 upload bytes through the proxy, pull back verified', async () => {
      const img = await image('token', [3 * MiB, 1 * MiB, 300 * 1024]);
      const { traffic, hostPort } = await serve(registry, { push: { endpoint: registry.url } });
      const pushed = await skopeoPush(img, `docker://${hostPort}/team/tok:v1`, creds, { timeoutMs: 60_000 });
      expect(pushed.code, pushed.stderr).toBe(0);
      expect(traffic.uploadBodyBytes()).toBe(0);
      expect(traffic.bytesRead()).toBeLessThan(128 * 1024);
      expect(tokens.requests.some((r) => r.user === creds.username && r.granted.some((g) => g.name === 'team/tok' && g.actions.includes('push')))).toBe(true);
      const out = join(work, 'pulled-tok');
      const pulled = await skopeoPull(`docker://${hostPort}/team/tok:v1`, out, creds, { timeoutMs: 60_000 });
      expect(pulled.code, pulled.stderr).toBe(0);
      expect((await verifyPulledDir(out, img)).ok).toBe(true);
    }, 120_000);
  });
});
