/**
 * `serve --workers 2` with `tls:`: every worker terminates TLS itself (node:cluster hands them
 * the TCP socket), SIGHUP to the primary reaches every worker, and each one reloads the
 * certificate: after the signal, no handshake gets the old one. A bad pair at start stops the
 * process with the key named (the primary validates before forking).
 */
import { X509Certificate } from 'node:crypto';
import { copyFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireBinary } from '../support/binaries.js';
import { startCli } from '../support/cli.js';
import { waitFor } from '../support/http.js';
import { freePort } from '../support/ports.js';
import { makeTestCa, type TestCa } from '../support/tls.js';

const has = requireBinary('openssl');

function served(url: string, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${url}/healthz`, { ca, agent: false }, (res) => {
      const fp = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
      res.resume();
      res.on('end', () => resolve(fp));
    });
    req.setTimeout(3_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

describe.skipIf(!has)('serve --workers 2 with tls:', () => {
  let ca: TestCa;
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rr-tls-workers-'));
    ca = makeTestCa();
  });
  afterAll(async () => {
    ca?.remove();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const yaml = (port: number, cert: string, key: string) => `listen: 127.0.0.1:${port}
upstream: http://127.0.0.1:1
tls: { certificate: ${cert}, key: ${key} }
signer: { hmac: { baseUrl: "https://cdn.example.com", key: k, preset: cloudflare } }
reload: { watch: false }
`;

  it('both workers serve HTTPS and both pick up a rotated certificate on SIGHUP', async () => {
    const first = ca.issue('w-1');
    copyFileSync(first.cert, join(work, 'tls.crt'));
    copyFileSync(first.key, join(work, 'tls.key'));
    const port = await freePort();
    const config = join(work, 'proxy.yaml');
    writeFileSync(config, yaml(port, join(work, 'tls.crt'), join(work, 'tls.key')));
    const cli = startCli(['serve', '--config', config, '--workers', '2']);
    try {
      const url = `https://127.0.0.1:${port}`;
      const caPem = readFileSync(ca.cert);
      await waitFor(async () => (await served(url, caPem)) !== '', { timeoutMs: 20_000, label: 'workers listening', describe: () => cli.output() });
      await waitFor(async () => (cli.output().match(/registry-redirect listening/g) ?? []).length >= 2, { timeoutMs: 20_000, label: 'two workers', describe: () => cli.output() });
      const next = ca.issue('w-2');
      copyFileSync(next.key, join(work, 'tls.key.new'));
      copyFileSync(next.cert, join(work, 'tls.crt.new'));
      renameSync(join(work, 'tls.key.new'), join(work, 'tls.key'));
      renameSync(join(work, 'tls.crt.new'), join(work, 'tls.crt'));
      cli.child.kill('SIGHUP');
      await waitFor(async () => (cli.output().match(/TLS certificate reloaded/g) ?? []).length >= 2, { timeoutMs: 10_000, label: 'both workers reloaded', describe: () => cli.output() });
      const want = new X509Certificate(readFileSync(next.cert)).fingerprint256;
      // Round-robin over the workers: many handshakes, every one gets the new certificate.
      const seen = await Promise.all(Array.from({ length: 12 }, () => served(url, caPem)));
      expect(new Set(seen)).toEqual(new Set([want]));
    } finally {
      await cli.stop();
    }
    expect(await cli.exited).toBe(0);
  }, 60_000);

  it('a key that does not match the certificate stops serve at start, naming tls.key', async () => {
    const a = ca.issue('bad-a');
    const b = ca.issue('bad-b');
    const config = join(work, 'bad.yaml');
    writeFileSync(config, yaml(await freePort(), a.cert, b.key));
    const cli = startCli(['serve', '--config', config, '--workers', '2']);
    expect(await cli.exited).toBe(1);
    expect(cli.output()).toMatch(/invalid configuration:\ntls\.key: .*bad-b\.key does not match tls\.certificate/);
  }, 30_000);
});
