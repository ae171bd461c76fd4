#!/usr/bin/env node
// Re-renders the chart (and the Markdown table) of a results file: node bench/chart.js bench/results/<date>.json
import { readFileSync, writeFileSync } from 'node:fs';
import { writeArtifacts } from './lib/report.js';

const file = process.argv[2];
if (!file || !file.endsWith('.json')) {
  console.error('usage: node bench/chart.js bench/results/<date>.json');
  process.exit(2);
}
const base = file.slice(0, -'.json'.length);
writeArtifacts(JSON.parse(readFileSync(file, 'utf8')), base, writeFileSync);
console.log(`${base}.svg, ${base}.md`);
