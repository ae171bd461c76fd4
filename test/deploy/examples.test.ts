import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { resolveLayout } from '../../src/layouts.js';
import type { ServerConfig } from '../../src/server/config.js';
import { AZURITE_KEY } from '../helpers/constants.js';
import { execForm, parseDockerfile } from '../helpers/dockerfile.js';
import { ROOT } from '../helpers/package.js';
import { validateProxyConfig } from '../helpers/proxy-config.js';

/**
 * examples/distribution and examples/zot put the proxy in front of a registry with docker compose.
 * No container engine runs here, so these tests check what breaks such setups in practice: the
 * registry and the signer disagreeing on bucket, container, root directory or layout; the proxy
 * not reaching the upstream service; storage on the same hostname as the registry; dedupe; the
 * image's config path; credentials in the README that do not match the htpasswd file.
 */

const read = (...path: string[]): string => readFileSync(join(ROOT, ...path), 'utf8');
type Compose = { services: Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any

const dockerfile = parseDockerfile(read('Dockerfile'));
const imageConfigPath = execForm(dockerfile.stages.at(-1)!.instructions.find((i) => i.keyword === 'CMD')!.args)!.at(-1)!;

/** The proxy service of a compose file: built from this repository, config where the image reads it, hardened. */
function expectProxyService(dir: string, compose: Compose): void {
  const proxy = compose.services.proxy;
  expect(existsSync(join(ROOT, 'examples', dir, proxy.build.context, 'Dockerfile'))).toBe(true);
  expect(join(ROOT, 'examples', dir, proxy.build.context)).toBe(join(ROOT, '.'));
  expect(proxy.volumes).toContain(`./proxy.yaml:${imageConfigPath}:ro`);
  expect(proxy.read_only).toBe(true);
  expect(proxy.user).toBe('1000:1000');
  expect(proxy.ports).toEqual(['127.0.0.1:8080:8080']);
  for (const [name, service] of Object.entries(compose.services)) {
    for (const port of (service as { ports?: string[] }).ports ?? []) expect(port, `${name} publishes on loopback only`).toMatch(/^127\.0\.0\.1:/);
  }
}

/** Clients use localhost:8080 for the proxy; storage must be another hostname (Go clients keep Authorization on same-host redirects). */
function expectOtherHostname(endpoint: string, readme: string): void {
  expect(readme).toMatch(/docker login localhost:8080/);
  expect(new URL(endpoint).hostname).not.toBe('localhost');
}

function expectHtpasswdDemo(dir: string, readme: string): void {
  expect(readme).toMatch(/user `demo`, password `demo`/);
  const [user, hash] = read('examples', dir, 'htpasswd').trim().split(':');
  expect(user).toBe('demo');
  expect(bcrypt.compareSync('demo', hash!)).toBe(true);
}

describe('examples/distribution', () => {
  const registry = parse(read('examples/distribution/config.yml')) as any; // eslint-disable-line @typescript-eslint/no-explicit-any
  const compose = parse(read('examples/distribution/compose.yaml')) as Compose;
  const readme = read('examples/distribution/README.md');
  const proxyText = read('examples/distribution/proxy.yaml');
  const signer = (parse(proxyText) as { signer: { azure: Record<string, string> } }).signer.azure;
  let config: ServerConfig;
  beforeAll(async () => {
    config = await validateProxyConfig(proxyText, { AZURE_STORAGE_KEY: AZURITE_KEY });
  });
  afterAll(async () => {
    await config?.signer.close?.();
  });

  it('proxy.yaml is a valid proxy config (the server\'s own loader)', () => {
    expect(config.signer.name).toBe('azure');
    expect(config.listen.port).toBe(8080);
  });

  it('the registry serves blobs itself only through the proxy: storage.redirect.disable is true', () => {
    expect(registry.version).toBe(0.1);
    expect(registry.storage.redirect.disable).toBe(true);
  });

  it('registry and signer point at the same account, key, container and root directory', () => {
    expect(signer.account).toBe(registry.storage.azure.accountname);
    expect(compose.services.proxy.environment.AZURE_STORAGE_KEY).toBe(registry.storage.azure.accountkey);
    expect(signer.container).toBe(registry.storage.azure.container);
    expect(signer.rootDirectory ?? '').toBe(registry.storage.azure.rootdirectory ?? '');
    // Both reach the same Azurite: the registry by service name, clients via the published port.
    expect(new URL(registry.storage.azure.serviceurl).pathname).toBe(new URL(signer.endpoint!).pathname);
    expect(compose.services.azurite.ports).toContain(`127.0.0.1:${new URL(signer.endpoint!).port}:${new URL(registry.storage.azure.serviceurl).port}`);
    // The one-shot job creates that container in that account.
    expect(compose.services['storage-init'].command[0]).toContain(`getContainerClient('${signer.container}')`);
    expect(compose.services['storage-init'].environment.AZURE_STORAGE_CONNECTION_STRING).toContain(`AccountKey=${registry.storage.azure.accountkey};`);
  });

  it('the proxy reaches the registry service on its http.addr; the registry is not published', () => {
    expect(config.upstream.hostname).toBe('registry');
    expect(registry.http.addr).toBe(`:${config.upstream.port}`);
    expect(compose.services.registry.ports).toBeUndefined();
    expect(compose.services.registry.volumes).toContain('./config.yml:/etc/distribution/config.yml:ro');
    expect(compose.services.registry.volumes).toContain(`./htpasswd:${registry.auth.htpasswd.path}:ro`);
    expect(compose.services.registry.depends_on['storage-init'].condition).toBe('service_completed_successfully');
  });

  it('compose: the proxy is built from this repository, config mounted where the image reads it, hardened', () => {
    expectProxyService('distribution', compose);
    expectOtherHostname(signer.endpoint!, readme);
  });

  it('the README\'s credentials are the htpasswd file\'s', () => {
    expectHtpasswdDemo('distribution', readme);
  });
});

describe('examples/zot', () => {
  const zot = JSON.parse(read('examples/zot/config.json')) as any; // eslint-disable-line @typescript-eslint/no-explicit-any
  const compose = parse(read('examples/zot/compose.yaml')) as Compose;
  const readme = read('examples/zot/README.md');
  const proxyText = read('examples/zot/proxy.yaml');
  const raw = parse(proxyText) as { signer: { s3: Record<string, string | boolean> } };
  const s3 = raw.signer.s3;
  const env = { AWS_ACCESS_KEY_ID: 'id', AWS_SECRET_ACCESS_KEY: 'secret' };

  it('proxy.yaml is a valid proxy config, its s3 signer block included', async () => {
    const config = await validateProxyConfig(proxyText, env);
    try {
      expect(config.signer.name).toBe('s3');
      expect(config.listen.port).toBe(8080);
      expect(config.upstream.href).toBe(`http://zot:${zot.http.port}/`);
    } finally {
      await config.signer.close?.();
    }
  });

  it('dedupe is off (with dedupe on, a repository path may hold no bytes)', () => {
    expect(zot.storage.dedupe).toBe(false);
    expect(readme).toMatch(/"dedupe": false/);
  });

  it('the signer builds exactly the key zot writes: <driver root>/<rootDirectory>/<repo>/blobs/<alg>/<hex>', () => {
    expect(s3.layout).toBe('oci-per-repo');
    expect(s3.bucket).toBe(zot.storage.storageDriver.bucket);
    expect(s3.region).toBe(zot.storage.storageDriver.region);
    const zotKey = `${zot.storage.storageDriver.rootdirectory}/${zot.storage.rootDirectory}/team/app/blobs/sha256/${'ab'.repeat(32)}`.replace(/\/+/g, '/').replace(/^\//, '');
    const key = resolveLayout(s3.layout as 'oci-per-repo', s3.rootDirectory as string)('team/app', `sha256:${'ab'.repeat(32)}`);
    expect(key).toBe(zotKey);
  });

  it('MinIO: zot by service name, clients via the published port; same credentials for zot and the signer', () => {
    expect(new URL(zot.storage.storageDriver.regionendpoint).hostname).toBe('minio');
    const endpoint = new URL(s3.endpoint as string);
    expect(compose.services.minio.ports).toContain(`127.0.0.1:${endpoint.port}:${new URL(zot.storage.storageDriver.regionendpoint).port}`);
    expect(s3.accessKeyId).toBe('${AWS_ACCESS_KEY_ID}');
    expect(compose.services.proxy.environment).toEqual(compose.services.zot.environment);
    expect(compose.services.minio.environment.MINIO_ROOT_USER).toBe(compose.services.zot.environment.AWS_ACCESS_KEY_ID);
    expect(compose.services['bucket-init'].command[0]).toContain(`local/${s3.bucket}`);
  });

  it('the proxy reaches zot on its port; zot is not published; auth file where zot reads it', () => {
    expect(compose.services.zot.ports).toBeUndefined();
    expect(compose.services.zot.volumes).toContain(`./htpasswd:${zot.http.auth.htpasswd.path}:ro`);
    expect(compose.services.zot.command).toEqual(['serve', '/etc/zot/config.json']);
    expect(compose.services.zot.volumes).toContain('./config.json:/etc/zot/config.json:ro');
  });

  it('compose: the proxy is built from this repository, config mounted where the image reads it, hardened', () => {
    expectProxyService('zot', compose);
    expectOtherHostname(s3.endpoint as string, readme);
  });

  it('the README\'s credentials are the htpasswd file\'s', () => {
    expectHtpasswdDemo('zot', readme);
  });
});
