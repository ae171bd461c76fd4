import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildConfig, expandEnv, loadConfig, parseListen } from '../../src/server/config.js';
import { AZURITE_KEY } from '../helpers/constants.js';

// The exact config the issue promises external checks (keys must keep working).
const ISSUE_CONFIG = `
listen: 127.0.0.1:15080
upstream: http://127.0.0.1:15000
signer:            # the default signer
  azure:
    account: devstoreaccount1
    accountKey: \${AZURE_STORAGE_KEY}     # read from the environment
    container: registry
    endpoint: http://127.0.0.2:10000/devstoreaccount1
    # rootDirectory: ""
# expiry: 20m
`;

function writeTemp(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'rr-config-'));
  const file = join(dir, 'proxy.yaml');
  writeFileSync(file, text);
  return file;
}

const base = () => ({
  upstream: 'http://127.0.0.1:5000',
  signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry' } },
});

describe('config', () => {
  it('loads the documented config with ${VAR} from the environment', async () => {
    const config = await loadConfig(writeTemp(ISSUE_CONFIG), { AZURE_STORAGE_KEY: AZURITE_KEY });
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 15080 });
    expect(config.listenBacklog).toBe(4096);
    expect(config.upstream.href).toBe('http://127.0.0.1:15000/');
    expect(config.signer.name).toBe('azure');
    expect(config.expiryMs).toBe(20 * 60_000);
    expect(config.onSignerError).toBe('proxy');
    expect(config.timeouts).toEqual({ authorize: 10_000, upstream: 60_000, signer: 5_000, shutdown: 10_000, headers: 60_000, keepAlive: 5_000 });
  });

  it('the quick-start example config (origin mode) and the Azurite recipe\'s are valid', async () => {
    const quick = await loadConfig(new URL('../../examples/quickstart/proxy.yaml', import.meta.url).pathname, { ORIGIN_KEY: 'a'.repeat(64) });
    expect(quick.signer.name).toBe('origin');
    await expect(loadConfig(new URL('../../examples/azurite/proxy.yaml', import.meta.url).pathname, {})).resolves.toBeDefined();
  });

  it('names a missing environment variable and its key', async () => {
    await expect(loadConfig(writeTemp(ISSUE_CONFIG), {})).rejects.toThrow(
      /signer\.azure\.accountKey: environment variable AZURE_STORAGE_KEY is not set/,
    );
  });

  it.each([
    ['unknown top-level key with a hint', { ...base(), upstrem: 'x' }, /upstrem: unknown key; did you mean "upstream"\?/],
    ['unknown signer key with a hint', { ...base(), signer: { azure: { ...base().signer.azure, acountKey: 'x' } } }, /signer\.azure\.acountKey: unknown key; did you mean "accountKey"\?/],
    ['missing upstream', { signer: base().signer }, /upstream: write the upstream registry URL/],
    ['missing signer', { upstream: 'http://x' }, /signer: missing; write e\.g\./],
    ['unknown signer kind', { ...base(), signer: { azur: {} } }, /signer\.azur: unknown signer; did you mean "azure"\?/],
    ['two signers', { ...base(), signer: { azure: base().signer.azure, s3: {} } }, /signer: name exactly one signer/],
    ['missing field', { ...base(), signer: { azure: { account: 'devstoreaccount1' } } }, /signer\.azure\.container: write the container name/],
    ['bad duration', { ...base(), expiry: '20 minutes' }, /expiry: "20 minutes" is not a duration; write .*"20m"/],
    ['bad timeout', { ...base(), timeouts: { signer: 'fast' } }, /timeouts\.signer: "fast" is not a duration/],
    ['bad upstream URL syntax', { ...base(), upstream: 'localhost:5000' }, /upstream: protocol localhost: is not supported; write an http:\/\/ or https:\/\/ URL/],
    ['unparseable upstream', { ...base(), upstream: 'http//nope' }, /upstream: "http\/\/nope" is not a URL; write e\.g\. "http:\/\/127\.0\.0\.1:5000"/],
    ['bad listen', { ...base(), listen: '127.0.0.1' }, /listen: "127\.0\.0\.1" is not host:port/],
    ['bad listenBacklog', { ...base(), listenBacklog: 0 }, /listenBacklog: write at least 1/],
    ['fractional listenBacklog', { ...base(), listenBacklog: 10.5 }, /listenBacklog: write a whole number/],
    ['bad onSignerError', { ...base(), onSignerError: 'retry' }, /onSignerError: write "proxy"/],
    ['bad log level', { ...base(), log: { level: 'loud' } }, /log\.level: write one of trace, debug/],
    ['not a mapping', 'just a string', /config: the file must be a YAML mapping/],
  ])('%s fails naming the key and the fix', (_why, raw, message) => {
    expect(() => buildConfig(raw)).toThrow(message);
  });

  it('reports invalid YAML with the file name', async () => {
    const file = writeTemp('upstream: [unclosed');
    await expect(loadConfig(file, {})).rejects.toThrow(/proxy\.yaml: not valid YAML/);
  });

  it('parses listen forms', () => {
    expect(parseListen(':8080')).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(parseListen('[::1]:9000')).toEqual({ host: '::1', port: 9000 });
    expect(() => parseListen('host:99999')).toThrow(/listen:/);
  });

  it('expandEnv walks arrays and nested objects', () => {
    expect(expandEnv({ a: ['${X}', { b: 'pre-${X}' }] }, { X: '1' })).toEqual({ a: ['1', { b: 'pre-1' }] });
  });
});
