import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CHECK_USAGE } from '../../src/server/check.js';
import { ROOT } from '../helpers/package.js';

/** Every `#anchor` a reader can follow (README-internal, into README from other docs, printed by the CLI) is a real heading. */

const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
export function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    if (fenced) continue;
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const slug = m[1]!
      .toLowerCase()
      .replace(/<[^>]*>/g, '')
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return anchors;
}

function markdownFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((d) => {
    if (d.name === 'node_modules' || d.name.startsWith('.') || d.name === 'dist') return [];
    const path = join(dir, d.name);
    if (d.isDirectory()) return markdownFiles(path);
    return d.name.endsWith('.md') ? [path] : [];
  });
}

const readme = headingAnchors(read('README.md'));

describe('links to README headings', () => {
  it('the slugger knows GitHub\'s rules', () => {
    expect(headingAnchors('## Reverse proxy: `registry-redirect serve --config proxy.yaml`\n## A & B\n## A & B')).toEqual(
      new Set(['reverse-proxy-registry-redirect-serve---config-proxyyaml', 'a--b', 'a--b-1']),
    );
  });

  it('every #anchor link inside README.md resolves', () => {
    const links = [...read('README.md').matchAll(/\]\(#([^)\s]+)\)/g)].map((m) => m[1]!);
    expect(links.length).toBeGreaterThan(5);
    for (const anchor of links) expect(readme, `#${anchor}`).toContain(anchor);
  });

  it('every link from another markdown file to README.md#anchor resolves', () => {
    for (const file of markdownFiles('.').filter((f) => f !== 'README.md')) {
      for (const m of read(file).matchAll(/\]\(((?:\.\.\/)*)README\.md#([^)\s]+)\)/g)) {
        if (relative(ROOT, join(ROOT, file, '..', m[1]!, 'README.md')) !== 'README.md') continue;
        expect(readme, `${file} -> README.md#${m[2]}`).toContain(m[2]!);
      }
    }
  });

  it('every README.md#anchor the CLI prints resolves', () => {
    const sources = ['src/server/cli.ts', 'src/server/check.ts', 'src/server/config.ts', 'src/server/docs-links.ts'].map(read).join('\n') + CHECK_USAGE;
    const printed = [...sources.matchAll(/README\.md#([a-z0-9_-]+)/g)].map((m) => m[1]!);
    expect(printed.length).toBeGreaterThan(0);
    for (const anchor of printed) expect(readme, `README.md#${anchor}`).toContain(anchor);
    // Named headings in quotes ("see README.md "Configuration"") are links too, and must exist.
    for (const m of sources.matchAll(/README\.md "([^"]+)"/g)) expect(readme).toContain(headingAnchors(`## ${m[1]}`).values().next().value);
  });
});
