/**
 * Run podman 4 (rootful, `--storage-driver vfs`) in an isolated, bounded way.
 *
 * Isolation: every instance has its own `--root`/`--runroot`/`--tmpdir` in a temp dir, an empty
 * `registries.conf` and auth file (`CONTAINERS_REGISTRIES_CONF`, `REGISTRY_AUTH_FILE`), a
 * `containers.conf` with file events and cgroupfs, an accept-anything signature policy and a temp
 * HOME, so neither /var/lib/containers nor the developer's credentials are used. vfs needs no
 * kernel overlay support. Needs root. Bounded: each run is killed after its timeout.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './binaries.js';

/** Result of one podman run. */
export interface PodmanResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** An isolated podman store. */
export interface Podman {
  /** `podman <isolation flags> ARGS`; never rejects for an exit code. */
  run(args: string[], opts?: { timeoutMs?: number }): Promise<PodmanResult>;
  /** Remove the store (vfs layers are plain copies: chmod-safe `rm -rf`). */
  cleanup(): Promise<void>;
}

/** True when podman is installed and this process may run it rootful. */
export function canRunPodman(): boolean {
  return findBinary('podman') !== undefined && process.getuid?.() === 0;
}

export async function makePodman(): Promise<Podman> {
  const dir = await mkdtemp(join(tmpdir(), 'rr-podman-'));
  for (const d of ['root', 'runroot', 'tmp', 'home', 'run']) await mkdir(join(dir, d), { recursive: true, mode: 0o700 });
  const registriesConf = join(dir, 'registries.conf');
  const authFile = join(dir, 'auth.json');
  const containersConf = join(dir, 'containers.conf');
  const policy = join(dir, 'policy.json');
  await writeFile(registriesConf, 'unqualified-search-registries = []\n');
  await writeFile(authFile, JSON.stringify({ auths: {} }), { mode: 0o600 });
  await writeFile(containersConf, '[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: join(dir, 'home'),
    XDG_RUNTIME_DIR: join(dir, 'run'),
    XDG_CONFIG_HOME: join(dir, 'home', '.config'),
    DOCKER_CONFIG: join(dir, 'home', '.docker'),
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    CONTAINERS_CONF: containersConf,
    REGISTRY_AUTH_FILE: authFile,
    TMPDIR: join(dir, 'tmp'),
    LANG: 'C',
  };
  const bin = findBinary('podman') ?? '/usr/bin/podman';
  const base = ['--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--storage-driver', 'vfs', '--tmpdir', join(dir, 'tmp'), '--events-backend', 'file', '--cgroup-manager', 'cgroupfs'];
  return {
    run: (args, opts = {}) =>
      new Promise((resolve) => {
        // `--signature-policy` is a per-command flag of pull/push, not a global one.
        const withPolicy = args[0] === 'pull' || args[0] === 'push' ? [args[0], '--signature-policy', policy, ...args.slice(1)] : args;
        execFile(bin, [...base, ...withPolicy], { env, timeout: opts.timeoutMs ?? 60_000, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
          resolve({ code, stdout, stderr: stderr + (err && (err as { killed?: boolean }).killed ? '\n[podman killed on timeout]' : '') });
        });
      }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
