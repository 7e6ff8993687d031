// The last line of defence before the agent writes to Git, prints or hands a report out: every
// string of a report is scrubbed of secrets (the tokens this process read, passwords in URLs,
// Authorization headers, values of secret-looking environment variables), made visible
// (control, zero-width and bidi characters escaped) and capped. Whatever path a value took into
// a message (a state file, a hook's output, an error of a library), it leaves only through here.
// Pure but for knownSecrets(), which the callers pass in.
import { allSecrets, maskSecrets } from '../git/remote.js';

/** Longest string kept in a report (a message, a hook's output, a plan line). */
export const MESSAGE_LIMIT = 2000;
/** Longest value quoted inside a message the program composes. */
export const VALUE_LIMIT = 200;

// C0/C1 controls but tab and newline, zero-width and bidi controls, BOM: invisible or reordering.
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const INVISIBLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff]/g;

/** Show invisible characters as \u{...}, so a reader sees what is really there. */
export function visible(text: string): string {
  return text.replace(INVISIBLE, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
}

/** The first `limit` characters (never half a surrogate pair) and how many were cut. */
function cut(text: string, limit: number): { head: string; rest: number } {
  if (text.length <= limit) return { head: text, rest: 0 };
  const head = /[\ud800-\udbff]$/.test(text.slice(0, limit)) ? text.slice(0, limit - 1) : text.slice(0, limit);
  return { head, rest: text.length - head.length };
}

const cutNote = (rest: number) => (rest ? `… (cut: ${rest} more characters)` : '');

/** At most `limit` characters, with a note saying how much was cut. */
export function cap(text: string, limit = MESSAGE_LIMIT): string {
  const { head, rest } = cut(text, limit);
  return head + cutNote(rest);
}

/** A value quoted inside a composed message: secrets masked, escaped, visible, capped at VALUE_LIMIT. */
export function quoteValue(value: unknown, secrets: readonly string[] = allSecrets()): string {
  const text = typeof value === 'string' ? value : String(JSON.stringify(value) ?? value);
  const escaped = visible(maskSecrets(text, secrets).replace(/[\\"]/g, '\\$&').replace(/\n/g, '\\n').replace(/\t/g, '\\t'));
  const { head, rest } = cut(escaped, VALUE_LIMIT);
  return `"${head}"${cutNote(rest)}`;
}

/** One string as it may leave the agent: secrets masked, invisible characters shown, capped. */
export function redactText(text: string, secrets: readonly string[], limit = MESSAGE_LIMIT): string {
  return cap(visible(maskSecrets(text, secrets)), limit);
}

/** Every string in `value` (keys included) through redactText; numbers, booleans, null kept. */
export function redactDeep<T>(value: T, secrets: readonly string[] = allSecrets()): T {
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return redactText(v, secrets);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [redactText(k, secrets, VALUE_LIMIT), walk(x)]));
    return v;
  };
  return walk(value) as T;
}
