import type { z } from 'zod';
import { RegistryRedirectError } from './errors.js';

/** Edit distance, for "did you mean" hints on misspelt keys (helmet-style `maxage` vs `maxAge`). */
function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** The known key closest to `key`, when it is close enough to be a typo. */
export function suggestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = Infinity;
  for (const k of known) {
    const score = k.toLowerCase() === key.toLowerCase() ? 0 : distance(key, k);
    if (score < bestScore) {
      best = k;
      bestScore = score;
    }
  }
  return bestScore <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

function joinPath(prefix: string, path: readonly PropertyKey[]): string {
  let out = prefix;
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out === '' ? '(top level)' : out;
}

/** The keys an object schema accepts, for hints. */
function knownKeysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let s: unknown = schema;
  for (const p of path) {
    s = unwrap(s);
    if (typeof p === 'number') {
      // Into a list's element schema (e.g. `rollout.rules[2]`).
      s = (s as { element?: unknown }).element;
      if (!s) return [];
      continue;
    }
    const shape = (s as { shape?: Record<string, unknown> }).shape;
    if (!shape || typeof p !== 'string') return [];
    s = shape[p];
  }
  const shape = (unwrap(s) as { shape?: Record<string, unknown> } | undefined)?.shape;
  return shape ? Object.keys(shape) : [];
}

function unwrap(s: unknown): unknown {
  let cur = s as { unwrap?: () => unknown; def?: { innerType?: unknown } } | undefined;
  for (let i = 0; i < 5 && cur; i++) {
    const inner = cur.def?.innerType;
    if (inner) cur = inner as typeof cur;
    else break;
  }
  return cur;
}

/**
 * Validates `value` against `schema`; on failure throws one CONFIG_INVALID error listing every
 * problem as `<key path>: <what is wrong and what to write>`.
 */
export function parseConfigPart<S extends z.ZodType>(schema: S, value: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') {
      return issue.keys
        .map((key) => {
          const known = knownKeysAt(schema, issue.path);
          const hint = suggestKey(key, known);
          const where = joinPath(prefix, [...issue.path, key]);
          return `${where}: unknown key${hint ? `; did you mean "${hint}"?` : ''}${known.length ? ` Known keys here: ${known.join(', ')}` : ''}`;
        })
        .join('\n');
    }
    return `${joinPath(prefix, issue.path)}: ${issue.message}`;
  });
  throw new RegistryRedirectError('CONFIG_INVALID', lines.join('\n'));
}
