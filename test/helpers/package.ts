/**
 * Helpers for tests that treat the package the way a user or a container build does: the packed
 * tarball installed with npm (from its cache where it can), and a `node_modules` holding what the
 * container image installs, symlinked from this checkout's `node_modules` (exactly the versions the
 * lockfile pins, no network).
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, readdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The repository root (holds package.json). */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface LockEntry {
  dev?: boolean;
  optional?: boolean;
  link?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

/**
 * Top-level packages `npm ci --omit=dev` installs, read from package-lock.json (v2/v3): every
 * `node_modules/<name>` entry not marked `dev`. Nested copies come along inside their parents.
 */
export async function productionPackages(): Promise<string[]> {
  const lock = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  return Object.entries(lock.packages)
    .filter(([path, entry]) => /^node_modules\/(?:@[^/]+\/)?[^/]+$/.test(path) && !entry.dev)
    .map(([path]) => path.slice('node_modules/'.length))
    .sort();
}

/**
 * Top-level packages of the container image: the production dependencies plus the optional peer
 * dependencies (cloud SDKs) and everything they depend on, as the Dockerfile's deps
 * stage installs them. Read from package.json and package-lock.json.
 */
export async function imagePackages(): Promise<string[]> {
  const lock = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const manifest = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { peerDependencies?: Record<string, string> };
  const names = new Set(await productionPackages());
  const queue = Object.keys(manifest.peerDependencies ?? {});
  while (queue.length) {
    const name = queue.shift()!;
    const entry = lock.packages[`node_modules/${name}`];
    if (!entry || names.has(name)) continue;
    names.add(name);
    queue.push(...Object.keys({ ...entry.dependencies, ...entry.optionalDependencies }));
  }
  return [...names].sort();
}

/**
 * Fill `nodeModules` with symlinks to the production packages of this checkout (plus `extra`
 * package names, e.g. a consumer's own devDependencies such as `typescript`).
 */
export async function linkPackages(nodeModules: string, names: readonly string[]): Promise<void> {
  await mkdir(nodeModules, { recursive: true });
  for (const name of new Set(names)) {
    const target = join(ROOT, 'node_modules', name);
    const link = join(nodeModules, name);
    if (name.startsWith('@')) await mkdir(join(nodeModules, name.split('/')[0]!), { recursive: true });
    await symlink(target, link, 'dir');
  }
}

/** One file of `npm pack --json`. */
export interface PackedFile {
  path: string;
  size: number;
  mode: number;
}

/** Result of {@link npmPack}. */
export interface Packed {
  /** Absolute path of the `.tgz`. */
  tarball: string;
  files: PackedFile[];
}

/** `npm pack` this checkout into `dest` (scripts skipped: `dist/` must be built already). */
export async function npmPack(dest: string): Promise<Packed> {
  const { stdout } = await execFileAsync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], {
    cwd: ROOT,
    env: { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' },
    maxBuffer: 16 << 20,
    timeout: 60_000,
  });
  const [result] = JSON.parse(stdout) as Array<{ filename: string; files: PackedFile[] }>;
  if (!result) throw new Error(`npm pack printed no result: ${stdout}`);
  return { tarball: join(dest, result.filename), files: result.files };
}

/** Unpack an npm tarball (its `package/` prefix stripped) into `dir`. */
export async function extractTarball(tarball: string, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await execFileAsync('tar', ['-xzf', tarball, '-C', dir, '--strip-components=1'], { timeout: 30_000 });
}

/** Result of {@link runNode}. */
export interface NodeRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `node ARGS` (this Node binary) in `cwd`; never rejects for a non-zero exit. */
export async function runNode(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<NodeRun> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, args, {
      cwd,
      env: { PATH: process.env.PATH, ...env },
      timeout: timeoutMs,
      maxBuffer: 16 << 20,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string; message: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: `${e.stderr ?? ''}\n${e.message}` };
  }
}

/** `npm install ARGS` in `cwd`, from npm's cache where it can (`--prefer-offline`), no scripts. */
export async function npmInstall(cwd: string, args: string[], timeoutMs = 180_000): Promise<void> {
  await execFileAsync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', '--no-package-lock', ...args], {
    cwd,
    env: { ...process.env, npm_config_update_notifier: 'false' },
    maxBuffer: 16 << 20,
    timeout: timeoutMs,
  });
}

/**
 * The packages in a `node_modules` tree: every directory with a package.json directly in a
 * `node_modules` (or in a scope inside one), nested copies included.
 */
export async function installedPackages(nodeModules: string): Promise<string[]> {
  const found: string[] = [];
  async function walk(dir: string, prefix: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory() || e.name.startsWith('.')) continue;
      if (e.name.startsWith('@')) {
        await walk(join(dir, e.name), `${prefix}${e.name}/`);
        continue;
      }
      const pkgDir = join(dir, e.name);
      try {
        await readFile(join(pkgDir, 'package.json'));
      } catch {
        continue;
      }
      found.push(`${prefix}${e.name}`);
      await walk(join(pkgDir, 'node_modules'), '');
    }
  }
  await walk(nodeModules, '');
  return found.sort();
}

/** Disk usage of a directory in bytes (`du -sk`, what the disk holds). */
export async function diskUsage(dir: string): Promise<number> {
  const { stdout } = await execFileAsync('du', ['-sk', dir], { timeout: 30_000 });
  return Number(stdout.split(/\s/)[0]) * 1024;
}
