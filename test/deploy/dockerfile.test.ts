import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AZURITE_KEY } from '../helpers/constants.js';
import { dockerignore, execForm, parseDockerfile, type Instruction, type Stage } from '../helpers/dockerfile.js';
import { ROOT, imagePackages, linkPackages, runNode } from '../helpers/package.js';
import { supervise } from '../support/child.js';
import { request, waitFor } from '../support/http.js';
import { freePort } from '../support/ports.js';

/**
 * There is no Docker engine here, so the Dockerfile is checked in three ways. First, it is parsed
 * and its shape is asserted: multi-stage, production deps only, non-root, HEALTHCHECK. Second, the
 * build stage is assembled from its own COPY lines and its `npm run build` is run there, which
 * proves the copied files are enough. Third, the runtime stage is assembled from its COPY lines
 * (dist from that build, node_modules with the production packages and the optional peers the
 * lockfile lists, as the deps stage installs them). Its
 * ENTRYPOINT/CMD and HEALTHCHECK commands are then run as written.
 */

const dockerfile = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; scripts: Record<string, string> };
const final = dockerfile.stages.at(-1)!;
const stage = (name: string): Stage => {
  const s = dockerfile.stages.find((x) => x.name === name);
  if (!s) throw new Error(`no stage ${name}`);
  return s;
};
const all = (s: Stage, keyword: string): Instruction[] => s.instructions.filter((i) => i.keyword === keyword);
const one = (s: Stage, keyword: string): Instruction => {
  const found = all(s, keyword);
  expect(found, keyword).toHaveLength(1);
  return found[0]!;
};

/** `ENV A=1 B=2` lines of a stage as an object. */
function envOf(s: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of all(s, 'ENV')) for (const m of i.args.matchAll(/(\w+)=(\S+)/g)) env[m[1]!] = m[2]!;
  return env;
}

