/**
 * Run the real client `skopeo` (containers/image) in an isolated, bounded way.
 *
 * Isolation: every run gets a fresh temp HOME / XDG dirs / `REGISTRY_AUTH_FILE`
 * / `DOCKER_CONFIG`, an empty `registries.conf` and an accept-anything signature
 * policy. containers/image falls back to `~/.config/containers/auth.json` and
 * `~/.docker/config.json` even when `--authfile` is given, so pointing HOME
 * elsewhere is what really keeps the developer's credentials out of tests.
 *
 * Bounded: every run has a timeout (default 60 s) after which skopeo is killed
 * with SIGKILL and the result has `timedOut: true`.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './binaries.js';
import type { OciImage } from './oci-image.js';

/** Result of one skopeo run. */
export interface SkopeoResult {
  /** Exit code; -1 when killed by a signal (e.g. on timeout). */
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** `user:password` for `--src-creds` / `--dest-creds`. */
export interface Creds {
  username: string;
  password: string;
}

/** Options for {@link skopeo}. */
export interface SkopeoOptions {
  /** Kill after this many ms (default 60 000). */
  timeoutMs?: number;
  /** Extra environment variables (applied after the isolation variables). */
  env?: Record<string, string>;
}

/**
 * Run `skopeo --policy <accept-anything> ARGS...` in an isolated environment.
 * Never rejects for a non-zero exit; rejects only if skopeo cannot be spawned.
 */
export async function skopeo(args: string[], opts: SkopeoOptions = {}): Promise<SkopeoResult> {
  const bin = findBinary('skopeo') ?? '/usr/bin/skopeo';
  const home = await mkdtemp(join(tmpdir(), 'rr-skopeo-'));
  try {
    const policy = join(home, 'policy.json');
    const authFile = join(home, 'auth.json');
    const registriesConf = join(home, 'registries.conf');
    await mkdir(join(home, '.config', 'containers'), { recursive: true });
    await mkdir(join(home, 'run'), { recursive: true, mode: 0o700 });
    await mkdir(join(home, '.docker'), { recursive: true });
    await mkdir(join(home, 'tmp'), { recursive: true });
    await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    await writeFile(authFile, JSON.stringify({ auths: {} }), { mode: 0o600 });
    await writeFile(registriesConf, 'unqualified-search-registries = []\n');

    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: home,
      XDG_CONFIG_HOME: join(home, '.config'),
      XDG_RUNTIME_DIR: join(home, 'run'),
      DOCKER_CONFIG: join(home, '.docker'),
      REGISTRY_AUTH_FILE: authFile,
      CONTAINERS_REGISTRIES_CONF: registriesConf,
      TMPDIR: join(home, 'tmp'),
      LANG: 'C',
      ...opts.env,
    };
    const timeoutMs = opts.timeoutMs ?? 60_000;
    return await new Promise<SkopeoResult>((resolve, reject) => {
      const child = spawn(bin, ['--policy', policy, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        if (timedOut) stderr += `\n[skopeo killed after ${timeoutMs} ms]`;
        resolve({ code: code ?? -1, stdout, stderr, timedOut });
      });
    });
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

function credsArg(flag: string, creds: Creds | undefined): string[] {
  return creds ? [`${flag}=${creds.username}:${creds.password}`] : [];
}

/**
 * Push `image` (an OCI layout) to `destRef`, e.g. `docker://127.0.0.1:5000/team/app:v1`.
 * Plain HTTP (`--dest-tls-verify=false`); digests are preserved (no conversion).
 */
export function skopeoPush(
  image: OciImage | string,
  destRef: string,
  creds?: Creds,
  opts?: SkopeoOptions,
): Promise<SkopeoResult> {
  const src = typeof image === 'string' ? image : image.ref;
  return skopeo(['copy', '--dest-tls-verify=false', ...credsArg('--dest-creds', creds), src, destRef], opts);
}

/**
 * Pull `srcRef` (e.g. `docker://127.0.0.1:5000/team/app:v1`) into a `dir:` transport
 * directory `outDir` (blobs as files named by hex digest, plus `manifest.json`).
 * skopeo verifies every blob digest while copying.
 */
export function skopeoPull(
  srcRef: string,
  outDir: string,
  creds?: Creds,
  opts?: SkopeoOptions,
): Promise<SkopeoResult> {
  return skopeo(['copy', '--src-tls-verify=false', ...credsArg('--src-creds', creds), srcRef, `dir:${outDir}`], opts);
}

async function fileDigest(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** Result of {@link verifyPulledDir}. */
export interface PullVerification {
  ok: boolean;
  /** Human-readable mismatches; empty when ok. */
  problems: string[];
  /** Whether the pulled `manifest.json` is byte-identical to the pushed manifest. */
  manifestMatches: boolean;
}

/**
 * Check a `dir:` pull against the image that was pushed: every layer and the
 * config must exist under their hex digest and hash to it, and the manifest
 * must list the same layer digests.
 */
export async function verifyPulledDir(outDir: string, image: OciImage): Promise<PullVerification> {
  const problems: string[] = [];
  const expected = [...image.layers.map((l) => l.digest), image.configDigest];
  for (const digest of expected) {
    const path = join(outDir, digest.slice('sha256:'.length));
    try {
      const got = await fileDigest(path);
      if (got !== digest) problems.push(`${path}: sha256 ${got} != ${digest}`);
    } catch (err) {
      problems.push(`${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  let manifestMatches = false;
  try {
    const raw = await readFile(join(outDir, 'manifest.json'));
    manifestMatches = `sha256:${createHash('sha256').update(raw).digest('hex')}` === image.manifestDigest;
    const m = JSON.parse(raw.toString('utf8')) as { layers?: Array<{ digest?: string }> };
    const got = (m.layers ?? []).map((l) => l.digest);
    const want = image.layers.map((l) => l.digest);
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      problems.push(`manifest layers ${JSON.stringify(got)} != ${JSON.stringify(want)}`);
    }
  } catch (err) {
    problems.push(`manifest.json: ${err instanceof Error ? err.message : String(err)}`);
  }
  return { ok: problems.length === 0, problems, manifestMatches };
}
