import { createRequire } from 'node:module';
import type * as Zod from 'zod';
import { RegistryRedirectError } from './errors.js';

// Dependencies that only some configurations use are loaded on first use, not at import: importing
// this package (or `registry-redirect --version`) then costs a few milliseconds, and a consumer
// without an optional peer dependency only needs it when it configures the feature. `require`
// loads ESM packages too (require(esm), Node >= 22.12), synchronously, so factories stay synchronous.
const load = createRequire(import.meta.url);

/** A value computed on first call, then reused. */
export function once<T>(make: () => T): () => T {
  let made = false;
  let value: T;
  return () => {
    if (!made) {
      value = make();
      made = true;
    }
    return value;
  };
}

/** True when `err` says that one of `packages` (or its entry file) cannot be found. */
export function isMissingPackage(err: unknown, packages: readonly string[]): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (!e || (e.code !== 'MODULE_NOT_FOUND' && e.code !== 'ERR_MODULE_NOT_FOUND')) return false;
  const message = String(e.message);
  return packages.some((name) => message.includes(`'${name}'`) || message.includes(`"${name}"`) || message.includes(`/node_modules/${name}/`));
}

/** The one line that says which packages a feature needs and how to install them. */
export function missingPackagesMessage(feature: string, packages: readonly string[]): string {
  const names = packages.length > 1 ? `${packages.slice(0, -1).join(', ')} and ${packages.at(-1)}` : packages[0];
  return `${feature} needs ${names}: npm install ${packages.join(' ')}`;
}

/**
 * Loads an optional peer dependency for `feature` (e.g. `authorize.token`), or throws
 * DEPENDENCY_MISSING with {@link missingPackagesMessage} when it is not installed.
 */
export function requireOptional<T>(name: string, feature: string, packages: readonly string[] = [name]): T {
  try {
    return load(name) as T;
  } catch (err) {
    if (isMissingPackage(err, [name])) throw new RegistryRedirectError('DEPENDENCY_MISSING', missingPackagesMessage(feature, packages), { cause: err });
    throw err;
  }
}

/** Loads a regular dependency on first use (see the note at the top of this file). */
export function requireDependency<T>(name: string): T {
  return load(name) as T;
}

/** zod, loaded when a configuration is first validated. */
export const zod = once(() => requireDependency<typeof Zod>('zod'));
