// One YAML file of the state directory: parsed with positions kept, so that any field path can be
// turned back into a line and column for diagnostics.
import { createRequire } from 'node:module';
import type { CST, Document, LineCounter, Node, YAMLError } from 'yaml';
import { escapeText, formatFieldPath, type DiagnosticLocation, type FieldPath } from './diagnostics.js';
import { STATE_LIMITS } from './files.js';
import type { Diagnostic, SourceRef } from './types.js';

const requireModule = createRequire(import.meta.url);
let yamlModule: typeof import('yaml') | undefined;

/** The yaml package, loaded on first use: a valid state read the fast way never needs it (~30 ms). */
function yaml(): typeof import('yaml') {
  yamlModule ??= requireModule('yaml') as typeof import('yaml');
  return yamlModule;
}

export interface YamlSource {
  /** Path relative to the state directory, e.g. "nodes/node1.yaml". */
  file: string;
  doc: Document;
  lineCounter: LineCounter;
}

/** How many YAML nodes (scalars and collections) the files of one state may hold together. */
export interface NodeBudget {
  nodes: number;
}

/**
 * Parses one file. `data` is the document as plain JS; for a broken document whatever part of it
 * could be read (so a caller still learns which name it meant to declare), else {}.
 *
 * Hostile input is stopped before it can hurt. A lexing pass (linear, no recursion) comes first:
 * flow nesting (`[[[[`) deeper than STATE_LIMITS.yamlDepth, and more nodes than `budget` has left
 * (which bounds the time and memory of everything after). On the concrete syntax tree (walked without
 * recursion), before the recursive composer sees it: block nesting deeper than the limit. Aliases
 * may not expand beyond STATE_LIMITS.aliasExpansion (a "billion laughs" file). Warnings such as an
 * unknown tag (`!!js/function`, `!custom`) are errors, and so is any explicit tag: a state file holds
 * plain data only.
 */
export function parseYamlSource(
  file: string,
  text: string,
  budget: NodeBudget = { nodes: STATE_LIMITS.yamlNodes },
): { source: YamlSource; data: unknown; diagnostics: Diagnostic[] } {
  const { Composer, Document, LineCounter, Parser } = yaml();
  const lineCounter = new LineCounter();
  const at = (offset: number, message: string): Diagnostic => {
    const { line, col } = lineCounter.linePos(offset);
    return { file, line, column: col, field: '', message };
  };
  const refused = (offset: number, message: string) => {
    // Refused before the parser ran, so the line counter has not seen the newlines yet.
    if (lineCounter.lineStarts.length === 0) countLines(text, lineCounter);
    return {
      source: { file, doc: new Document(null), lineCounter },
      data: {},
      diagnostics: [at(offset, `${message}; file not read further`)],
    };
  };

  if (budget.nodes < 0) return refused(0, `the limit of ${STATE_LIMITS.yamlNodes} YAML values in all was reached in an earlier file`);
  const lexed = scanLexemes(text, budget);
  if (lexed.tooDeepAt !== undefined) return refused(lexed.tooDeepAt, `nesting is deeper than ${STATE_LIMITS.yamlDepth} levels of mappings and lists (limit)`);
  if (lexed.tooManyAt !== undefined) {
    return refused(lexed.tooManyAt, `the state holds more than ${STATE_LIMITS.yamlNodes} YAML values in all (limit; 50,000 forwards need 650,000 to 700,000)`);
  }
  const tokens = Array.from(new Parser(lineCounter.addNewLine).parse(text));
  const shape = cstShape(tokens, STATE_LIMITS.yamlDepth);
  if (shape.tooDeepAt !== undefined) return refused(shape.tooDeepAt, `nesting is deeper than ${STATE_LIMITS.yamlDepth} levels of mappings and lists (limit)`);

  const docs = Array.from(new Composer({ uniqueKeys: true }).compose(tokens, true, text.length));
  const doc = docs[0] ?? new Document(null);
  const source = { file, doc, lineCounter };
  const diagnostics = [...doc.errors, ...doc.warnings].map((error) => at(error.pos[0], yamlErrorMessage(error)));
  if (docs.length > 1) diagnostics.push(at(docs[1].range[0], yamlErrorMessage({ code: 'MULTIPLE_DOCS', message: '' })));
  // Even tags yaml knows (!!binary, !!set) turn data into other types than the schema expects.
  if (lexed.firstTag && !diagnostics.some((d) => /tag/i.test(d.message))) {
    diagnostics.push(at(lexed.firstTag.offset, `YAML tag ${escapeText(lexed.firstTag.tag)} is not allowed; state files hold plain data, without tags`));
  }

  let data: unknown = {};
  try {
    data = doc.toJS({ maxAliasCount: STATE_LIMITS.aliasExpansion }) ?? {};
  } catch (e) {
    if (/alias count/i.test((e as Error).message)) {
      const message = `too many aliases: expanding them would exceed the limit of ${STATE_LIMITS.aliasExpansion} (an alias bomb?)`;
      diagnostics.push(at(shape.firstAliasAt ?? 0, message));
    } else if (diagnostics.length === 0) {
      diagnostics.push(at(shape.firstAliasAt ?? 0, `YAML: ${escapeText((e as Error).message, 200)}`));
    }
  }
  return { source, data, diagnostics };
}

function countLines(text: string, lineCounter: { addNewLine(offset: number): unknown }): void {
  lineCounter.addNewLine(0);
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) lineCounter.addNewLine(i + 1);
}

