import { describe, expect, it } from 'vitest';
import { blobPath, isValidDigest, isValidRepositoryName, parseBlobPath } from '../../src/routes.js';

const SHA256 = `sha256:${'a'.repeat(64)}`;
const SHA512 = `sha512:${'0123456789abcdef'.repeat(8)}`;

describe('parseBlobPath', () => {
  it.each([
    [`/v2/alpine/blobs/${SHA256}`, 'alpine', SHA256],
    [`/v2/library/alpine/blobs/${SHA256}`, 'library/alpine', SHA256],
    [`/v2/a/b/c/d/blobs/${SHA512}`, 'a/b/c/d', SHA512],
    [`/v2/my-app/blobs/${SHA256}?ns=docker.io`, 'my-app', SHA256],
    [`/v2/a.b_c__d---e/blobs/${SHA256}`, 'a.b_c__d---e', SHA256],
    // A repository may itself be called ".../blobs": the last /blobs/ segment separates.
    [`/v2/foo/blobs/blobs/${SHA256}`, 'foo/blobs', SHA256],
    [`/v2/${'a'.repeat(255)}/blobs/${SHA256}`, 'a'.repeat(255), SHA256],
  ])('accepts %s', (url, repository, digest) => {
    expect(parseBlobPath(url)).toEqual({ repository, digest });
  });

  it.each([
    ['not under /v2/', `/v1/alpine/blobs/${SHA256}`],
    ['no name', `/v2/blobs/${SHA256}`],
    ['empty name', `/v2//blobs/${SHA256}`],
    ['double slash in name', `/v2/a//b/blobs/${SHA256}`],
    ['uppercase name', `/v2/Alpine/blobs/${SHA256}`],
    ['percent-encoded dots', `/v2/%2e%2e/blobs/${SHA256}`],
    ['percent-encoded slash', `/v2/a%2fb/blobs/${SHA256}`],
    ['dot-dot component', `/v2/../blobs/${SHA256}`],
    ['leading separator', `/v2/-a/blobs/${SHA256}`],
    ['trailing separator', `/v2/a-/blobs/${SHA256}`],
    ['triple underscore', `/v2/a___b/blobs/${SHA256}`],
    ['256-char name', `/v2/${'a'.repeat(256)}/blobs/${SHA256}`],
    ['uploads path', `/v2/alpine/blobs/uploads/`],
    ['uploads session', `/v2/alpine/blobs/uploads/0b6c7c5e-1d7e-4d3a-9b1e-3e2f0d8f6a11?_state=abc`],
    ['uploads with a digest-looking id', `/v2/alpine/blobs/uploads/${SHA256}`],
    ['uppercase hex', `/v2/alpine/blobs/sha256:${'A'.repeat(64)}`],
    ['short hex', `/v2/alpine/blobs/sha256:${'a'.repeat(63)}`],
    ['long hex', `/v2/alpine/blobs/sha256:${'a'.repeat(65)}`],
    ['sha512 with 64 hex', `/v2/alpine/blobs/sha512:${'a'.repeat(64)}`],
    ['unknown algorithm', `/v2/alpine/blobs/md5:${'a'.repeat(32)}`],
    ['no algorithm', `/v2/alpine/blobs/${'a'.repeat(64)}`],
    ['trailing slash', `/v2/alpine/blobs/${SHA256}/`],
    ['manifest', `/v2/alpine/manifests/latest`],
    ['base', '/v2/'],
    ['catalog', '/v2/_catalog'],
    ['CR/LF injection', `/v2/alpine/blobs/${SHA256}\r\nX: y`],
  ])('rejects %s', (_why, url) => {
    expect(parseBlobPath(url)).toBeUndefined();
  });

  it('round-trips: blobPath(parse(url)) === url without query', () => {
    const url = `/v2/library/alpine/blobs/${SHA256}`;
    const t = parseBlobPath(url);
    expect(t && blobPath(t)).toBe(url);
  });

  it('stays linear on a pathological near-miss name (no catastrophic backtracking)', () => {
    const evil = `/v2/${'a'.repeat(240)}!/blobs/${SHA256}`;
    const start = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) parseBlobPath(evil);
    // Generous bound: exponential backtracking would take seconds even for one call.
    expect(Number(process.hrtime.bigint() - start) / 1e6).toBeLessThan(2000);
  });
});

describe('isValidDigest / isValidRepositoryName', () => {
  it('validates digests', () => {
    expect(isValidDigest(SHA256)).toBe(true);
    expect(isValidDigest(SHA512)).toBe(true);
    expect(isValidDigest('sha256:')).toBe(false);
    expect(isValidDigest('sha256')).toBe(false);
    expect(isValidDigest(`sha256:${'g'.repeat(64)}`)).toBe(false);
  });
  it('validates names', () => {
    expect(isValidRepositoryName('a')).toBe(true);
    expect(isValidRepositoryName('')).toBe(false);
    expect(isValidRepositoryName('a/')).toBe(false);
    expect(isValidRepositoryName('a'.repeat(255))).toBe(true);
    expect(isValidRepositoryName('a'.repeat(256))).toBe(false);
  });
});
