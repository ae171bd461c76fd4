/**
 * Reads a registry bearer token the way distribution 2.8 does (`registry/auth/token/token.go`):
 * Go's `encoding/json` into typed structs. That differs from `JSON.parse` + loose JS checks in ways
 * that decide grants, each one measured against distribution 2.8.2:
 *
 * - field names match case-insensitively (`Access`, `KID`, `X5C`, even `acceſs` with U+017F);
 * - a value of the wrong type anywhere (a string `exp`, a numeric `sub`) fails the whole token;
 * - `exp`/`nbf`/`iat` are int64: `1.5`, `1.0` and `1e9` are type errors, `null` means 0;
 * - `aud` is one string (an array is a type error in 2.8, accepted by distribution 3);
 * - a `null` entry in `access` makes distribution panic and drop the connection.
 *
 * What this module cannot decide the same way for every registry is reported as a `quirk`, and
 * the caller hands such tokens to the upstream instead of answering for it.
 *
 * @module
 */

/** A JSON number kept as its source text: Go decides int64-ness from the literal, not the value. */
class JsonNumber {
  readonly source: string;
  constructor(source: string) {
    this.source = source;
  }
}

/** A JSON object as every key occurrence in text order: Go decodes each one, the last one wins. */
class JsonObject {
  readonly members: ReadonlyArray<readonly [string, JsonValue]>;
  constructor(members: ReadonlyArray<readonly [string, JsonValue]>) {
    this.members = members;
  }
}

type JsonValue = JsonObject | JsonValue[] | JsonNumber | string | boolean | null;

const INT64_LITERAL = /^-?(?:0|[1-9][0-9]*)$/;
const INT64_MAX = 2n ** 63n - 1n;
/** Beyond this, Go's time arithmetic on `exp`/`nbf` wraps around: the upstream decides. */
const SAFE_SECONDS = 2n ** 62n;
const B64URL_SEGMENT = /^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?$/;
const B64_STD = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
// JSON strings exclude raw control characters, so the pattern has to name them.
// eslint-disable-next-line no-control-regex
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const WHITESPACE = /[ \t\n\r]*/y;
/** Go's decoder nests at most this deep. */
const MAX_DEPTH = 10_000;

/**
 * A strict RFC 8259 parser (what Go's decoder accepts) that keeps what `JSON.parse` loses:
 * repeated keys and the literal text of numbers. Returns undefined for invalid JSON.
 */
function parseJson(text: string): { value: JsonValue } | undefined {
  let pos = 0;
  const skip = (): void => {
    WHITESPACE.lastIndex = pos;
    WHITESPACE.exec(text);
    pos = WHITESPACE.lastIndex;
  };
  const fail = (): never => {
    throw new SyntaxError('invalid JSON');
  };
  const match = (re: RegExp): string => {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (m === null) fail();
    pos = re.lastIndex;
    return m![0];
  };
  const value = (depth: number): JsonValue => {
    if (depth > MAX_DEPTH) fail();
    skip();
    const c = text[pos];
    if (c === '{') {
      pos++;
      const members: Array<[string, JsonValue]> = [];
      skip();
      if (text[pos] === '}') {
        pos++;
        return new JsonObject(members);
      }
      for (;;) {
        skip();
        const key = JSON.parse(match(STRING)) as string;
        skip();
        if (text[pos++] !== ':') fail();
        members.push([key, value(depth + 1)]);
        skip();
        const next = text[pos++];
        if (next === '}') return new JsonObject(members);
        if (next !== ',') fail();
      }
    }
    if (c === '[') {
      pos++;
      const items: JsonValue[] = [];
      skip();
      if (text[pos] === ']') {
        pos++;
        return items;
      }
      for (;;) {
        items.push(value(depth + 1));
        skip();
        const next = text[pos++];
        if (next === ']') return items;
        if (next !== ',') fail();
      }
    }
    if (c === '"') return JSON.parse(match(STRING)) as string;
    if (text.startsWith('true', pos)) return (pos += 4), true;
    if (text.startsWith('false', pos)) return (pos += 5), false;
    if (text.startsWith('null', pos)) return (pos += 4), null;
    return new JsonNumber(match(NUMBER));
  };
  try {
    const v = value(0);
    skip();
    return pos === text.length ? { value: v } : undefined;
  } catch {
    return undefined;
  }
}

/** Go's `encoding/json` field matching: ASCII case folding plus the two non-ASCII folds onto ASCII letters. */
function goFold(key: string): string {
  let out = '';
  for (const ch of key) {
    if (ch === '\u017f') out += 's';
    else if (ch === '\u212a') out += 'k';
    else if (ch >= 'A' && ch <= 'Z') out += ch.toLowerCase();
    else out += ch;
  }
  return out;
}

