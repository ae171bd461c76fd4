import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AZURITE_KEY } from '../helpers/constants.js';
import { ROOT, extractTarball, linkPackages, npmPack, productionPackages, runNode, type Packed } from '../helpers/package.js';

/**
 * The package as users get it: `npm pack`, unpacked into a consumer's node_modules next to the
 * production dependencies only (what `npm install registry-redirect` brings), then used from an
 * ESM module, a CommonJS module (`require(esm)`, Node >= 22.12), TypeScript (node16 and bundler
 * resolution) and the packaged CLI.
 */

const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string; engines: { node: string } };

let work: string;
let packed: Packed;
let consumer: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'rr-consumer-'));
  packed = await npmPack(work);
  consumer = join(work, 'app');
  await extractTarball(packed.tarball, join(consumer, 'node_modules', 'registry-redirect'));
  await linkPackages(join(consumer, 'node_modules'), [...(await productionPackages()), 'typescript', '@types/node']);
  await writeFile(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
}, 120_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/**
 * The same behaviour check for the ESM and the CommonJS consumer: an embedded-mode middleware in a
 * bare node:http server answers 307 for a granted blob and hands anything else to next().
 */
function behaviourScript(importLine: string): string {
  return `${importLine}
const digest = 'sha256:' + 'a'.repeat(64);
async function main() {
  const signer = azureSigner({ account: 'devstoreaccount1', accountKey: ${JSON.stringify(AZURITE_KEY)}, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' });
  const mw = registryRedirect({ signer, authorize: (_req, t) => (t.repository === 'team/app' ? { size: 3 } : undefined) });
  const server = http.createServer((req, res) => mw(req, res, () => { res.writeHead(404, { 'Content-Length': '0' }); res.end(); }));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = 'http://127.0.0.1:' + server.address().port;
  const granted = await fetch(base + '/v2/team/app/blobs/' + digest, { redirect: 'manual' });
  const other = await fetch(base + '/v2/team/other/blobs/' + digest, { redirect: 'manual' });
  let configError;
  try { registryRedirect({ signer, upstream: 'http://127.0.0.1:1', bogus: 1 }); } catch (err) { configError = err instanceof RegistryRedirectError ? err.code : String(err); }
  server.close();
  await mw.close();
  console.log(JSON.stringify({ status: granted.status, location: granted.headers.get('location'), digest: granted.headers.get('docker-content-digest'), other: other.status, parsed: parseBlobPath('/v2/team/app/blobs/' + digest), configError }));
}
main().catch((err) => { console.error(err); process.exit(1); });
`;
}

function expectBehaviour(stdout: string): void {
  const out = JSON.parse(stdout) as { status: number; location: string; digest: string; other: number; parsed: unknown; configError: string };
  expect(out.status).toBe(307);
  expect(out.location).toMatch(/^http:\/\/127\.0\.0\.2:10000\/devstoreaccount1\/registry\/docker\/registry\/v2\/blobs\/sha256\/aa\/a{64}\/data\?.*sig=/);
  expect(out.digest).toBe(`sha256:${'a'.repeat(64)}`);
  expect(out.other).toBe(404);
  expect(out.parsed).toEqual({ repository: 'team/app', digest: `sha256:${'a'.repeat(64)}` });
  expect(out.configError).toBe('CONFIG_INVALID');
}

