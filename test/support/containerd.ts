/**
 * A private containerd 1.6 (`/usr/bin/containerd`, Debian package `containerd`) and its `ctr`
 * client, for pushing and pulling through the proxy like a Kubernetes node or BuildKit would.
 *
 * Isolation: root, state and both sockets live in one temp dir, given in a minimal config file
 * (`-c`), so nothing under /etc/containerd or /var/lib/containerd is read or written; the CRI
 * plugin (which wants CNI and a kubelet) is disabled. Needs root (containerd refuses otherwise).
 * Bounded: every `ctr` run has a timeout and is killed after it.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './binaries.js';
import { supervise } from './child.js';
import { waitFor } from './http.js';

/** Result of one `ctr` run. */
export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A running containerd. */
export interface RunningContainerd {
  /** The gRPC socket (`ctr -a`). */
  address: string;
  /** `ctr -a <address> -n <namespace> ARGS` (namespace `rr-test`), never rejects for an exit code. */
  ctr(args: string[], opts?: { timeoutMs?: number }): Promise<CtrResult>;
  logs(): string;
  stop(): Promise<void>;
}

/** True when containerd and ctr are installed and this process may run them (root). */
export function canRunContainerd(): boolean {
  return findBinary('containerd') !== undefined && findBinary('ctr') !== undefined && process.getuid?.() === 0;
}

/** Starts containerd on a socket in a temp dir and waits until `ctr version` answers. */
export async function startContainerd(): Promise<RunningContainerd> {
  const dir = await mkdtemp(join(tmpdir(), 'rr-ctrd-'));
  const address = join(dir, 'c.sock');
  const config = join(dir, 'config.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = "${join(dir, 'root')}"`,
      `state = "${join(dir, 'state')}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${address}"`,
      '[ttrpc]',
      `  address = "${join(dir, 't.sock')}"`,
      '',
    ].join('\n'),
  );
  const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: dir, TMPDIR: dir };
  const proc = supervise(findBinary('containerd') ?? '/usr/bin/containerd', ['-c', config], { env });
  const ctrBin = findBinary('ctr') ?? '/usr/bin/ctr';
  const ctr = (args: string[], opts: { timeoutMs?: number } = {}): Promise<CtrResult> =>
    new Promise((resolve) => {
      execFile(ctrBin, ['-a', address, '-n', 'rr-test', ...args], { env, timeout: opts.timeoutMs ?? 60_000, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
        resolve({ code, stdout, stderr: stderr + (err && (err as { killed?: boolean }).killed ? '\n[ctr killed on timeout]' : '') });
      });
    });
  try {
    await waitFor(async () => (await ctr(['version'], { timeoutMs: 3_000 })).code === 0, { timeoutMs: 15_000, label: 'containerd answering ctr version' });
  } catch (err) {
    await proc.stop();
    await rm(dir, { recursive: true, force: true });
    throw new Error(`${err instanceof Error ? err.message : String(err)}\ncontainerd output:\n${proc.output()}`, { cause: err });
  }
  return {
    address,
    ctr,
    logs: () => proc.output(),
    async stop() {
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
