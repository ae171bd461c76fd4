/**
 * Property-based fuzzing (fast-check) of the blob path parser, the gate in front of every
 * redirect. Invariants: it never throws; it never matches an uploads path; whatever it matches
 * re-serialises to exactly the input (so nothing was dropped, decoded or normalised on the way);
 * and every match carries a grammar-valid repository and digest.
 *
 * The rule engine (rollout policy) is fuzzed in rollout-rule-engine-fuzz.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blobPath, isValidDigest, isValidRepositoryName, parseBlobPath } from '../../src/routes.js';

const HEX = '0123456789abcdef';
const hex = (n: number) => fc.string({ unit: fc.constantFrom(...HEX), minLength: n, maxLength: n });
const digest = fc.oneof(hex(64).map((h) => `sha256:${h}`), hex(128).map((h) => `sha512:${h}`));
const almostDigest = fc.oneof(
  hex(63).map((h) => `sha256:${h}`),
  hex(65).map((h) => `sha256:${h}`),
  hex(64).map((h) => `sha256:${h.toUpperCase()}`),
  hex(64).map((h) => `sha384:${h}`),
  hex(64).map((h) => `SHA256:${h}`),
  hex(64).map((h) => `sha256:${h}%2f..`),
  hex(64).map((h) => `sha256%3a${h}`),
);
const component = fc.oneof(
  fc.stringMatching(/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/, { size: 'small' }),
  fc.constantFrom('..', '.', '', '%2e%2e', '%2f', 'A', '-a', 'a-', 'a___b', 'blobs', 'uploads', 'manifests', '\\', '%00', 'é'),
);
const name = fc.array(component, { minLength: 1, maxLength: 5 }).map((c) => c.join('/'));
const query = fc.constantFrom('', '?', '?ns=docker.io', '?a=b&c=%2e%2e', '?/../x');
const blobish = fc.tuple(name, fc.oneof(digest, almostDigest), query).map(([n, d, q]) => `/v2/${n}/blobs/${d}${q}`);
// distribution's upload routes: /v2/<name>/blobs/uploads/ and /v2/<name>/blobs/uploads/<id> (id without "/")
const uploadId = fc.oneof(fc.uuid(), digest, fc.stringMatching(/^[a-zA-Z0-9._=-]{1,40}$/));
const uploads = fc
  .tuple(name, fc.option(uploadId, { nil: undefined }), query)
  .map(([n, id, q]) => `/v2/${n}/blobs/uploads/${id ?? ''}${q}`);
const anything = fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme-ascii', maxLength: 300 }).map((s) => `/v2/${s}`));

describe('parseBlobPath (fast-check)', () => {
  it('never throws, on anything', () => {
    fc.assert(
      fc.property(fc.oneof(anything, blobish, uploads), (url) => {
        parseBlobPath(url);
      }),
      { numRuns: 3_000 },
    );
  });

  it('never matches an uploads path', () => {
    fc.assert(
      fc.property(uploads, (url) => {
        expect(parseBlobPath(url)).toBeUndefined();
      }),
      { numRuns: 2_000 },
    );
  });

  it('a match re-serialises to exactly the input (query aside), with a valid name and digest', () => {
    let matched = 0;
    fc.assert(
      fc.property(fc.oneof(blobish, anything), (url) => {
        const target = parseBlobPath(url);
        if (target === undefined) return;
        matched++;
        const q = url.indexOf('?');
        expect(blobPath(target)).toBe(q < 0 ? url : url.slice(0, q));
        expect(isValidRepositoryName(target.repository)).toBe(true);
        expect(isValidDigest(target.digest)).toBe(true);
      }),
      { numRuns: 3_000 },
    );
    expect(matched).toBeGreaterThan(100); // the generator really reaches valid blob paths
  });

  it('every grammar-valid (name, digest) pair is matched and round-trips', () => {
    const validName = fc
      .array(fc.stringMatching(/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/, { size: 'small' }), { minLength: 1, maxLength: 4 })
      .map((c) => c.join('/'))
      .filter((n) => n.length <= 255);
    fc.assert(
      fc.property(validName, digest, query, (n, d, q) => {
        expect(parseBlobPath(`/v2/${n}/blobs/${d}${q}`)).toEqual({ repository: n, digest: d });
      }),
      { numRuns: 2_000 },
    );
  });
});
