import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { startServer } from '../../src/server/server.js';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { recordingLogger } from '../helpers/proxy-server.js';
import { request } from '../support/http.js';
import { freePort } from '../support/ports.js';

const KEY = 'config-origin-key-0123456789abcdef';
const BLOB = Buffer.from('origin on the main listener');
const DIGEST = digestOf(BLOB);
const HEX = DIGEST.slice(7);
const root = mkdtempSync(join(tmpdir(), 'rr-origin-config-'));

let upstream: FakeUpstream;
beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
  mkdirSync(join(root, 'docker/registry/v2/blobs/sha256', HEX.slice(0, 2), HEX), { recursive: true });
  writeFileSync(join(root, 'docker/registry/v2/blobs/sha256', HEX.slice(0, 2), HEX, 'data'), BLOB);
});
afterAll(async () => {
  await upstream.close();
  rmSync(root, { recursive: true, force: true });
});

const config = (origin: Record<string, unknown>, listen = '127.0.0.1:15080') => buildConfig({ listen, upstream: upstream.url, signer: { origin: { root, key: KEY, ...origin } } });

describe('signer.origin in the server config', () => {
  it('without listen or baseUrl: served on the main listener under /_origin, with a warning that it shares the host name', async () => {
    const port = await freePort();
    const logger = recordingLogger();
    const running = await startServer(config({}, `127.0.0.1:${port}`), logger);
    try {
      expect(logger.text()).toMatch(/Go clients \(podman, skopeo, containerd\) would send registry credentials to it/);
      // A client reaching the registry by the listener's own name: the same-host guard proxies.
      const same = await request(`${running.url}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: BASIC } });
      expect(same.status).toBe(200);
      expect(same.body.equals(BLOB)).toBe(true);
      // Clients that reach the registry by another name (a front, a CDN host) get the 307.
      const res = await request(`${running.url}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: BASIC, Host: 'registry.example.com' } });
      expect(res.status).toBe(307);
      const location = new URL(res.headers.location!);
      expect(location.origin).toBe(running.url);
      expect(location.pathname).toBe(`/_origin/docker/registry/v2/blobs/sha256/${HEX.slice(0, 2)}/${HEX}/data`);
      const blob = await request(location);
      expect(blob.status).toBe(200);
      expect(blob.body.equals(BLOB)).toBe(true);
      expect(running.originUrls).toEqual([]);
      // The registry API is untouched on the same listener.
      expect((await request(`${running.url}/v2/`, { headers: { Authorization: BASIC } })).status).toBe(200);
    } finally {
      await running.close();
    }
  });

  it('with listen: a separate listener at that address, and no warning on another host name', async () => {
    const [port, originPort] = await Promise.all([freePort(), freePort('127.0.0.2')]);
    const logger = recordingLogger();
    const running = await startServer(config({ listen: `127.0.0.2:${originPort}` }, `127.0.0.1:${port}`), logger);
    try {
      expect(logger.text()).not.toMatch(/credentials/);
      expect(running.originUrls).toEqual([`http://127.0.0.2:${originPort}`]);
      const res = await request(`${running.url}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: BASIC } });
      expect(res.headers.location!.startsWith(`http://127.0.0.2:${originPort}/docker/`)).toBe(true);
      expect((await request(res.headers.location!)).status).toBe(200);
      // Not served on the main listener then.
      expect((await request(`${running.url}/_origin/x`)).status).not.toBe(200);
    } finally {
      await running.close();
    }
  });

  it('baseUrl (a CDN) with listen: URLs point at the CDN, the path prefix is kept', () => {
    const c = config({ listen: '127.0.0.2:15081', baseUrl: 'https://blobs.example.com/reg' });
    const url = (c.signer.sign({ repository: 'team/app', digest: DIGEST, method: 'GET' }) as { url: string }).url;
    expect(url.startsWith(`https://blobs.example.com/reg/docker/registry/v2/blobs/sha256/${HEX.slice(0, 2)}/${HEX}/data?expires=`)).toBe(true);
  });

  it('refuses configs that could not work, saying what to write', () => {
    expect(() => config({}, '0.0.0.0:8080')).toThrow(/signer.origin: write listen .* or baseUrl/);
    expect(() => config({ listen: '0.0.0.0:15081' })).toThrow(/baseUrl: missing/);
    expect(() => config({ baseUrl: 'https://blobs.example.com' })).toThrow(/needs a path prefix/);
    expect(() => config({ baseUrl: 'https://blobs.example.com/v2' })).toThrow(/belongs to the registry API/);
    expect(() => config({ key: 'short' })).toThrow(/16 characters/);
    expect(() => config({ token: 'md5' })).toThrow(/hmac-sha256 \(default\), cloudflare/);
    expect(() => config({ rootDirectory: '/x' })).toThrow(/rootDirectory/);
  });
});

describe('signer.origin and live reloads', () => {
  it('a reload that moves an origin listener is rejected and the running config keeps serving; a new key is applied', async () => {
    const [port, originPort, otherPort] = await Promise.all([freePort(), freePort('127.0.0.2'), freePort('127.0.0.2')]);
    const file = join(root, 'reload.yaml');
    const write = (key: string, listen: number) =>
      writeFileSync(file, `listen: 127.0.0.1:${port}\nupstream: ${upstream.url}\nsigner:\n  origin:\n    root: ${root}\n    key: ${key}\n    listen: 127.0.0.2:${listen}\nreload: { watch: false }\n`);
    write(KEY, originPort);
    const { loadConfig } = await import('../../src/server/config.js');
    const logger = recordingLogger();
    const running = await startServer(await loadConfig(file), logger, { configPath: file });
    try {
      const locate = async () => (await request(`${running.url}/v2/team/app/blobs/${DIGEST}`, { headers: { Authorization: BASIC } })).headers.location!;
      const first = await locate();
      write(KEY, otherPort);
      const moved = await running.reload('test');
      expect(moved.ok).toBe(false);
      expect(moved.ok ? '' : moved.error).toMatch(/origin listener .* needs a restart/);
      expect(await locate()).toBe(first);
      expect((await request(first)).status).toBe(200);
      write('another-key-0123456789abcdef', originPort);
      expect((await running.reload('test')).ok).toBe(true);
      const second = await locate();
      expect((await request(second)).status).toBe(200);
      expect((await request(first)).status).toBe(403);
    } finally {
      await running.close();
    }
  });
});
