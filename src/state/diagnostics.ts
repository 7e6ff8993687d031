// Problems found in a state directory, and how they are shown to people.
import type { Diagnostic } from './types.js';

/** A path to a value inside one YAML document, e.g. ["forwards", 2, "port"]. */
export type FieldPath = ReadonlyArray<string | number>;

/** Everything of a diagnostic but its message: where the problem is. */
export type DiagnosticLocation = Omit<Diagnostic, 'message'>;

/**
 * Renders ["forwards", 2, "target", "port"] as "forwards[2].target.port". A key that is not a plain
 * identifier (it comes from the file, so it may hold anything), or a long one, is shown quoted,
 * escaped and capped: ["\u200b"].
 */
export function formatFieldPath(path: FieldPath): string {
  return path
    .map((segment, i) => {
      if (typeof segment === 'number') return `[${segment}]`;
      if (!/^[A-Za-z0-9_-]+$/.test(segment) || segment.length > EXCERPT_CHARS) return `[${quoteValue(segment)}]`;
      return i === 0 ? segment : `.${segment}`;
    })
    .join('');
}

/** How many characters of a value a message shows at most. */
export const EXCERPT_CHARS = 60;

/**
 * A value from a state file as a message may show it: strings double-quoted, escaped and capped
 * (`"abc…" (12345 chars)`), numbers as YAML writes them (`.inf`, `.nan`). The state is untrusted:
 * escaping keeps control, zero-width, bidi and look-alike characters visible, and the cap keeps a
 * huge scalar from being echoed back.
 */
export function quoteValue(value: unknown, maxChars = EXCERPT_CHARS): string {
  if (typeof value === 'string') {
    const { shown, cut, chars } = excerpt(value, maxChars);
    return cut ? `"${shown}…" (${chars} chars)` : `"${shown}"`;
  }
  if (typeof value === 'number') return formatNumber(value);
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  return Array.isArray(value) ? 'a list' : 'a mapping';
}

/**
 * `text` with everything but printable ASCII escaped (`\n`, `\x1b`, `\u200b`, `\u{1f600}`), cut
 * after `maxChars` characters with "…" and the full length. For messages that embed pieces of a
 * file, such as the YAML parser's.
 */
export function escapeText(text: string, maxChars = EXCERPT_CHARS): string {
  const { shown, cut, chars } = excerpt(text, maxChars);
  return cut ? `${shown}… (${chars} chars)` : shown;
}

function excerpt(text: string, maxChars: number): { shown: string; cut: boolean; chars: number } {
  let shown = '';
  let chars = 0;
  for (const char of text) {
    if (chars < maxChars) shown += escapeChar(char);
    chars++;
  }
  return { shown, cut: chars > maxChars, chars };
}

const NAMED_ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '"': '\\"', '\\': '\\\\' };

/**
 * Printable ASCII stays; everything else (controls, zero-width, bidi, any non-ASCII) is escaped, and
 * so is "`", so a value cannot close the Markdown code block a review or report shows it in.
 */
function escapeChar(char: string): string {
  if (NAMED_ESCAPES[char]) return NAMED_ESCAPES[char];
  const code = char.codePointAt(0)!;
  if (code >= 0x20 && code < 0x7f && char !== '`') return char;
  if (code < 0x100) return `\\x${code.toString(16).padStart(2, '0')}`;
  if (code < 0x10000) return `\\u${code.toString(16).padStart(4, '0')}`;
  return `\\u{${code.toString(16)}}`;
}

/** YAML's spelling of the special floats; JSON would print them as null. */
function formatNumber(n: number): string {
  if (Number.isNaN(n)) return '.nan';
  if (n === Infinity) return '.inf';
  if (n === -Infinity) return '-.inf';
  return String(n);
}

/** Plain code-unit order: the same on every machine, unlike localeCompare. */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Stable order: by file, then position, then field and message. */
export function sortDiagnostics(diagnostics: Diagnostic[]): Diagnostic[] {
  return [...diagnostics].sort(
    (a, b) =>
      compareStrings(a.file, b.file) ||
      a.line - b.line ||
      a.column - b.column ||
      compareStrings(a.field, b.field) ||
      compareStrings(a.message, b.message),
  );
}

/** Compiler-style lines, e.g. `nodes/node1.yaml:7:14: uplink.interface: must be ...`. */
export function formatDiagnostics(diagnostics: Diagnostic[]): string {
  return diagnostics
    .map((d) => `${d.file}:${d.line}:${d.column}: ${d.field ? `${d.field}: ` : ''}${d.message}`)
    .join('\n');
}

/** For callers that prefer an exception to a diagnostics list. */
export class StateError extends Error {
  readonly diagnostics: Diagnostic[];

  constructor(diagnostics: Diagnostic[]) {
    const count = diagnostics.length === 1 ? '1 problem' : `${diagnostics.length} problems`;
    super(`invalid state (${count}):\n${formatDiagnostics(diagnostics)}`);
    this.name = 'StateError';
    this.diagnostics = diagnostics;
  }
}
