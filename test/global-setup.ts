import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/**
 * CLI tests spawn the built binary (`dist/server/cli.js`), exactly what users run. `npm test`
 * builds first; a bare `vitest run` rebuilds here when `src/` is newer than `dist/`.
 */
export default function setup(): void {
  const root = new URL('..', import.meta.url).pathname;
  let built: number;
  try {
    built = statSync(join(root, 'dist/server/cli.js')).mtimeMs;
  } catch {
    built = 0;
  }
  if (built < newestMtime(join(root, 'src'))) {
    execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
  }
}