/** distribution's joseBase64UrlDecode: pad to a multiple of 4, then strict URL-safe base64. */
function decodeSegment(segment: string): Buffer | undefined {
  const rem = segment.length % 4;
  if (rem === 1) return undefined;
  const padded = rem === 0 ? segment : segment + '='.repeat(4 - rem);
  return B64URL_SEGMENT.test(padded) ? Buffer.from(padded, 'base64url') : undefined;
}

type FieldKind = 'string' | 'int64' | 'strings' | 'raw' | 'aud' | 'access';

/** Go's decoding of `null` into a string or int64: nothing happens, an earlier value stays. */
const UNCHANGED = Symbol('unchanged');

/** Decoding state shared by one token: the first Go type error, and everything that is unusual. */
interface Decoding {
  typeError: string | undefined;
  quirks: string[];
}

function typeError(d: Decoding, what: string): void {
  d.typeError ??= what;
}

/**
 * Go's struct decoding of a JSON object: every key occurrence, in text order, feeds the field its
 * name folds to (a type error in any of them fails the token); the last one wins; unknown keys
 * are ignored.
 */
function decodeStruct(value: JsonValue, fields: Record<string, FieldKind>, where: string, d: Decoding): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (value === null) return out;
  if (!(value instanceof JsonObject)) {
    typeError(d, `${where} is not an object`);
    return out;
  }
  for (const [key, raw] of value.members) {
    const name = goFold(key);
    const kind = fields[name];
    if (kind === undefined) continue;
    const decoded = decodeField(raw, kind, `${where}.${name}`, d);
    if (decoded !== UNCHANGED) out.set(name, decoded);
  }
  return out;
}

function decodeField(raw: JsonValue, kind: FieldKind, where: string, d: Decoding): unknown {
  // null sets a slice or pointer (x5c, access, jwk) to nil and leaves a string or int64 as it is.
  if (raw === null) return kind === 'strings' || kind === 'access' || kind === 'raw' ? undefined : UNCHANGED;
  switch (kind) {
    case 'raw':
      return plain(raw);
    case 'aud':
      // distribution 2.8 reads one string; a list of strings (distribution 3) is a quirk.
      if (typeof raw === 'string') return raw;
      if (Array.isArray(raw) && raw.every((a) => typeof a === 'string')) {
        d.quirks.push('aud is a list');
        return raw;
      }
      typeError(d, `${where} is not a string`);
      return undefined;
    case 'string':
      if (typeof raw !== 'string') typeError(d, `${where} is not a string`);
      return typeof raw === 'string' ? raw : undefined;
    case 'int64':
      return decodeInt64(raw, where, d);
    case 'strings':
      if (!Array.isArray(raw)) {
        typeError(d, `${where} is not a list`);
        return undefined;
      }
      return raw.map((item) => {
        if (item === null) return '';
        if (typeof item !== 'string') typeError(d, `${where} holds a non-string`);
        return typeof item === 'string' ? item : '';
      });
    case 'access':
      if (!Array.isArray(raw)) {
        typeError(d, `${where} is not a list`);
        return undefined;
      }
      return raw.map((entry) => {
        if (entry === null) {
          d.quirks.push(`${where} holds null (distribution drops the connection)`);
          return undefined;
        }
        const f = decodeStruct(entry, { type: 'string', class: 'string', name: 'string', actions: 'strings' }, where, d);
        return { type: f.get('type') ?? '', name: f.get('name') ?? '', actions: (f.get('actions') as string[] | undefined) ?? [] };
      });
  }
  return undefined;
}

/** A JSON value as plain JS data (the `jwk` header, for node:crypto), later duplicates winning. */
function plain(v: JsonValue): unknown {
  if (v instanceof JsonObject) return Object.fromEntries(v.members.map(([k, m]) => [k, plain(m)]));
  if (v instanceof JsonNumber) return Number(v.source);
  if (Array.isArray(v)) return v.map(plain);
  return v;
}

/**
 * An int64 claim. A number that is not an integer literal is a Go type error, so distribution
 * refuses it; registries on other JWT libraries accept it. Its value still counts for the time
 * checks (an expired token is refused by everyone), and the literal is reported as a quirk.
 */
