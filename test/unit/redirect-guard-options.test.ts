import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { registryRedirect } from '../../src/index.js';
import { runCheck } from '../../src/server/check.js';
import { buildConfig } from '../../src/server/config.js';
import { testSigner } from '../helpers/token-registry.js';

const base = () => ({
  upstream: 'http://127.0.0.1:5000',
  signer: { hmac: { preset: 'cloudflare', baseUrl: 'https://cdn.example', key: 'k' } },
});

describe('acceptUpstreamRedirect and allowRedirectToRegistryHost: off by default, validated, naming the key', () => {
  it('config: both default to false and take booleans', () => {
    const config = buildConfig(base());
    expect(config.authorize.acceptUpstreamRedirect).toBe(false);
    expect(config.allowRedirectToRegistryHost).toBe(false);
    const on = buildConfig({ ...base(), allowRedirectToRegistryHost: true, authorize: { acceptUpstreamRedirect: true } });
    expect(on.authorize.acceptUpstreamRedirect).toBe(true);
    expect(on.allowRedirectToRegistryHost).toBe(true);
  });

  it.each([
    [{ allowRedirectToRegistryHost: 'yes' }, /^allowRedirectToRegistryHost: write true/],
    [{ authorize: { acceptUpstreamRedirect: 1 } }, /^authorize\.acceptUpstreamRedirect: write true/],
  ])('config %j is rejected', (extra, message) => {
    expect(() => buildConfig({ ...base(), ...extra })).toThrow(message);
  });

  it.each([
    [{ upstream: 'http://127.0.0.1:5000', acceptUpstreamRedirect: 'true' }, /acceptUpstreamRedirect must be true or false/],
    [{ upstream: 'http://127.0.0.1:5000', allowRedirectToRegistryHost: 1 }, /allowRedirectToRegistryHost must be true or false/],
    [{ authorize: () => undefined, acceptUpstreamRedirect: true }, /`acceptUpstreamRedirect` needs `upstream`/],
  ])('library options %j are rejected', (options, message) => {
    expect(() => registryRedirect({ signer: testSigner(), ...options } as never)).toThrow(message);
  });
});

describe('check: signer URLs on the registry host or a subdomain', () => {
  const configFile = (extra = '') => {
    const file = join(mkdtempSync(join(tmpdir(), 'rr-check-host-')), 'proxy.yaml');
    writeFileSync(file, `upstream: http://registry.example.com:5000\nsigner:\n  hmac:\n    preset: cloudflare\n    baseUrl: https://blobs.registry.example.com\n    key: k\npreflight: off\n${extra}`);
    return file;
  };
  const run = async (opts: { registryHost?: string }, extra?: string) => {
    const lines: string[] = [];
    const code = await runCheck({ config: configFile(extra), ...opts }, (l) => void lines.push(l), {});
    return { code, lines };
  };

  it('warns when they are on a subdomain of the upstream host (the name clients use is unknown)', async () => {
    const { code, lines } = await run({});
    expect(code).toBe(0);
    expect(lines[0]).toMatch(/^ok {4}signer \(hmac\): signed GET/);
    expect(lines[1]).toMatch(/^warn {2}signer \(hmac\): signed URLs on blobs\.registry\.example\.com are on the upstream's host registry\.example\.com .*proxied \(same_host\)/);
  });

  it('fails when they are on --registry-host or a subdomain of it', async () => {
    const { code, lines } = await run({ registryHost: 'registry.example.com' });
    expect(code).toBe(1);
    expect(lines[0]).toMatch(/^FAIL {2}signer \(hmac\): signed URLs on blobs\.registry\.example\.com are on --registry-host registry\.example\.com .*never redirected/);
  });

  it('passes another --registry-host, and only warns about credentials with allowRedirectToRegistryHost', async () => {
    expect((await run({ registryHost: 'pull.example.org' })).code).toBe(0);
    const opted = await run({ registryHost: 'registry.example.com' }, 'allowRedirectToRegistryHost: true\n');
    expect(opted.code).toBe(0);
    expect(opted.lines.slice(1).every((l) => /^warn .*send their registry credentials to that storage/.test(l))).toBe(true);
  });
});