/** Line and column of an offset, 1-based: yaml's LineCounter.linePos, without loading yaml. */
export interface LineStarts {
  linePos(offset: number): { line: number; col: number };
}

/** Line and column lookup for `text` without parsing it. */
export function lineCounterOf(text: string): LineStarts {
  const starts: number[] = [];
  countLines(text, { addNewLine: (offset) => starts.push(offset) });
  return {
    // The same search as yaml's LineCounter.linePos (test/state-fast-parse.test.ts compares them).
    linePos: (offset) => {
      let low = 0;
      let high = starts.length;
      while (low < high) {
        const mid = (low + high) >> 1;
        if ((starts[mid] as number) < offset) low = mid + 1;
        else high = mid;
      }
      if (starts[low] === offset) return { line: low + 1, col: 1 };
      if (low === 0) return { line: 0, col: offset };
      return { line: low, col: offset - (starts[low - 1] as number) + 1 };
    },
  };
}

/**
 * A first pass over the lexer's output alone (linear, no recursion, and much cheaper than the parser
 * that builds the syntax tree): where flow collections first nest too deep, where the node budget
 * runs out, and the first explicit tag.
 */
function scanLexemes(text: string, budget: NodeBudget): { tooDeepAt?: number; tooManyAt?: number; firstTag?: { offset: number; tag: string } } {
  let offset = 0;
  let flowDepth = 0;
  let firstTag: { offset: number; tag: string } | undefined;
  const { CST, Lexer } = yaml();
  // Lexemes that are markers of yaml's lexer, not text of the file.
  const markers = new Set([CST.DOCUMENT, CST.FLOW_END, CST.SCALAR]);
  for (const lexeme of new Lexer().lex(text)) {
    if (lexeme[0] === '!' && !firstTag) firstTag = { offset, tag: lexeme };
    if (lexeme === '[' || lexeme === '{') {
      if (++flowDepth > STATE_LIMITS.yamlDepth) return { tooDeepAt: offset };
    } else if (lexeme === ']' || lexeme === '}') flowDepth = Math.max(0, flowDepth - 1);
    // Every value is a scalar or a collection, and every collection item starts with one of these.
    if (lexeme === CST.SCALAR || lexeme === '[' || lexeme === '{' || lexeme === '-' || lexeme === '*') {
      if (--budget.nodes < 0) return { tooManyAt: offset };
    }
    if (!markers.has(lexeme)) offset += lexeme.length;
  }
  return { firstTag };
}

/**
 * Walks the concrete syntax tree with an explicit stack: where a collection first nests deeper than
 * `maxDepth`, and where the first alias is.
 */
function cstShape(tokens: CST.Token[], maxDepth: number): { tooDeepAt?: number; firstAliasAt?: number } {
  let firstAliasAt: number | undefined;
  const stack: Array<[CST.Token | null | undefined, number]> = tokens.map((t) => [t, 0]);
  while (stack.length > 0) {
    const [token, depth] = stack.pop()!;
    if (!token) continue;
    if (token.type === 'document') stack.push([token.value, 0]);
    if (token.type === 'alias' && (firstAliasAt === undefined || token.offset < firstAliasAt)) firstAliasAt = token.offset;
    if (token.type === 'block-map' || token.type === 'block-seq' || token.type === 'flow-collection') {
      if (depth >= maxDepth) return { tooDeepAt: token.offset, firstAliasAt };
      for (const item of token.items) {
        if ('key' in item) stack.push([item.key, depth + 1]);
        stack.push([item.value, depth + 1]);
      }
    }
  }
  return { firstAliasAt };
}

/** The parser's message in our words; it may quote pieces of the file, so it is escaped and capped. */
function yamlErrorMessage({ code, message }: Pick<YAMLError, 'code' | 'message'>): string {
  if (code === 'MULTIPLE_DOCS') return 'YAML syntax: a state file holds exactly one document (found "---")';
  if (code === 'TAG_RESOLVE_FAILED') return `YAML: ${escapeText(message, 120)}; state files hold plain data, without tags`;
  return `YAML syntax: ${escapeText(message.split('\n')[0], 120)}`;
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
  const valueIsEmpty = yaml().isScalar(node) && node.value === null && node.source === '';
  const target = options.key || valueIsEmpty || !hasRange(node) ? (hasRange(keyNode) ? keyNode : node) : node;
  const { line, column } = position(source, hasRange(target) ? target.range[0] : 0);
  return { file: source.file, line, column, field: formatFieldPath(path) };
}

/** The position of a whole document or of one object inside it. */
export function sourceRef(source: YamlSource, path: FieldPath): SourceRef {
  const { file, line, column } = locate(source, path);
  return { file, line, column };
}

/**
 * Where things are in one file: every object's SourceRef, and the position of any field for a
 * diagnostic. A file read the fast way answers the second only by reading itself again, carefully.
 */
export interface Positions {
  file: string;
  /** Where the object at `path` starts. */
  ref(path: FieldPath): SourceRef;
  /** Where the field at `path` is written (see `locate`). */
  locate(path: FieldPath, options?: { key?: boolean }): DiagnosticLocation;
}

export function positionsOf(source: YamlSource): Positions {
  return { file: source.file, ref: (path) => sourceRef(source, path), locate: (path, options) => locate(source, path, options) };
}

function child(node: unknown, segment: string | number): { key: unknown; value: unknown } | undefined {
  const { isMap, isScalar, isSeq } = yaml();
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