describe('npm pack: what is in the tarball', () => {
  it('ships dist, the typings, the CLI, README, LICENSE and CHANGELOG, and nothing else', () => {
    const paths = packed.files.map((f) => f.path).sort();
    for (const required of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/index.js', 'dist/index.d.ts', 'dist/server/cli.js']) {
      expect(paths, required).toContain(required);
    }
    const stray = paths.filter((p) => !/^(dist\/|package\.json$|README\.md$|LICENSE$|CHANGELOG\.md$)/.test(p));
    expect(stray).toEqual([]);
    expect(paths.filter((p) => /\.test\.|(^|\/)test\/|^src\/|^examples\//.test(p))).toEqual([]);
  });

  it('every bin and export target of package.json is in the tarball', async () => {
    const manifest = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string>; exports: Record<string, string | Record<string, string>> };
    const paths = new Set(packed.files.map((f) => f.path));
    const targets = [...Object.values(manifest.bin), ...Object.values(manifest.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e)))];
    expect(targets.length).toBeGreaterThan(2);
    for (const target of targets) expect(paths, target).toContain(target.replace(/^\.\//, ''));
  });

  it('the license file is the Apache-2.0 text package.json declares', async () => {
    const license = await readFile(join(consumer, 'node_modules/registry-redirect/LICENSE'), 'utf8');
    expect(license).toMatch(/Apache License\s+Version 2\.0, January 2004/);
    const manifest = JSON.parse(await readFile(join(consumer, 'node_modules/registry-redirect/package.json'), 'utf8')) as { license: string };
    expect(manifest.license).toBe('Apache-2.0');
  });
});

describe('consumers of the packed package', () => {
  it('ESM: import { registryRedirect } works with production dependencies only', async () => {
    await writeFile(join(consumer, 'esm.mjs'), behaviourScript("import http from 'node:http';\nimport { registryRedirect, azureSigner, parseBlobPath, RegistryRedirectError } from 'registry-redirect';"));
    const run = await runNode(['esm.mjs'], consumer);
    expect(run.code, run.stderr).toBe(0);
    expectBehaviour(run.stdout);
  });

  it(`CommonJS: require('registry-redirect') works (require(esm), Node >= 22.12; no top-level await in the graph)`, async () => {
    await writeFile(
      join(consumer, 'cjs.cjs'),
      behaviourScript("const http = require('node:http');\nconst { registryRedirect, azureSigner, parseBlobPath, RegistryRedirectError } = require('registry-redirect');\nif (require('registry-redirect/package.json').version !== " + JSON.stringify(pkg.version) + ") throw new Error('version');"),
    );
    const run = await runNode(['cjs.cjs'], consumer);
    expect(run.code, run.stderr).toBe(0);
    expectBehaviour(run.stdout);
  });

  it('the engines field allows only Node versions with require(esm) and http-proxy-middleware v4', () => {
    expect(pkg.engines.node).toBe('>=22.15');
  });

  const tsConsumer = `import type { IncomingMessage } from 'node:http';
import { azureSigner, registryRedirect, RegistryRedirectError, type EmbeddedGrant, type RegistryRedirectMiddleware, type Signer } from 'registry-redirect';

const signer: Signer = azureSigner({ account: 'myaccount', accountKey: 'a2V5', container: 'registry' });
const authorize = async (_req: IncomingMessage, { repository }: { repository: string; digest: string }): Promise<EmbeddedGrant | undefined> =>
  repository === 'team/app' ? { size: 1 } : undefined;
const mw: RegistryRedirectMiddleware = registryRedirect({ signer, authorize, onSignerError: 'proxy', timeouts: { signer: 1000 } });
export const closed: Promise<void> = mw.close();
export const code: string = new RegistryRedirectError('CONFIG_INVALID', 'x').code;

// The typings are real, not any: each line below must be a type error.
// @ts-expect-error unknown option
registryRedirect({ signer, upstream: 'http://127.0.0.1:5000', bogus: true });
// @ts-expect-error onSignerError is 'proxy' | 'error'
registryRedirect({ signer, upstream: 'http://127.0.0.1:5000', onSignerError: 'ignore' });
// @ts-expect-error a signer's sign() returns { url, expiresAt }
export const bad: Signer = { name: 'x', sign: () => 42 };
`;

  // skipLibCheck stays off in one consumer so the shipped .d.ts files themselves are checked.
  async function typecheck(name: string, compilerOptions: Record<string, unknown>, files: Record<string, string>): Promise<void> {
    const dir = join(consumer, name);
    await mkdir(dir, { recursive: true });
    for (const [file, text] of Object.entries(files)) await writeFile(join(dir, file), text);
    await writeFile(
      join(dir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { strict: true, noEmit: true, skipLibCheck: true, target: 'es2022', types: ['node'], ...compilerOptions }, include: Object.keys(files) }),
    );
    const run = await runNode([join(consumer, 'node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json')], dir);
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
  }

  it('TypeScript, module/moduleResolution node16 (ESM consumer): typings resolve and are strict', async () => {
    await typecheck('ts-node16', { module: 'node16', moduleResolution: 'node16', skipLibCheck: false }, { 'index.ts': tsConsumer });
  }, 60_000);

  it('TypeScript, moduleResolution bundler: typings resolve and are strict', async () => {
    await typecheck('ts-bundler', { module: 'esnext', moduleResolution: 'bundler' }, { 'index.ts': tsConsumer });
  }, 60_000);

  it('TypeScript, a CommonJS .cts file under nodenext may require() the ESM package', async () => {
    await typecheck('ts-cjs', { module: 'nodenext', moduleResolution: 'nodenext' }, {
      'index.cts': "import rr = require('registry-redirect');\nexport const mw: rr.RegistryRedirectMiddleware = rr.registryRedirect({ signer: rr.azureSigner({ account: 'myaccount', accountKey: 'a2V5', container: 'registry' }), upstream: 'http://127.0.0.1:5000' });\n",
    });
  }, 60_000);
});

