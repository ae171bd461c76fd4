import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { createClientIpResolver } from '../../src/client-ip.js';
import { silentLogger } from '../../src/log.js';
import { completeObserver } from '../../src/metrics.js';
import { classifyUploadStart, compilePush, steerLocation, type PushOptions } from '../../src/push.js';
import { buildConfig } from '../../src/server/config.js';

const req = (method: string, url: string, headers: Record<string, string> = {}) => ({ method, url, headers, socket: { remoteAddress: '127.0.0.1' } }) as unknown as IncomingMessage;
const compile = (options: unknown) =>
  compilePush(options as PushOptions, { clientIp: createClientIpResolver([]), observer: completeObserver(undefined), logger: silentLogger });

describe('classifyUploadStart', () => {
  it('only a body-less POST to /v2/<name>/blobs/uploads/ is a session start', () => {
    expect(classifyUploadStart(req('POST', '/v2/team/app/blobs/uploads/'))).toEqual({ repository: 'team/app', kind: 'session' });
    expect(classifyUploadStart(req('POST', '/v2/team/app/blobs/uploads'))).toEqual({ repository: 'team/app', kind: 'session' });
    expect(classifyUploadStart(req('POST', '/v2/team/app/blobs/uploads/', { 'content-length': '0' }))?.kind).toBe('session');
  });
  it('mounts and monolithic uploads are told apart', () => {
    expect(classifyUploadStart(req('POST', '/v2/a/blobs/uploads/?mount=sha256:00&from=b'))?.kind).toBe('mount');
    expect(classifyUploadStart(req('POST', '/v2/a/blobs/uploads/?from=b'))?.kind).toBe('mount');
    expect(classifyUploadStart(req('POST', '/v2/a/blobs/uploads/?digest=sha256:00', { 'content-length': '5' }))?.kind).toBe('monolithic');
    expect(classifyUploadStart(req('POST', '/v2/a/blobs/uploads/', { 'content-length': '5' }))?.kind).toBe('monolithic');
    expect(classifyUploadStart(req('POST', '/v2/a/blobs/uploads/', { 'transfer-encoding': 'chunked' }))?.kind).toBe('monolithic');
  });
  it('anything else is none of its business', () => {
    for (const [method, url] of [
      ['GET', '/v2/a/blobs/uploads/'],
      ['PUT', '/v2/a/blobs/uploads/'],
      ['PATCH', '/v2/a/blobs/uploads/abc'],
      ['POST', '/v2/a/blobs/uploads/abc'],
      ['POST', '/v2/A/blobs/uploads/'],
      ['POST', '/v2/a%2fb/blobs/uploads/'],
      ['POST', '/v2//blobs/uploads/'],
      ['POST', '/v2/a/manifests/uploads/'],
      ['POST', '/x/v2/a/blobs/uploads/'],
    ] as const) {
      expect(classifyUploadStart(req(method, url)), `${method} ${url}`).toBeUndefined();
    }
  });
});

describe('steerLocation', () => {
  const endpoint = new URL('https://direct.example.com:8443/registry/');
  it('replaces origin and prefix, keeps the session id and the signed state', () => {
    expect(steerLocation('http://proxy.example.com/v2/team/app/blobs/uploads/1f2e-3d?_state=abc%3D&x=1', endpoint, 'team/app')).toBe(
      'https://direct.example.com:8443/registry/v2/team/app/blobs/uploads/1f2e-3d?_state=abc%3D&x=1',
    );
    expect(steerLocation('/v2/team/app/blobs/uploads/1f2e', new URL('http://127.0.0.2:5000'), 'team/app')).toBe('http://127.0.0.2:5000/v2/team/app/blobs/uploads/1f2e');
    expect(steerLocation('http://up/prefix/v2/team/app/blobs/uploads/1f2e', new URL('http://127.0.0.2:5000'), 'team/app')).toBe('http://127.0.0.2:5000/v2/team/app/blobs/uploads/1f2e');
  });
  it("leaves anything but this repository's upload session alone", () => {
    expect(steerLocation('http://proxy/v2/team/other/blobs/uploads/1f2e', endpoint, 'team/app')).toBeUndefined();
    expect(steerLocation('http://proxy/v2/team/app/blobs/sha256:00', endpoint, 'team/app')).toBeUndefined();
    expect(steerLocation('http://proxy/v2/team/app/blobs/uploads/', endpoint, 'team/app')).toBeUndefined();
    expect(steerLocation('http://proxy/v2/team/app/blobs/uploads/a/b', endpoint, 'team/app')).toBeUndefined();
    expect(steerLocation('http://[bad', endpoint, 'team/app')).toBeUndefined();
  });
});

