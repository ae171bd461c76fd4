import { afterEach, describe, expect, it } from 'vitest';
import { COLLECT_ABOVE_BYTES, CHECK_EVERY_BYTES, createReadBufferValve, installReadBufferValve, readBufferValve, setReadBufferValve } from '../../src/read-buffers.js';

const MiB = 2 ** 20;

describe('read-buffer valve: when it collects', () => {
  it('checks once per checkEvery bytes of body, and collects only above the bound', () => {
    let held = 10 * MiB;
    let checks = 0;
    let collections = 0;
    const valve = createReadBufferValve({
      collect: () => void collections++,
      arrayBuffers: () => (checks++, held),
      checkEvery: 4 * MiB,
      above: 28 * MiB,
    });
    for (let i = 0; i < 63; i++) valve({ length: 64 * 1024 }); // 63 chunks: just under 4 MiB
    expect(checks).toBe(0);
    valve({ length: 64 * 1024 });
    expect([checks, collections]).toEqual([1, 0]); // 10 MiB held: nothing to do
    held = 30 * MiB;
    for (let i = 0; i < 64; i++) valve({ length: 64 * 1024 });
    expect([checks, collections]).toEqual([2, 1]);
    valve({ length: 8 * MiB }); // one large chunk counts whole
    expect([checks, collections]).toEqual([3, 2]);
  });

  it('defaults: a check every 4 MiB, a collection above 28 MiB', () => {
    expect(CHECK_EVERY_BYTES).toBe(4 * MiB);
    expect(COLLECT_ABOVE_BYTES).toBe(28 * MiB);
  });
});

describe('read-buffer valve: installed', () => {
  afterEach(() => setReadBufferValve(undefined));

  it('gets a GC function without putting gc into the global scope', () => {
    const hadGc = typeof (globalThis as { gc?: unknown }).gc === 'function';
    expect(installReadBufferValve()).toBe(true);
    expect(typeof readBufferValve()).toBe('function');
    expect(typeof (globalThis as { gc?: unknown }).gc === 'function').toBe(hadGc);
    expect(installReadBufferValve()).toBe(true); // idempotent
  });

  it('frees dead read buffers once the body has crossed the bound', async () => {
    expect(installReadBufferValve()).toBe(true);
    const valve = readBufferValve()!;
    const baseline = process.memoryUsage().arrayBuffers;
    // What socket reads leave behind: 40 MiB of 64 KiB buffers, dead once written upstream.
    const readInto = (): number => Array.from({ length: 640 }, () => Buffer.allocUnsafeSlow(64 * 1024)).length;
    expect(readInto()).toBe(640);
    expect(process.memoryUsage().arrayBuffers - baseline).toBeGreaterThan(32 * MiB);
    valve({ length: CHECK_EVERY_BYTES });
    // The sweeper may free the backing stores just after the scavenge.
    for (let i = 0; i < 50 && process.memoryUsage().arrayBuffers - baseline > 8 * MiB; i++) await new Promise((r) => setTimeout(r, 10));
    expect(process.memoryUsage().arrayBuffers - baseline).toBeLessThan(8 * MiB);
  });
});
