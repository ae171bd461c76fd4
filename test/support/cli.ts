/**
 * Run the real `registry-redirect` CLI from the TypeScript sources (no build step), as a child
 * process: Node strips the types, a resolve hook maps `./x.js` imports to `./x.ts`. For tests of
 * what only a process has: signals (SIGHUP reload, SIGTERM shutdown), stdout JSON logs, exit codes.
 *
 * @module
 */
import { fileURLToPath } from 'node:url';
import { supervise, type Supervised } from './child.js';

const CLI = fileURLToPath(new URL('../../src/server/cli.ts', import.meta.url));
const HOOKS = new URL('./ts-hooks.mjs', import.meta.url).href;
const REGISTER = `data:text/javascript,import{register}from'node:module';register(${JSON.stringify(HOOKS)});`;

/** Spawn `registry-redirect ARGS...` with the current Node. Stop it with `stop()` (SIGTERM). */
export function startCli(args: string[], env: NodeJS.ProcessEnv = process.env): Supervised {
  return supervise(process.execPath, ['--no-warnings', '--import', REGISTER, CLI, ...args], { env });
}
