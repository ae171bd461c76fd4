/**
 * Helpers for tests that treat the package the way a user or a container build does: the packed
 * tarball, and a `node_modules` holding only the production dependencies (what
 * `npm ci --omit=dev` installs). No network: production packages are symlinked from this
 * checkout's `node_modules`, exactly the versions the lockfile pins.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, symlink } from 'node:fs/promises';
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
