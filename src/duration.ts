import { RegistryRedirectError } from './errors.js';

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

/**
 * Parses `"500ms"`, `"30s"`, `"20m"`, `"1h"`, `"7d"` or a number of seconds into milliseconds.
 * `key` names the option in the error message.
 */
export function parseDuration(value: string | number, key: string): number {
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value > 0) return Math.round(value * 1_000);
  } else {
    const m = DURATION_RE.exec(value.trim());
    if (m) {
      const ms = Math.round(Number(m[1]) * UNIT_MS[m[2]!]!);
      if (ms > 0) return ms;
    }
  }
  throw new RegistryRedirectError(
    'CONFIG_INVALID',
    `${key}: ${JSON.stringify(value)} is not a duration; write a positive number with a unit, e.g. "20m", "30s", "1h", "500ms"`,
  );
}
