// One YAML file of the state directory: parsed with positions kept, so that any field path can be
// turned back into a line and column for diagnostics.
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { formatFieldPath, type DiagnosticLocation, type FieldPath } from './diagnostics.js';
import type { Diagnostic, SourceRef } from './types.js';

export interface YamlSource {
  /** Path relative to the state directory, e.g. "nodes/node1.yaml". */
  file: string;
  doc: Document;
  lineCounter: LineCounter;
}

export function parseYamlSource(file: string, text: string): { source: YamlSource; diagnostics: Diagnostic[] } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true });
  const diagnostics = doc.errors.map((error): Diagnostic => {
    const pos = error.linePos?.[0] ?? { line: 1, col: 1 };
    return { file, line: pos.line, column: pos.col, field: '', message: yamlErrorMessage(error.code, error.message) };
  });
  return { source: { file, doc, lineCounter }, diagnostics };
}

/** yaml's messages carry a code excerpt and " at line X, column Y"; we print positions ourselves. */
function yamlErrorMessage(code: string, message: string): string {
  if (code === 'MULTIPLE_DOCS') return 'YAML syntax: a state file holds exactly one document (found "---")';
  const firstLine = message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
  return `YAML syntax: ${firstLine}`;
}

/**
 * Where the value at `path` is written. With `key`, the position of the mapping key instead (used for
 * "unknown property"). When the path does not exist (a missing property), the deepest existing
 * ancestor is used, so the position points at the mapping that lacks the property.
 */
export function locate(source: YamlSource, path: FieldPath, options: { key?: boolean } = {}): DiagnosticLocation {
  let node: unknown = source.doc.contents;
  let keyNode: unknown;
  for (const segment of path) {
    const next = child(node, segment);
    if (!next) break;
    [keyNode, node] = [next.key, next.value];
  }
  // An empty value ("interface:") has a zero-width range at the end of the line: the key reads better.
  const valueIsEmpty = isScalar(node) && node.value === null && node.source === '';
  const target = options.key || valueIsEmpty || !hasRange(node) ? (hasRange(keyNode) ? keyNode : node) : node;
  const { line, column } = position(source, hasRange(target) ? target.range[0] : 0);
  return { file: source.file, line, column, field: formatFieldPath(path) };
}

/** The position of a whole document or of one object inside it. */
export function sourceRef(source: YamlSource, path: FieldPath): SourceRef {
  const { file, line, column } = locate(source, path);
  return { file, line, column };
}

function child(node: unknown, segment: string | number): { key: unknown; value: unknown } | undefined {
  if (isMap(node)) {
    const pair = node.items.find((item) => isScalar(item.key) && String(item.key.value) === String(segment));
    return pair && { key: pair.key, value: pair.value };
  }
  if (isSeq(node) && typeof segment === 'number' && segment < node.items.length) {
    return { key: undefined, value: node.items[segment] };
  }
  return undefined;
}

function hasRange(node: unknown): node is Node & { range: [number, number, number] } {
  return typeof node === 'object' && node !== null && Array.isArray((node as Node).range);
}

function position(source: YamlSource, offset: number): { line: number; column: number } {
  const { line, col } = source.lineCounter.linePos(offset);
  return { line, column: col };
}