function decodeInt64(raw: JsonValue, where: string, d: Decoding): bigint | number | undefined {
  if (!(raw instanceof JsonNumber)) {
    typeError(d, `${where} is not a number`);
    return undefined;
  }
  if (INT64_LITERAL.test(raw.source)) {
    const n = BigInt(raw.source);
    if (n > INT64_MAX || n < -INT64_MAX - 1n) {
      typeError(d, `${where} does not fit int64`);
      return undefined;
    }
    if (n > SAFE_SECONDS || n < -SAFE_SECONDS) d.quirks.push(`${where} is out of the usual range`);
    return n;
  }
  const value = Number(raw.source);
  if (!Number.isFinite(value)) {
    typeError(d, `${where} is not a finite number`);
    return undefined;
  }
  d.quirks.push(`${where} is not an integer literal (${raw.source.slice(0, 24)})`);
  return value;
}

/** One access entry as distribution reads it (`class` is read and ignored, like 2.8 does). */
export interface AccessEntry {
  readonly type: string;
  readonly name: string;
  readonly actions: readonly string[];
}

/** A token decoded like distribution 2.8, plus what no single registry version decides alike. */
export interface ParsedToken {
  /** `header.payload` as sent: what the signature covers. */
  readonly signingInput: string;
  readonly signature: Buffer;
  readonly alg: string;
  /** `kid`, when non-empty (an empty one counts as absent, as in Go). */
  readonly kid: string | undefined;
  /** `x5c` as base64 DER strings, when non-empty. */
  readonly x5c: readonly string[] | undefined;
  /** The `jwk` header value, when present and not null. */
  readonly jwk: unknown;
  readonly issuer: string;
  /** `aud`: one string (distribution 2.8), or a list (a quirk). */
  readonly audience: string | readonly string[];
  /** Seconds; 0 when absent or null (Go's zero value). */
  readonly expiresAt: bigint | number;
  readonly notBefore: bigint | number;
  /** undefined when the claim is absent or null; entries that were null are dropped (and a quirk). */
  readonly access: readonly AccessEntry[] | undefined;
  /** Unusual but well-formed: never grant on such a token, let the upstream answer. */
  readonly quirks: readonly string[];
}

/**
 * Decodes a compact JWS as distribution's `NewToken` does. Returns a reason string when
 * distribution would refuse it as malformed (it answers `invalid_token`).
 */
export function parseRegistryToken(token: string): ParsedToken | string {
  const parts = token.split('.');
  if (parts.length !== 3) return 'malformed token (not three dot-separated parts)';
  const [rawHeader, rawClaims, rawSignature] = parts as [string, string, string];
  const headerBytes = decodeSegment(rawHeader);
  const claimBytes = decodeSegment(rawClaims);
  const signature = decodeSegment(rawSignature);
  if (headerBytes === undefined || claimBytes === undefined || signature === undefined) return 'malformed token (not base64url)';
  const headerJson = parseJson(headerBytes.toString('utf8'));
  const claimJson = parseJson(claimBytes.toString('utf8'));
  if (headerJson === undefined || claimJson === undefined) return 'malformed token (not JSON)';

  const d: Decoding = { typeError: undefined, quirks: [] };
  const header = decodeStruct(headerJson.value, { typ: 'string', alg: 'string', kid: 'string', x5c: 'strings', jwk: 'raw' }, 'header', d);
  const claims = decodeStruct(
    claimJson.value,
    { iss: 'string', sub: 'string', aud: 'aud', exp: 'int64', nbf: 'int64', iat: 'int64', jti: 'string', access: 'access' },
    'claims',
    d,
  );
  if (d.typeError !== undefined) return `malformed token (${d.typeError})`;

  const x5c = header.get('x5c') as string[] | undefined;
  if (x5c !== undefined && x5c.length > 0 && !x5c.every((c) => B64_STD.test(c))) return 'malformed token (x5c is not base64)';
  const kid = header.get('kid') as string | undefined;
  const jwk = header.get('jwk');
  return {
    signingInput: `${rawHeader}.${rawClaims}`,
    signature,
    alg: (header.get('alg') as string | undefined) ?? '',
    kid: kid === undefined || kid === '' ? undefined : kid,
    x5c: x5c !== undefined && x5c.length > 0 ? x5c : undefined,
    jwk,
    issuer: (claims.get('iss') as string | undefined) ?? '',
    audience: (claims.get('aud') as string | string[] | undefined) ?? '',
    expiresAt: (claims.get('exp') as bigint | number | undefined) ?? 0n,
    notBefore: (claims.get('nbf') as bigint | number | undefined) ?? 0n,
    access: (claims.get('access') as Array<AccessEntry | undefined> | undefined)?.filter((e): e is AccessEntry => e !== undefined),
    quirks: d.quirks,
  };
}

/** Seconds since the epoch compared with a millisecond clock, exact for int64 and float claims. */
export function secondsToMs(seconds: bigint | number): number {
  return typeof seconds === 'bigint' ? Number(seconds * 1000n) : seconds * 1000;
}
