#!/usr/bin/env node
// Run first by `npm start` and `npm test`: on an old Node they would fail in obscure ways (36
// EBADENGINE warnings, then `Map.groupBy is not a function`). Plain JavaScript that runs on any
// Node; the same rule and words as src/server/node-version.ts (test/unit/node-version.test.ts).
const required = [22, 15, 0];
const version = process.versions.node;
const have = version.split('.').map((p) => Number.parseInt(p, 10) || 0);
const old = have[0] !== required[0] ? have[0] < required[0] : have[1] !== required[1] ? have[1] < required[1] : have[2] < required[2];
if (old) {
  console.error(`registry-redirect needs Node.js >= 22.15 (this is ${version}); install Node 22 LTS or newer from https://nodejs.org/en/download (or: nvm install 22), or run the container image`);
  process.exit(1);
}
