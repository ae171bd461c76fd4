import { describe, expect, it } from 'vitest';
import { isSameHostOrSubdomain } from '../../src/same-host.js';

describe('isSameHostOrSubdomain (Go clients keep Authorization on such redirects)', () => {
  it.each([
    ['https://registry.example.com/x', 'registry.example.com'],
    ['https://registry.example.com:8443/x', 'registry.example.com'],
    ['https://registry.example.com/x', 'registry.example.com:5000'],
    ['https://blobs.registry.example.com/x?sig=1', 'registry.example.com'],
    ['https://a.b.registry.example.com', 'registry.example.com'],
    ['https://BLOBS.Registry.Example.com/x', 'registry.EXAMPLE.com:443'],
    ['https://blobs.registry.example.com./x', 'registry.example.com'],
    ['https://registry.example.com/x', 'registry.example.com.'],
    ['https://user:pw@blobs.registry.example.com/x', 'registry.example.com'],
    ['https://blobs.registry.example.com?x', 'registry.example.com'],
    ['https://blobs.registry.example.com#x', 'registry.example.com'],
    ['http://127.0.0.1:10000/devstoreaccount1/x', '127.0.0.1:5000'],
    ['http://[::1]:10000/x', '[::1]:5000'],
    ['http://[::1]/x', '[::1]'],
  ])('%s is on %s', (location, host) => {
    expect(isSameHostOrSubdomain(location, host)).toBe(true);
  });

  it.each([
    ['https://registry.example.com/x', undefined],
    ['https://registry.example.com/x', ''],
    ['https://xregistry.example.com/x', 'registry.example.com'],
    ['https://registry.example.com.evil/x', 'registry.example.com'],
    ['https://example.com/x', 'registry.example.com'],
    ['https://blobs.example.com/x', 'registry.example.com'],
    ['https://cdn.example/registry.example.com/x', 'registry.example.com'],
    ['https://cdn.example/?h=registry.example.com', 'registry.example.com'],
    ['https://registry.example.com@cdn.example/x', 'registry.example.com'],
    ['http://127.0.0.2:10000/x', '127.0.0.1:5000'],
    ['http://[::2]/x', '[::1]'],
  ])('%s is not on %s', (location, host) => {
    expect(isSameHostOrSubdomain(location, host)).toBe(false);
  });
});
