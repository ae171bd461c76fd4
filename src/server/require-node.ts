/**
 * Imported first by the CLI, so that on an old Node it prints one line and exits before the
 * dependencies (which fail there in obscure ways) are evaluated.
 */
import { nodeVersionProblem } from './node-version.js';

const problem = nodeVersionProblem();
if (problem) {
  console.error(problem);
  process.exit(1);
}
