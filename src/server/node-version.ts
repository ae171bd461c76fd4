/** The oldest Node.js this package runs on (the AWS SDK needs it; it also has require(esm) unflagged). */
export const REQUIRED_NODE = '22.15.0';

function parts(version: string): [number, number, number] {
  const [major = 0, minor = 0, patch = 0] = version.replace(/^v/, '').split('.').map((p) => Number.parseInt(p, 10) || 0);
  return [major, minor, patch];
}

/**
 * The one line to print when `version` (default: this process's) is older than
 * {@link REQUIRED_NODE}, else undefined. scripts/check-node.mjs says the same for npm scripts.
 */
export function nodeVersionProblem(version: string = process.versions.node): string | undefined {
  const [a, b, c] = parts(version);
  const [x, y, z] = parts(REQUIRED_NODE);
  const old = a !== x ? a < x : b !== y ? b < y : c < z;
  if (!old) return undefined;
  return `registry-redirect needs Node.js >= 22.15 (this is ${version}); install Node 22 LTS or newer from https://nodejs.org/en/download (or: nvm install 22), or run the container image`;
}
