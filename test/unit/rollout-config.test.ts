import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildConfig, loadConfig } from '../../src/server/config.js';
import { AZURITE_ACCOUNT_KEY as AZURITE_KEY } from '../support/azurite.js';

const azure = (container = 'registry') => ({ azure: { account: 'devstoreaccount1', accountKey: AZURITE_KEY, container } });

// The documented shape of these blocks (extended keys in docs/rollout.md), as external checks use it.
const ISSUE_YAML = `
upstream: http://127.0.0.1:5000
signer: { azure: { account: devstoreaccount1, accountKey: "${AZURITE_KEY}", container: registry } }
trustedProxies: [127.0.0.1/32]
signers:                      # named signers, in addition to the default \`signer:\`
  cdn: { azure: { account: devstoreaccount1, accountKey: "${AZURITE_KEY}", container: cdn } }
rollout:
  rules:                      # first match wins
    - networks: [10.0.0.0/8]
      action: proxy
    - repositories: ["internal/**"]
      action: proxy
    - percent: 30
      action: redirect
      signer: cdn             # omitted -> the default signer
  default: proxy              # redirect | proxy
metrics:
  listen: 127.0.0.1:9090      # serves /metrics
`;

describe('config: trustedProxies, signers, rollout, health, metrics, reload', () => {
  it('accepts the issue YAML exactly', () => {
    const config = buildConfig(parse(ISSUE_YAML));
    expect(config.trustedProxies).toEqual(['127.0.0.1/32']);
    expect(Object.keys(config.signers)).toEqual(['cdn']);
    expect(config.signers.cdn!.name).toBe('azure');
    expect(config.rollout?.rules).toHaveLength(3);
    expect(config.rollout?.default).toBe('proxy');
    expect(config.metrics).toEqual({ listen: { host: '127.0.0.1', port: 9090 }, path: '/metrics', defaultMetrics: true });
    expect(config.reload).toEqual({ watch: true });
    expect(config.log.requests).toBe(true);
  });

  it('the rollout example config is valid', async () => {
    const path = new URL('../../examples/rollout/proxy.yaml', import.meta.url).pathname;
    const config = await loadConfig(path, { AZURE_STORAGE_KEY: AZURITE_KEY, PROBE_DIGEST: `sha256:${'ab'.repeat(32)}` });
    expect(config.rollout?.rules).toHaveLength(4);
    expect(config.health?.probe?.interval).toBe(30_000);
    // No placeholder digest that would quietly open the breaker: without a real one it does not start.
    await expect(loadConfig(path, { AZURE_STORAGE_KEY: AZURITE_KEY })).rejects.toThrow(/^health\.probe\.digest: environment variable PROBE_DIGEST is not set/);
  });

  it('every YAML example in docs/rollout.md is a valid config', () => {
    const doc = readFileSync(new URL('../../docs/rollout.md', import.meta.url), 'utf8');
    const blocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
    expect(blocks.length).toBeGreaterThanOrEqual(6);
    for (const block of blocks) {
      const raw = parse(block) as Record<string, unknown>;
      expect(() => buildConfig({ upstream: 'http://127.0.0.1:5000', signer: azure(), ...raw }), block).not.toThrow();
    }
  });

  it('defaults: no rollout, no named signers, no metrics, no trusted proxies', () => {
    const config = buildConfig({ upstream: 'http://127.0.0.1:5000', signer: azure() });
    expect(config.rollout).toBeUndefined();
    expect(config.signers).toEqual({});
    expect(config.metrics).toBeUndefined();
    expect(config.trustedProxies).toEqual([]);
    expect(config.health).toBeUndefined();
  });

  it('health: durations become milliseconds', () => {
    const config = buildConfig({
      upstream: 'http://127.0.0.1:5000',
      signer: azure(),
      signers: { cdn: azure('cdn') },
      health: { failureThreshold: 2, retryAfter: '1m', probe: { repository: 'library/alpine', digest: `sha256:${'a'.repeat(64)}`, interval: '10s', timeout: '2s', signers: ['cdn'] } },
    });
    expect(config.health).toEqual({
      failureThreshold: 2,
      retryAfter: 60_000,
      probe: { repository: 'library/alpine', digest: `sha256:${'a'.repeat(64)}`, interval: 10_000, timeout: 2_000, signers: ['cdn'] },
    });
  });

  it('metrics without listen are served on the main listener', () => {
    const config = buildConfig({ upstream: 'http://127.0.0.1:5000', signer: azure(), metrics: { path: '/internal/metrics', defaultMetrics: false } });
    expect(config.metrics).toEqual({ listen: undefined, path: '/internal/metrics', defaultMetrics: false });
  });

  const base = { upstream: 'http://127.0.0.1:5000', signer: azure() };
  it.each<[string, object, RegExp]>([
    ['bad trusted proxy', { trustedProxies: ['10.0.0.0/8', 'my-lb'] }, /trustedProxies\[1\]: "my-lb" is not an IP address or CIDR/],
    ['trusted proxies not a list', { trustedProxies: '10.0.0.0/8' }, /trustedProxies: write a list of CIDRs/],
    ['reserved signer name', { signers: { default: azure() } }, /signers\.default: "default" is reserved/],
    ['bad signer block names its key', { signers: { cdn: { azure: { account: 'devstoreaccount1' } } } }, /signers\.cdn\.azure\.container: write the container name/],
    ['unknown signer kind', { signers: { cdn: { azur: {} } } }, /signers\.cdn\.azur: unknown signer; did you mean "azure"\?/],
    ['rule names an undefined signer', { rollout: { rules: [{ percent: 5, action: 'redirect', signer: 'cdn' }], default: 'proxy' } }, /rollout\.rules\[0\]\.signer: unknown signer "cdn".*Define it under `signers:`/],
    ['rollout typo', { rollout: { rules: [{ precent: 5, action: 'redirect' }], default: 'proxy' } }, /rollout\.rules\[0\]\.precent: unknown key; did you mean "percent"\?/],
    ['rollout without default', { rollout: { rules: [] } }, /rollout\.default: write "redirect"/],
    ['bad metrics listen', { metrics: { listen: '9090' } }, /metrics\.listen: "9090" is not host:port/],
    ['metrics path on the registry API', { metrics: { path: '/v2/metrics' } }, /metrics\.path: "\/v2\/metrics" is taken/],
    ['metrics unknown key', { metrics: { port: 9090 } }, /metrics\.port: unknown key/],
    ['health probe with a bad digest', { health: { probe: { repository: 'a/b', digest: 'sha256:xyz' } } }, /health\.probe\.digest: "sha256:xyz" is not a digest/],
    ['health probe of an unknown signer', { health: { probe: { repository: 'a/b', digest: `sha256:${'a'.repeat(64)}`, signers: ['cdn'] } } }, /health\.probe\.signers: unknown signer "cdn"/],
    ['health threshold zero', { health: { failureThreshold: 0 } }, /health\.failureThreshold: write a whole number >= 1/],
    ['health bad duration', { health: { retryAfter: 'soon' } }, /health\.retryAfter: "soon" is not a duration/],
    ['reload typo', { reload: { wach: true } }, /reload\.wach: unknown key; did you mean "watch"\?/],
    ['log.requests not a boolean', { log: { requests: 'yes' } }, /log\.requests: write true/],
  ])('%s', (_why, extra, message) => {
    expect(() => buildConfig({ ...base, ...extra })).toThrow(message);
  });
});