describe('the packaged CLI', () => {
  const cli = () => join(consumer, 'node_modules/registry-redirect/dist/server/cli.js');

  it('--version prints the package version', async () => {
    const run = await runNode([cli(), '--version'], consumer);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe(pkg.version);
  });

  it('--help and every command\'s --help exit 0 with usage text', async () => {
    const top = await runNode([cli(), '--help'], consumer);
    expect(top.code, top.stderr).toBe(0);
    expect(top.stdout).toMatch(/Usage:/);
    const commands = [...top.stdout.matchAll(/^\s+registry-redirect ([a-z][a-z-]*)\b/gm)].map((m) => m[1]!);
    expect(commands).toContain('serve');
    for (const command of new Set(commands)) {
      const help = await runNode([cli(), command, '--help'], consumer);
      expect(help.code, `${command} --help: ${help.stderr}`).toBe(0);
      expect(help.stdout, `${command} --help`).toMatch(new RegExp(`registry-redirect ${command}`));
    }
  });

  it('starts with a shebang so npm can link it as a bin', async () => {
    expect((await readFile(cli(), 'utf8')).startsWith('#!/usr/bin/env node\n')).toBe(true);
  });
});

describe('package linters (npm run lint:package)', () => {
  it('publint --strict finds nothing', async () => {
    const run = await runNode([join(ROOT, 'node_modules/publint/src/cli.js'), '--strict'], ROOT, { ...process.env });
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toMatch(/All good/);
  }, 60_000);

  it('@arethetypeswrong/cli finds no problem in the packed tarball (ESM-only profile from .attw.json)', async () => {
    const attwConfig = JSON.parse(await readFile(join(ROOT, '.attw.json'), 'utf8')) as { profile: string };
    expect(attwConfig.profile).toBe('esm-only');
    const run = await runNode([join(ROOT, 'node_modules/@arethetypeswrong/cli/dist/index.js'), packed.tarball, '--format', 'json'], ROOT, { ...process.env });
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    // The JSON report also lists what the profile ignores: only CommonJS resolution may complain
    // (an ESM-only package is loaded there with require(esm)); ESM and bundler resolution must be clean.
    const report = JSON.parse(run.stdout) as { problems: Record<string, Array<{ resolutionKind?: string }>> };
    const problems = Object.entries(report.problems).flatMap(([kind, list]) => list.map((p) => `${kind}@${p.resolutionKind ?? '?'}`));
    expect(problems.filter((p) => !/@(node10|node16-cjs)$/.test(p))).toEqual([]);
  }, 60_000);
});
