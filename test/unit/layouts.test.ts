import { describe, expect, it } from 'vitest';
import { normalizeRoot, resolveLayout } from '../../src/layouts.js';

const HEX = 'ab'.repeat(32);
const D = `sha256:${HEX}`;

describe('resolveLayout', () => {
  it.each([
    [undefined, undefined, `docker/registry/v2/blobs/sha256/ab/${HEX}/data`],
    ['distribution', '', `docker/registry/v2/blobs/sha256/ab/${HEX}/data`],
    ['distribution', '/registry/', `registry/docker/registry/v2/blobs/sha256/ab/${HEX}/data`],
    ['distribution', 'a/b', `a/b/docker/registry/v2/blobs/sha256/ab/${HEX}/data`],
    ['oci-per-repo', '', `library/alpine/blobs/sha256/${HEX}`],
    ['oci-per-repo', '/zot', `zot/library/alpine/blobs/sha256/${HEX}`],
  ] as const)('layout %s root %s', (layout, root, key) => {
    expect(resolveLayout(layout, root)('library/alpine', D)).toBe(key);
  });

  it('accepts a custom function', () => {
    expect(resolveLayout((r, d) => `${r}@${d}`)('x', D)).toBe(`x@${D}`);
  });

  it('rejects an unknown layout naming the fix', () => {
    expect(() => resolveLayout('zot' as never)).toThrow(/layout: unknown value "zot"; write "distribution", "oci-per-repo"/);
  });

  it('normalizes roots', () => {
    expect(normalizeRoot('//a/b//')).toBe('a/b');
    expect(normalizeRoot(undefined)).toBe('');
  });
});
