/**
 * Detect optional system binaries (docker-registry, skopeo) used by e2e tests.
 *
 * Locally a missing binary makes the suite skip with an install hint; on CI
 * (`process.env.CI` set) a missing binary is an error, so CI can never go green
 * by silently skipping the real-component tests.
 *
 * @module
 */
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/** Debian package that provides each binary, for the skip message. */
const PACKAGES: Record<string, string> = {
  'docker-registry': 'docker-registry',
  skopeo: 'skopeo',
  wrk: 'wrk',
  nginx: 'nginx-light',
};

// Debian installs daemons such as nginx in sbin, which is not on every user's PATH.
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/**
 * Resolve `name` to an executable path, searching `PATH` and then the sbin directories (or return `name` itself
 * if it is an absolute path to an executable). Returns `undefined` when not found.
 */
export function findBinary(name: string): string | undefined {
  const candidates = isAbsolute(name)
    ? [name]
    : [...(process.env.PATH ?? '').split(delimiter), ...SBIN].filter((d) => d !== '').map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      if (statSync(c).isFile()) return c;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Whether `name` is available on `PATH`.
 *
 * - found: returns `true`;
 * - missing and `process.env.CI` is set: **throws** (CI must fail on a missing package);
 * - missing locally: prints a warning with the install hint and returns `false`,
 *   so the caller can `describe.skipIf(!has)(...)`.
 */
export function requireBinary(name: string): boolean {
  if (findBinary(name) !== undefined) return true;
  const pkg = PACKAGES[name] ?? name;
  const msg = `${name} not installed; apt-get install ${pkg}`;
  if (process.env.CI) {
    throw new Error(`CI is set but ${msg}`);
  }
  console.warn(`skipping: ${msg}`);
  return false;
}
