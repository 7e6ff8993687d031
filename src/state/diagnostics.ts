// Problems found in a state directory, and how they are shown to people.
import type { Diagnostic } from './types.js';

/** A path to a value inside one YAML document, e.g. ["forwards", 2, "port"]. */
export type FieldPath = ReadonlyArray<string | number>;

/** Everything of a diagnostic but its message: where the problem is. */
export type DiagnosticLocation = Omit<Diagnostic, 'message'>;

/** Renders ["forwards", 2, "target", "port"] as "forwards[2].target.port". */
export function formatFieldPath(path: FieldPath): string {
  return path
    .map((segment, i) => (typeof segment === 'number' ? `[${segment}]` : i === 0 ? segment : `.${segment}`))
    .join('');
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
