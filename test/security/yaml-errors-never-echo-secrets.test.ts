/**
 * Threat: a config file with a syntax error prints its own secrets. The yaml library's error
 * message quotes the lines around the mistake, and the line next to a mis-indented one is often
 * `accountKey: <literal key>`: that text went into startup stderr and into the
 * `config reload rejected` log line (which log pipelines keep). Invariant: a YAML error is reported
 * by file, line, column, enclosing key path and kind of mistake only; no byte of the file's values
 * is echoed, neither by `loadConfig`, nor by the real CLI at startup, nor on a SIGHUP reload.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/server/config.js';
import { AZURITE_KEY, azureProxyYaml } from '../helpers/constants.js';
import { startCli } from '../support/cli.js';
import { waitFor } from '../support/http.js';
import { freePort } from '../support/ports.js';

const SECRET = 'c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1wcmludA';
const SECRET_2 = 'hmac-key-that-must-never-print-41c9';

/** [name, file text, expected line, expected key path in the message] */
const broken: Array<[string, string, number, string]> = [
  [
    'a key indented one space less than the secret above it',
    `upstream: http://127.0.0.1:5000
signer:
  azure:
    account: devstoreaccount1
    accountKey: ${SECRET}==
   container: registry
`,
    6,
    'signer.azure',
  ],
  [
    'a line indented deeper than the secret value before it',
    `upstream: http://127.0.0.1:5000
signer:
  azure:
    accountKey: ${SECRET}==
      container: registry
`,
    4,
    'signer.azure',
  ],
  [
    'a secret with an unterminated quote',
    `upstream: http://127.0.0.1:5000
signer:
  hmac:
    key: "${SECRET_2}
    preset: nginx-secure-link
`,
    6,
    'signer.hmac',
  ],
  [
    'a bare word after a secret inside a list of signers',
    `upstream: http://127.0.0.1:5000
signer: { azure: { account: a, container: c } }
signers:
  - name: one
    hmac:
      key: ${SECRET_2}
  - name: two
    azure:
      accountKey: ${SECRET}
      ${SECRET_2}
`,
    10,
    'signers[1].azure',
  ],
  [
    'a tab used for indentation under a secret',
    `upstream: http://127.0.0.1:5000
signer:
  hmac:
    key: ${SECRET_2}
\tpreset: x
`,
    5,
    'signer',
  ],
  [
    'a duplicate key holding the secret',
    `upstream: http://127.0.0.1:5000
signer:
  hmac:
    key: ${SECRET_2}
    key: ${SECRET}
`,
    5,
    'signer.hmac',
  ],
];

function expectNoSecret(text: string): void {
  expect(text).not.toContain(SECRET);
  expect(text).not.toContain(SECRET.slice(0, 12));
  expect(text).not.toContain(SECRET_2);
  expect(text).not.toContain(SECRET_2.slice(0, 12));
}

describe('YAML errors never echo the file (and so never its secrets)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rr-yaml-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it.each(broken)('loadConfig: %s', async (name, text, line, keyPath) => {
    const file = join(dir, `${name.replace(/\W+/g, '-')}.yaml`);
    await writeFile(file, text);
    let message = '';
    try {
      await loadConfig(file, {});
    } catch (err) {
      message = (err as Error).message;
      expect((err as Error).cause).toBeUndefined(); // the library's error (with its excerpt) is not kept
    }
    expect(message).toContain(`${file}: not valid YAML at line ${line}, column `);
    expect(message).toContain(`(under ${keyPath})`);
    expectNoSecret(message);
  });

  it('CLI startup: stderr names line, column and key path, exit 1, no secret', async () => {
    const [, text] = broken[0]!;
    const file = join(dir, 'startup.yaml');
    await writeFile(file, text);
    const cli = startCli(['serve', '--config', file]);
    expect(await cli.exited).toBe(1);
    const out = cli.output();
    expect(out).toContain(`registry-redirect: invalid configuration:\n${file}: not valid YAML at line 6, column 1 (under signer.azure): wrong indentation`);
    expectNoSecret(out);
  }, 20_000);

  it('SIGHUP reload of a broken file: the rejection log line names the position, not the content', async () => {
    const port = await freePort();
    const file = join(dir, 'reload.yaml');
    const good = azureProxyYaml({ upstream: `http://127.0.0.1:${await freePort()}`, listen: `127.0.0.1:${port}`, extra: 'reload: { watch: false }\n' });
    await writeFile(file, good);
    const cli = startCli(['serve', '--config', file], { ...process.env, AZURE_STORAGE_KEY: AZURITE_KEY });
    try {
      await waitFor(async () => cli.output().includes('registry-redirect listening'), { timeoutMs: 15_000, label: 'the CLI to listen', describe: () => cli.output() });
      await writeFile(file, `${good}rollout:\n  default: redirect\n  secretish: ${SECRET}\n   broken: ${SECRET_2}\n`);
      cli.child.kill('SIGHUP');
      await waitFor(async () => cli.output().includes('config reload rejected'), { timeoutMs: 10_000, label: 'the rejection log', describe: () => cli.output() });
      const line = cli.output().split('\n').find((l) => l.includes('config reload rejected'))!;
      const logged = JSON.parse(line) as { error: string };
      expect(logged.error).toMatch(/reload\.yaml: not valid YAML at line \d+, column \d+ \(under rollout\)/);
      expectNoSecret(cli.output());
    } finally {
      await cli.stop(3_000);
    }
  }, 30_000);
});
