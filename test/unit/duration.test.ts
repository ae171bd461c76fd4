import { describe, expect, it } from 'vitest';
import { parseDuration } from '../../src/duration.js';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['20m', 1_200_000],
    ['1h', 3_600_000],
    ['7d', 604_800_000],
    ['1.5s', 1_500],
    [90, 90_000],
  ] as const)('%s', (input, ms) => expect(parseDuration(input, 'k')).toBe(ms));

  it.each(['20', '20 minutes', '-1s', '0s', '', 'm', 0, -5])('rejects %s naming the key', (input) => {
    expect(() => parseDuration(input, 'timeouts.signer')).toThrow(/^timeouts\.signer: .* is not a duration; write .*"20m"/);
  });
});