describe('compilePush: errors name the key and the fix', () => {
  it.each([
    [{}, /push\.endpoint: write the registry's direct write address/],
    [{ endpoint: 'not a url' }, /push\.endpoint: "not a url" is not a URL/],
    [{ endpoint: 'ftp://x' }, /push\.endpoint: protocol ftp: is not supported/],
    [{ endpoint: 'http://u:p@x' }, /push\.endpoint: write only scheme, host, port and optional path/],
    [{ endpoint: 'http://x?a=1' }, /push\.endpoint: write only scheme/],
    [{ endpoint: 'http://x', mode: 'bounce' }, /push\.mode: write "steer"/],
    [{ endpoint: 'http://x', default: 'redirect' }, /push\.default: write "steer" or "proxy"/],
    [{ endpoint: 'http://x', rules: [{ action: 'redirect' }] }, /push\.rules\[0\]\.action: write "steer" or "proxy"/],
    [{ endpoint: 'http://x', rules: [{ minSize: '1MiB', action: 'steer' }] }, /push\.rules\[0\]\.minSize: unknown key/],
    [{ endpoint: 'http://x', rules: [{ networks: ['10.0.0.300/8'], action: 'steer' }] }, /push\.rules\[0\]\.networks\[0\]/],
    [{ endpoint: 'http://x', rules: [{ percent: 101, action: 'steer' }] }, /push\.rules\[0\]\.percent/],
    [{ endpoint: 'http://x', endpont: 'http://y' }, /push\.endpont: unknown key; did you mean "endpoint"\?/],
  ])('%j', (options, message) => {
    expect(() => compile(options)).toThrow(message);
  });

  it('the config file validates `push` at load, with the trusted proxies', () => {
    const base = { upstream: 'http://127.0.0.1:5000', signer: { hmac: { baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare' } } };
    expect(buildConfig({ ...base, push: { endpoint: 'http://127.0.0.2:5000', rules: [{ networks: ['10.0.0.0/8'], action: 'steer' }], default: 'proxy' } }).push).toMatchObject({ endpoint: 'http://127.0.0.2:5000' });
    expect(buildConfig(base).push).toBeUndefined();
    expect(() => buildConfig({ ...base, push: { endpoint: 's3://bucket' } })).toThrow(/^push\.endpoint: protocol s3:/);
  });
});

describe('README', () => {
  it('the Push section configs are valid', async () => {
    const { readFile } = await import('node:fs/promises');
    const { parse } = await import('yaml');
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('\n## Push\n'), readme.indexOf('\n## Observability\n'));
    const blocks = [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => parse(m[1]!) as Record<string, unknown>);
    expect(blocks.length).toBeGreaterThanOrEqual(4);
    for (const block of blocks) {
      const config = buildConfig({ upstream: 'http://127.0.0.1:5000', signer: { hmac: { baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare' } }, ...block });
      expect(config.push).toBeDefined();
    }
  });
});

describe('registryRedirect({ push })', () => {
  it('is refused in embedded mode, at construction', async () => {
    const { registryRedirect } = await import('../../src/middleware.js');
    const signer = { name: 's', sign: () => ({ url: 'https://x.invalid/', expiresAt: 0 }) };
    expect(() => registryRedirect({ signer, authorize: () => undefined, push: { endpoint: 'http://127.0.0.2:5000' } })).toThrow(/`push` needs `upstream` \(proxy mode\)/);
    expect(() => registryRedirect({ signer, upstream: 'http://127.0.0.1:5000', push: { endpoint: 'ftp://x' } })).toThrow(/^push\.endpoint: protocol ftp:/);
  });
});