describe('Dockerfile: shape', () => {
  it('is multi-stage: build compiles, deps installs production dependencies and every optional peer, the runtime copies from both', () => {
    expect(dockerfile.stages.map((s) => s.name)).toEqual(['build', 'deps', undefined]);
    const build = stage('build');
    expect(all(build, 'RUN').map((i) => i.args)).toEqual(['npm ci --ignore-scripts --no-audit --no-fund', 'npm run build']);
    expect(pkg.scripts.build).toBe('tsc -p tsconfig.build.json');
    const depsRun = one(stage('deps'), 'RUN').args;
    // The optional peers (cloud SDKs) become dependencies; dev dependencies go.
    const rewrite = /^node -e "([^"]+)"/.exec(depsRun)?.[1];
    expect(rewrite).toBeDefined();
    const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>;
    const files = new Map([['package.json', JSON.stringify(manifest)]]);
    const fs = { readFileSync: (f: string) => files.get(f)!, writeFileSync: (f: string, text: string) => files.set(f, text) };
    new Function('require', rewrite!)((m: string) => (m === 'fs' ? fs : undefined));
    const image = JSON.parse(files.get('package.json')!) as { dependencies: Record<string, string>; devDependencies?: unknown };
    expect(image.dependencies).toEqual({ ...(manifest.dependencies as object), ...(manifest.peerDependencies as object) });
    expect(image.devDependencies).toBeUndefined();
    expect(depsRun).toContain(' && npm install --omit=dev --ignore-scripts ');
    // The trim step removes typings and source maps only, never code or license files.
    const deleted = [...depsRun.matchAll(/-name '([^']+)'/g)].map((m) => m[1]);
    expect(deleted).toEqual(['*.d.ts', '*.d.mts', '*.d.cts', '*.map']);
    const copies = all(final, 'COPY').map((i) => i.args);
    expect(copies).toEqual(['--from=deps /app/node_modules ./node_modules', '--from=build /app/dist ./dist', 'package.json LICENSE README.md ./']);
    expect(all(final, 'RUN')).toEqual([]);
  });

  it('the runtime runs as a numeric non-root user, in production mode, and exposes the proxy port', () => {
    const user = one(final, 'USER').args;
    expect(user).toMatch(/^\d+(:\d+)?$/);
    expect(Number(user.split(':')[0])).toBeGreaterThan(0);
    const userIndex = final.instructions.findIndex((i) => i.keyword === 'USER');
    const entryIndex = final.instructions.findIndex((i) => i.keyword === 'ENTRYPOINT');
    expect(userIndex).toBeLessThan(entryIndex);
    expect(envOf(final).NODE_ENV).toBe('production');
    expect(one(final, 'EXPOSE').args.split(' ')).toContain('8080');
    for (const s of dockerfile.stages) {
      for (const i of [...all(s, 'ENV'), ...all(s, 'ARG')]) expect(i.args, 'no secrets baked into the image').not.toMatch(/KEY|SECRET|PASSWORD|TOKEN/i);
    }
  });

  it('every stage is node on alpine with a Node major that satisfies engines (>= 22.15)', () => {
    const major = Number(dockerfile.globalArgs.NODE_VERSION);
    expect(major).toBeGreaterThanOrEqual(22);
    for (const s of dockerfile.stages) expect(s.image).toBe('node:${NODE_VERSION}-alpine');
  });

  it('has an exec-form HEALTHCHECK against /healthz with bounded timings', () => {
    const hc = one(final, 'HEALTHCHECK').args;
    expect(hc).toMatch(/--interval=\d+s/);
    expect(hc).toMatch(/--timeout=\d+s/);
    expect(hc).toMatch(/--retries=\d+/);
    expect(execForm(hc)?.[0]).toBe('node');
    expect(envOf(final).HEALTHCHECK_URL).toBe('http://127.0.0.1:8080/healthz');
  });

  it('.dockerignore keeps every file the Dockerfile copies from the context and drops the rest', async () => {
    const ignored = dockerignore(await readFile(join(ROOT, '.dockerignore'), 'utf8'));
    const contextSources = dockerfile.stages
      .flatMap((s) => all(s, 'COPY'))
      .filter((i) => !i.args.startsWith('--from='))
      .flatMap((i) => i.args.split(' ').slice(0, -1));
    expect(contextSources.length).toBeGreaterThan(4);
    for (const source of contextSources) expect(ignored(source), source).toBe(false);
    expect(ignored('src/server/cli.ts')).toBe(false);
    for (const path of ['node_modules', 'node_modules/x/index.js', 'examples/x/node_modules/y', '.git/HEAD', 'dist/index.js', 'test/unit/a.test.ts', 'coverage/x', 'npm-debug.log', '.env']) {
      expect(ignored(path), path).toBe(true);
    }
  });
});

describe('Dockerfile: the build stage, assembled and run', () => {
  it('its COPY lines bring everything `npm run build` needs: dist/ comes out with the CLI and typings', async () => {
    const built = await buildStage();
    for (const file of ['dist/index.js', 'dist/index.d.ts', 'dist/server/cli.js']) expect(existsSync(join(built, file)), file).toBe(true);
  }, 90_000);
});

let buildStageDir: Promise<string> | undefined;
/**
 * The build stage in a temp dir: its context COPYs, node_modules as `npm ci` leaves it (every
 * dependency, linked from this checkout), then its RUN `npm run build` as the command it stands for.
 */
function buildStage(): Promise<string> {
  buildStageDir ??= (async () => {
    const build = stage('build');
    const dir = await mkdtemp(join(tmpdir(), 'rr-build-stage-'));
    expect(one(build, 'WORKDIR').args).toBe('/app');
    for (const copy of all(build, 'COPY')) {
      const parts = copy.args.split(' ');
      const dest = parts.pop()!;
      for (const source of parts) await cp(join(ROOT, source), join(dir, dest.endsWith('/') ? source : dest), { recursive: true });
    }
    await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
    expect(pkg.scripts.build).toBe('tsc -p tsconfig.build.json');
    const run = await runNode([join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], dir, {}, 90_000);
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    return dir;
  })();
  return buildStageDir;
}

