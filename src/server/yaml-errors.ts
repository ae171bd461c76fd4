import { parseDocument, YAMLError } from 'yaml';
import { RegistryRedirectError } from '../errors.js';

// The yaml library's messages quote the offending lines (and some name tags or anchors), and a
// config file holds literal secrets next to the line that is wrong. So a syntax error is reported
// by its position, its code and the key path that encloses it; never with the library's message.
const DESCRIPTIONS: Record<string, string> = {
  ALIAS_PROPS: 'an alias (*name) cannot carry a tag or an anchor',
  BAD_ALIAS: 'an alias (*name) is malformed or names no anchor defined before it',
  BAD_COLLECTION_TYPE: 'a collection does not fit its tag',
  BAD_DIRECTIVE: 'a % directive is malformed',
  BAD_DQ_ESCAPE: 'a double-quoted string holds an invalid \\ escape',
  BAD_INDENT: 'wrong indentation: the keys of one mapping (and the items of one list) must start in the same column',
  BAD_PROP_ORDER: 'an anchor or tag is in the wrong place',
  BAD_SCALAR_START: 'a plain value starts with a reserved character; quote it',
  BLOCK_AS_IMPLICIT_KEY: 'a nested block stands where a key or value was expected; check the indentation',
  BLOCK_IN_FLOW: 'a block mapping or list inside { } or [ ]',
  DUPLICATE_KEY: 'a key appears twice in one mapping',
  IMPOSSIBLE: 'the YAML parser failed',
  KEY_OVER_1024_CHARS: 'a key is longer than 1024 characters',
  MISSING_CHAR: 'a closing quote or bracket is missing',
  MULTILINE_IMPLICIT_KEY: 'a key spans several lines (a missing ":" or wrong indentation)',
  MULTIPLE_ANCHORS: 'a value carries two anchors',
  MULTIPLE_DOCS: 'the file holds more than one YAML document (---); write one',
  MULTIPLE_TAGS: 'a value carries two tags',
  NON_STRING_KEY: 'a key is not a plain string',
  TAB_AS_INDENT: 'a tab is used for indentation; indent with spaces',
  TAG_RESOLVE_FAILED: 'a tagged value cannot be read',
  UNEXPECTED_TOKEN: 'unexpected text (a missing ":", unbalanced quotes or wrong indentation)',
};

/** Keys safe to name in a message: plain identifiers. Anything else is shown as `?`. */
const SAFE_KEY = /^[A-Za-z0-9_-]{1,64}$/;
/** A line that opens a block under a key: `key:` with nothing but a comment after the colon. */
const OPENING_KEY = /^(\s*)((?:-\s+)*)(["']?)([^"'#:]*)\3\s*:\s*(?:#.*)?$/;

function indentOf(line: string): number {
  return line.length - line.trimStart().length;
}

function isContent(line: string): boolean {
  const t = line.trim();
  return t !== '' && !t.startsWith('#');
}

/**
 * The block-mapping keys (and list indexes) that enclose line `lineNo` (1-based), read from the
 * lines above it by indentation alone, e.g. `signer.azure` or `signers[1].s3`. Only lines that
 * open a block (`key:` with no value) become path elements, so a `key: value` line (where a secret
 * would be) is never quoted; names that are not plain identifiers are shown as `?`.
 */
export function enclosingKeyPath(text: string, lineNo: number): string {
  const lines = text.split(/\r\n|\n|\r/);
  const target = lines[lineNo - 1];
  let limit = target !== undefined && isContent(target) ? indentOf(target) : Number.POSITIVE_INFINITY;
  const parts: string[] = [];
  for (let i = Math.min(lineNo, lines.length) - 2; i >= 0 && limit > 0; i--) {
    const line = lines[i]!;
    if (!isContent(line)) continue;
    const indent = indentOf(line);
    if (indent >= limit) continue;
    const dashes = /^(\s*)((?:-\s+)+)/.exec(line);
    const contentIndent = dashes ? dashes[0].length : indent;
    const opening = OPENING_KEY.exec(line);
    if (opening && contentIndent < limit) {
      const key = opening[4]!.trim();
      parts.push(SAFE_KEY.test(key) ? key : '?');
    }
    if (dashes && contentIndent <= limit) {
      // A list item encloses the target: count the items of this list above it.
      let index = 0;
      for (let j = i - 1; j >= 0; j--) {
        const above = lines[j]!;
        if (!isContent(above)) continue;
        const aIndent = indentOf(above);
        if (aIndent < indent) break;
        if (aIndent === indent && above.trimStart().startsWith('-')) index++;
      }
      parts.push(`[${index}]`);
    }
    limit = indent;
  }
  return parts
    .reverse()
    .map((p, i) => (p.startsWith('[') || i === 0 ? p : `.${p}`))
    .join('');
}

function lineAndColumn(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let start = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === '\n') {
      line++;
      start = i + 1;
    }
  }
  return { line, col: offset - start + 1 };
}

/**
 * Parses config YAML. A syntax error becomes a `CONFIG_INVALID` error naming `file`, the line and
 * column, the enclosing key path and what kind of mistake it is: never a quote of the file, whose
 * neighbouring lines may hold account keys or passwords. The library's error is not kept as
 * `cause` for the same reason. Warnings (e.g. unknown tags) are not printed.
 */
export function parseConfigYaml(text: string, file: string): unknown {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  const first = doc.errors[0];
  if (first !== undefined) {
    const { line, col } = lineAndColumn(text, first.pos[0]);
    const keyPath = enclosingKeyPath(text, line);
    const what = DESCRIPTIONS[first.code] ?? 'syntax error';
    throw new RegistryRedirectError(
      'CONFIG_INVALID',
      `${file}: not valid YAML at line ${line}, column ${col}${keyPath ? ` (under ${keyPath})` : ''}: ${what} [${first.code}]`,
    );
  }
  try {
    return doc.toJS();
  } catch (err) {
    const kind = err instanceof YAMLError ? err.code : err instanceof Error ? err.name : 'error';
    throw new RegistryRedirectError('CONFIG_INVALID', `${file}: the YAML cannot be read as data (${kind}); check aliases (*name) and anchors (&name)`);
  }
}
