import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/package.js';

/** docs/deploy.md and the example READMEs stay true to the code and to each other. */

const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');
const deployDoc = read('docs/deploy.md');
const readmes = ['docs/deploy.md', ...readdirSync(join(ROOT, 'examples'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(ROOT, 'examples', d.name, 'README.md')))
  .map((d) => `examples/${d.name}/README.md`)];

describe('docs', () => {
  it('the error reference has a row for every ErrorCode in src/errors.ts', () => {
    const union = /export type ErrorCode =([^;]+);/.exec(read('src/errors.ts'))?.[1] ?? '';
    const codes = [...union.matchAll(/'([A-Z_]+)'/g)].map((m) => m[1]!);
    expect(codes.length).toBeGreaterThanOrEqual(5);
    for (const code of codes) expect(deployDoc, code).toMatch(new RegExp(`^\\| \`${code}\` \\|`, 'm'));
  });

  it('every OCI error code the proxy emits is in the HTTP table', () => {
    const union = /export type OciErrorCode =([^;]+);/.exec(read('src/errors.ts'))?.[1] ?? '';
    const sources = ['src/middleware.ts', 'src/proxy.ts', 'src/authorize/upstream.ts'].map(read).join('\n');
    const emitted = new Set([...sources.matchAll(/sendOciError\(res, \d+, '([A-Z_]+)'/g)].map((m) => m[1]!));
    expect(emitted.size).toBeGreaterThan(0);
    for (const code of emitted) {
      expect(union).toContain(`'${code}'`);
      if (code !== 'DENIED') expect(deployDoc, code).toContain(`\`${code}\``);
    }
  });

  it('every relative link in docs/deploy.md and the example READMEs points at an existing file', () => {
    expect(readmes.length).toBeGreaterThanOrEqual(6);
    for (const doc of readmes) {
      for (const m of read(doc).matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue;
        expect(existsSync(join(ROOT, dirname(doc), target)), `${doc} -> ${target}`).toBe(true);
      }
    }
  });

  it('the example READMEs and the deploy doc name files that exist', () => {
    for (const doc of readmes) {
      for (const m of read(doc).matchAll(/`((?:examples|test|scripts|docs|src)\/[\w./-]+\.(?:ts|js|mjs|json|yaml|yml|md))`/g)) {
        expect(existsSync(join(ROOT, m[1]!)), `${doc} mentions ${m[1]}`).toBe(true);
      }
    }
  });
});