afterAll(async () => {
  if (buildStageDir) await rm(await buildStageDir, { recursive: true, force: true });
});

describe('Dockerfile: the runtime stage, assembled and run', () => {
  let app: string;
  let etc: string;
  let port: number;

  /** Maps a path inside the image to the assembled directory. */
  const inImage = (path: string): string => path.replace(/^\/app\//, `${app}/`).replace(/^\/etc\/registry-redirect\//, `${etc}/`);

  beforeAll(async () => {
    const root = await mkdtemp(join(tmpdir(), 'rr-image-'));
    app = join(root, 'app');
    etc = join(root, 'etc');
    await mkdir(app, { recursive: true });
    await mkdir(etc, { recursive: true });
    expect(one(final, 'WORKDIR').args).toBe('/app');
    for (const copy of all(final, 'COPY')) {
      const parts = copy.args.split(' ');
      const from = parts[0]!.startsWith('--from=') ? parts.shift()!.slice('--from='.length) : undefined;
      const dest = parts.pop()!;
      for (const source of parts) {
        if (from === 'deps' && source === '/app/node_modules') await linkPackages(join(app, 'node_modules'), await imagePackages());
        else if (from === 'build' && source.startsWith('/app/')) await cp(join(await buildStage(), source.slice('/app/'.length)), join(app, dest), { recursive: true });
        else if (from === undefined) await cp(join(ROOT, source), join(app, dest.endsWith('/') || dest === './' ? source : dest));
        else throw new Error(`the test does not know how to assemble COPY ${copy.args}`);
      }
    }
    port = await freePort();
    await writeFile(
      join(etc, 'proxy.yaml'),
      `listen: 127.0.0.1:${port}\nupstream: http://127.0.0.1:9\nsigner:\n  azure:\n    account: devstoreaccount1\n    accountKey: \${AZURE_STORAGE_KEY}\n    container: registry\nlog:\n  level: warn\n`,
    );
  }, 120_000);

  afterAll(async () => {
    if (app) await rm(join(app, '..'), { recursive: true, force: true });
  });

  const command = (): string[] => [...execForm(one(final, 'ENTRYPOINT').args)!, ...execForm(one(final, 'CMD').args)!].map(inImage);

  it('ENTRYPOINT --version works from the assembled image (package.json is where the CLI looks)', async () => {
    const [node, cli] = command();
    expect(node).toBe('node');
    const run = await runNode([cli!, '--version'], app);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe(pkg.version);
  });

  it('ENTRYPOINT + CMD serve the proxy with the image dependencies; HEALTHCHECK passes, then fails once stopped; SIGTERM exits 0', async () => {
    const [, ...args] = command();
    const env = { PATH: process.env.PATH, ...envOf(final), HEALTHCHECK_URL: `http://127.0.0.1:${port}/healthz`, AZURE_STORAGE_KEY: AZURITE_KEY };
    const server = supervise(process.execPath, args, { cwd: app, env });
    try {
      await waitFor(async () => (await request(`http://127.0.0.1:${port}/healthz`, { timeoutMs: 1_000 })).status === 200, {
        timeoutMs: 20_000,
        label: 'image /healthz',
        describe: () => server.output(),
        giveUp: () => (server.child.exitCode !== null ? `exited: ${server.output()}` : undefined),
      });
      const healthcheck = execForm(one(final, 'HEALTHCHECK').args)!;
      const healthy = await runNode(healthcheck.slice(1), app, env, 10_000);
      expect(healthy.code, healthy.stderr).toBe(0);

      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
      const unhealthy = await runNode(healthcheck.slice(1), app, env, 10_000);
      expect(unhealthy.code).toBe(1);
    } finally {
      await server.stop();
    }
  }, 40_000);
});
