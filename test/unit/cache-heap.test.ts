// Caches whose byte bounds could fill the V8 heap are refused at start (and on reload), naming the keys.
import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { assertCachesFitHeap } from '../../src/server/cache-config.js';
import { startServer } from '../../src/server/server.js';
import { silentLogger } from '../../src/log.js';

const MiB = 2 ** 20;
const base = (extra: object = {}) =>
  buildConfig({ listen: '127.0.0.1:0', upstream: 'http://127.0.0.1:9', signer: { hmac: { baseUrl: 'https://cdn.example.com', key: 'k'.repeat(32), preset: 'cloudflare' } }, preflight: 'off', ...extra });

describe('assertCachesFitHeap', () => {
  it('the defaults fit any heap of 128 MiB or more', () => {
    expect(() => assertCachesFitHeap(base(), 128 * MiB)).not.toThrow();
    expect(() => assertCachesFitHeap(base())).not.toThrow(); // this process's own limit
  });

  it('counts the decision cache once and the URL cache per signer, and names both keys and the fix', () => {
    const config = base({ authorize: { cache: { maxBytes: 200 * MiB } }, cache: { maxBytes: 100 * MiB } });
    expect(() => assertCachesFitHeap(config, 1024 * MiB)).not.toThrow(); // 300 of 1,024
    expect(() => assertCachesFitHeap(config, 512 * MiB)).toThrow(
      /authorize\.cache\.maxBytes \(200 MiB\) and cache\.maxBytes \(100 MiB for each of 1 signer\) add up to 300 MiB, more than half of this process's V8 heap limit \(512 MiB\).*NODE_OPTIONS=--max-old-space-size/,
    );
  });

  it('a disabled cache counts nothing', () => {
    const config = base({ authorize: { cache: { ttl: 0, maxBytes: 4000 * MiB } }, cache: { enabled: false, maxBytes: 4000 * MiB } });
    expect(() => assertCachesFitHeap(config, 256 * MiB)).not.toThrow();
  });

  it('startServer refuses such a config before listening', async () => {
    const config = base({ cache: { maxBytes: 64 * 1024 * MiB } });
    await expect(startServer(config, silentLogger)).rejects.toThrow(/cache\.maxBytes .* more than half of this process's V8 heap limit/);
  });
});
