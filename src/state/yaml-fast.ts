// The fast way to read a state file: js-yaml's event parser, which keeps no syntax tree and no
// positions, for the common case of a plain, valid file. It takes only files it can read exactly
// as the careful parser in yaml-source.ts would; for anything else (a syntax error, a tag, an
// anchor or alias, a directive, more than one document, a root that is not a mapping, a file near
// a limit) it declines, and the caller reads the file the careful way, which reports the problem
// with its position. Positions of fields are computed only when a diagnostic needs one.
import {
  constructFromEvents,
  defineScalarTag,
  COLLECTION_STYLE_FLOW,
  EVENT_ID,
  getScalarValue,
  mapTag,
  NOT_RESOLVED,
  parseEvents,
  Schema,
  seqTag,
  strTag,
  type Event,
} from 'js-yaml';
import { STATE_LIMITS } from './files.js';
import type { FieldPath } from './diagnostics.js';
import { CORE_SCALARS } from './core-scalars.js';
import { lineCounterOf, parseYamlSource, positionsOf, type LineStarts, type NodeBudget, type Positions } from './yaml-source.js';

/** A file read the fast way. */
export interface FastParse {
  data: Record<string, unknown>;
  /** The file's YAML values as the careful parser counts them against the NodeBudget (never fewer). */
  values: number;
  /**
   * The least value budget under which parseYamlFast reads this text: with any budget at least this
   * large it reads it the same (data and values do not depend on the budget), with less it declines.
   */
  leastBudget: number;
  /** Offset where the mapping or list at `path` starts, for the root and the first two levels; else undefined. */
  startOf(path: FieldPath): number | undefined;
  /** How the values of a block list under the root key `key` are counted: before it, per item, after it. */
  listValues(key: string): ListValues | undefined;
}

/** A root list's share of a file's value count (see FastParse.listValues). */
export interface ListValues {
  header: number;
  items: number[];
  tail: number;
}

/**
 * How many separators per value the budget has left a file may hold and still be tried the fast
 * way. A value follows a separator, at most two values each one, so this bounds the parser's event
 * list (about 110 bytes an event) for a hostile file to 2 * 1.5 * 750,000 events (~250 MB, less
 * than the careful parser spent on a legitimate file at the limit) before the budget refuses it;
 * block-style forwards have about 14 separators for 13 values.
 */
export const SEPARATOR_SLACK = 1.5;

/**
 * Reads `text` the fast way, or returns undefined when the careful parser must read it. Never
 * throws, never changes `budget` (the caller charges `values` once it uses the result). A file
 * with a long block list under a root key (50,000 forwards) is read in slices of that list, so the
 * parser's events for the whole file (about 110 bytes each) never exist at once.
 */
export function parseYamlFast(text: string, budget: NodeBudget, itemsPerSlice = ITEMS_PER_SLICE): FastParse | undefined {
  const slices = listSlices(text, itemsPerSlice);
  return slices ? parseSliced(text, slices, budget.nodes) : parseWhole(text, budget.nodes);
}

/** One text parsed the fast way: its data and what the scan of its events found. */
export interface Parsed {
  data: Record<string, unknown>;
  scan: Scan;
  /** countSeparators of the text. */
  separators: number;
}

export function parseOne(text: string, budget: number): Parsed | undefined {
  // A bound on the events the parser would make, checked before it makes them.
  const separators = countSeparators(text);
  if (separators > SEPARATOR_SLACK * Math.max(0, budget)) return undefined;
  let events: Event[];
  try {
    events = parseEvents(text, { maxDepth: STATE_LIMITS.yamlDepth });
  } catch {
    return undefined;
  }
  const scan = scanEvents(events, text, budget);
  if (!scan) return undefined;
  let docs: unknown[];
  try {
    docs = constructFromEvents(events, { source: text, schema: fastSchema(), maxAliases: 0 });
  } catch {
    return undefined; // e.g. a duplicate key: the careful parser says where
  }
  const data = docs[0];
  if (docs.length !== 1 || typeof data !== 'object' || data === null || Array.isArray(data)) return undefined;
  return { data: data as Record<string, unknown>, scan, separators };
}

/**
 * The least budget parseOne reads a text with, when `valuesBefore` values of the file were charged
 * before it: it declines exactly when the budget left is below the text's values or below its
 * separators / SEPARATOR_SLACK (both checks grow with the budget; nothing else depends on it).
 * ceil(s / 1.5) is exact in floating point: 2s/3 is either an integer or a third away from one.
 */
export function leastBudget(valuesBefore: number, values: number, separators: number): number {
  return valuesBefore + Math.max(values, Math.ceil(separators / SEPARATOR_SLACK));
}

function parseWhole(text: string, budget: number): FastParse | undefined {
  const parsed = parseOne(text, budget);
  if (!parsed) return undefined;
  const { root, children } = parsed.scan;
  return {
    data: parsed.data,
    values: parsed.scan.values,
    leastBudget: leastBudget(0, parsed.scan.values, parsed.separators),
    startOf: (path) => {
      if (path.length === 0) return root;
      const child = children.get(String(path[0]));
      if (path.length === 1) return child?.start;
      return path.length === 2 && typeof path[1] === 'number' ? child?.items?.[path[1]] : undefined;
    },
    listValues: (key) => listValuesOf(parsed.scan, key, true),
  };
}

/** The list `key`'s value counts in one scan; `last`: the scan reaches the file's end (it has the tail). */
export function listValuesOf(scan: Scan, key: string, last: boolean): ListValues | undefined {
  const marks = scan.children.get(key)?.marks;
  if (!marks || marks.length < 2) return undefined;
  const end = marks[marks.length - 1] as number;
  const items = marks.slice(1).map((m, i) => m - (marks[i] as number));
  return { header: marks[0] as number, items, tail: last ? scan.values - end : 0 };
}

/**
 * Items of a list per slice. Few slices on purpose: every new parse hands js-yaml a new input
 * string, and past about eight parses its optimised code is thrown away often enough to cost more
 * CPU than the slicing saves memory (measured: 5 slices of 50,000 forwards +25 % CPU, 10 slices +60 %).
 * The value limit keeps a list under ~55,000 items, so a file is read in at most 6 slices.
 */
export const ITEMS_PER_SLICE = 10_000;

/**
 * Where a file may be cut into slices that read like the whole: it is a root mapping whose key
 * `key` (at column 0, nothing after the colon) holds a block list whose items start at `indent`.
 * `cuts` are the offsets of item lines (`<indent spaces>- `) at which a slice starts, all before
 * the first line that is less indented than the items, so every cut is an item of that list:
 * anything else that could hold such a line (a quoted or flow scalar running over lines) leaves
 * a slice unterminated, which fails its parse, and then the whole file is read carefully.
 */
export interface ListSlices {
  key: string;
  /** Column of the items' `-`. */
  indent: number;
  /** The text before the first item: the root mapping's keys up to `key:`; every slice starts with it. */
  header: string;
  /** Offsets in the file where slices 2, 3, ... start (slice 1 starts at header.length). */
  cuts: number[];
  /** Item lines in each slice (the last one's counted up to the end of the list). */
  itemCounts: number[];
}

const ITEM_LINE = /^( *)-(?: |\r?$)/;
const ROOT_KEY_LINE = /^([A-Za-z_][A-Za-z0-9_-]*):[ ]*(?:#.*)?\r?$/;
const BLANK_OR_COMMENT = /^[ ]*(?:#.*)?\r?$/;

export function listSlices(text: string, itemsPerSlice: number): ListSlices | undefined {
  if (text.length < itemsPerSlice * 2 * 20) return undefined; // too short for two slices: read whole
  if (itemLinesAtMost(text, itemsPerSlice + 1) <= itemsPerSlice) return undefined; // too few items for a cut
  let offset = 0;
  let key: string | undefined;
  let indent = -1;
  let header = '';
  let items = 0;
  const cuts: number[] = [];
  const itemCounts: number[] = [];
  while (offset < text.length) {
    const end = text.indexOf('\n', offset);
    const next = end === -1 ? text.length : end + 1;
    const line = text.slice(offset, end === -1 ? text.length : end);
    if (indent === -1) {
      // Before the list: find `key:` at column 0 followed (past blank and comment lines) by an item line.
      const item = ITEM_LINE.exec(line);
      if (item && key !== undefined) {
        indent = item[1]?.length ?? 0;
        header = text.slice(0, offset);
        items = 1;
      } else if (!BLANK_OR_COMMENT.test(line)) key = ROOT_KEY_LINE.exec(line)?.[1];
    } else {
      const kind = listLine(line, indent);
      if (kind === 'item') {
        if (items === itemsPerSlice) {
          cuts.push(offset);
          itemCounts.push(items);
          items = 0;
        }
        items++;
      } else if (kind === 'end') break;
    }
    offset = next;
  }
  if (key === undefined || indent === -1 || cuts.length === 0) return undefined;
  itemCounts.push(items);
  return { key, indent, header, cuts, itemCounts };
}

/**
 * At most how many item lines `text` has (a `-` followed by a space, a line end or the end), counted
 * up to `enough`: a cheap bound that spares the line by line reading of a list too short to cut.
 */
function itemLinesAtMost(text: string, enough: number): number {
  let n = 0;
  for (let i = text.indexOf('-'); i !== -1 && n < enough; i = text.indexOf('-', i + 1)) {
    const next = text.charCodeAt(i + 1);
    if (Number.isNaN(next) || next === 0x20 || next === 0x0a || next === 0x0d) n++;
  }
  return n;
}

/**
 * A line (without its newline) inside a block list whose items' `-` is at column `indent`: a new
 * item, the end of the list, or anything else (blank, comment, more of the current item).
 */
export function listLine(line: string, indent: number): 'item' | 'end' | 'other' {
  if (BLANK_OR_COMMENT.test(line)) return 'other';
  const lead = line.length - line.trimStart().length;
  const item = ITEM_LINE.exec(line);
  if (item && lead === indent) return 'item';
  return lead < indent || (lead === indent && !item) ? 'end' : 'other';
}

/**
 * Reads the file slice by slice (the header and one run of items each) and joins the slices'
 * lists. Each slice must be read the fast way and hold exactly its item lines as list items, or
 * the file is declined. Values are counted per slice, so the header's few count once per slice
 * (never fewer than the careful count).
 */
function parseSliced(text: string, slices: ListSlices, budget: number): FastParse | undefined {
  const { key, header, cuts } = slices;
  const starts = [header.length, ...cuts];
  const list: unknown[] = [];
  const itemStarts: Array<number | undefined> = [];
  let values = 0;
  let least = 0;
  let last: Parsed | undefined;
  let first: Parsed | undefined;
  const counts: ListValues = { header: 0, items: [], tail: 0 };
  for (let i = 0; i < starts.length; i++) {
    const from = starts[i] as number;
    const to = i + 1 < starts.length ? (starts[i + 1] as number) : text.length;
    const parsed = parseOne(header + text.slice(from, to), budget - values);
    const items = parsed?.data[key];
    const expected = slices.itemCounts[i] as number;
    if (!parsed || !Array.isArray(items) || items.length !== expected) return undefined;
    // Offsets past the header are the slice's own: shift them to where the slice sits in the file.
    const shift = (o: number | undefined) => (o === undefined || o < header.length ? o : o - header.length + from);
    for (const item of items) list.push(item);
    for (const o of parsed.scan.children.get(key)?.items ?? []) itemStarts.push(shift(o));
    least = Math.max(least, leastBudget(values, parsed.scan.values, parsed.separators));
    values += parsed.scan.values;
    const sliceCounts = listValuesOf(parsed.scan, key, i === starts.length - 1);
    if (!sliceCounts) return undefined;
    counts.header = sliceCounts.header; // the same header in every slice
    for (const v of sliceCounts.items) counts.items.push(v);
    counts.tail = sliceCounts.tail;
    first ??= parsed;
    if (i === starts.length - 1) {
      last = parsed;
      for (const [k, child] of parsed.scan.children) if (k !== key) child.start = shift(child.start);
    }
  }
  if (!first || !last || itemStarts.length !== list.length) return undefined;
  // The last slice has every root key (the header's, the list's and any after it), in file order.
  const data = { ...last.data, [key]: list };
  const root = first.scan.root;
  const listStart = first.scan.children.get(key)?.start;
  return {
    data,
    values,
    leastBudget: least,
    startOf: (path) => {
      if (path.length === 0) return root;
      if (path[0] !== key) return path.length === 1 ? last.scan.children.get(String(path[0]))?.start : undefined;
      if (path.length === 1) return listStart;
      return path.length === 2 && typeof path[1] === 'number' ? itemStarts[path[1]] : undefined;
    },
    listValues: (k) => (k === key ? counts : undefined),
  };
}

/** Newlines and the indicators a YAML value can follow: `- : ? , [ {`. */
export function countSeparators(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x0a || c === 0x2c || c === 0x2d || c === 0x3a || c === 0x3f || c === 0x5b || c === 0x7b) n++;
  }
  return n;
}

interface Frame {
  kind: 'document' | 'mapping' | 'sequence';
  /** Mappings: the next node is a key. */
  atKey: boolean;
  /** A block sequence: each item has a `-`. */
  blockSequence?: boolean;
  /** The root mapping: the last key read. */
  key?: string;
  /** A sequence directly under the root mapping: where each item starts. */
  items?: Array<number | undefined>;
  /** With items: the value count before each item, and when the sequence ended. */
  marks?: number[];
}

export interface Scan {
  values: number;
  root: number;
  children: Map<string, { start?: number; items?: Array<number | undefined>; marks?: number[] }>;
}

/**
 * One pass over the events: refuses what the fast way must not take (tags, anchors, aliases,
 * directives, several documents, a root that is not a mapping, unusual keys, more values than
 * `budget`), counts the values as the careful parser's budget does, and notes
 * where the objects of the first two levels start.
 */
function scanEvents(events: Event[], text: string, budget: number): Scan | undefined {
  const stack: Frame[] = [];
  const children: Scan['children'] = new Map();
  let documents = 0;
  let values = 0;
  let root: number | undefined;
  for (const event of events) {
    if (event.type === EVENT_ID.POP) {
      stack.pop()?.marks?.push(values);
      continue;
    }
    if (event.type === EVENT_ID.DOCUMENT) {
      if (++documents > 1 || event.directives.length > 0) return undefined;
      stack.push({ kind: 'document', atKey: false });
      continue;
    }
    if (event.type === EVENT_ID.ALIAS || event.anchorStart !== -1 || event.tagStart !== -1) return undefined;
    const parent = stack[stack.length - 1];
    if (!parent) return undefined;
    const valuesBefore = values;
    // As the careful lexer counts: scalars, flow collections (their `[`/`{`), block list items (their `-`).
    values += (event.type === EVENT_ID.SCALAR || event.style === COLLECTION_STYLE_FLOW ? 1 : 0) + (parent.blockSequence ? 1 : 0);
    if (values > budget) return undefined;
    // A scalar's start is not where the careful parser places it (quotes, block headers): unknown.
    const start = event.type === EVENT_ID.SCALAR ? undefined : event.start;
    const isKey = parent.kind === 'mapping' && parent.atKey;
    if (isKey && event.type === EVENT_ID.SCALAR && !isOrdinaryKey(text, event.valueStart, event.valueEnd)) return undefined;
    if (parent.kind === 'mapping') parent.atKey = !parent.atKey;
    const depth = stack.length; // 1: the root, 2: under the root, 3: inside one of those
    if (depth === 1 && event.type !== EVENT_ID.MAPPING) return undefined;
    if (depth === 1) root = start;
    let items: Frame['items'];
    let marks: Frame['marks'];
    if (depth === 2 && isKey) parent.key = event.type === EVENT_ID.SCALAR ? getScalarValue(text, event) : undefined;
    else if (depth === 2 && parent.key !== undefined) {
      items = event.type === EVENT_ID.SEQUENCE ? [] : undefined;
      marks = items && [];
      children.set(parent.key, { start, items, marks });
    } else if (depth === 3) {
      parent.items?.push(start);
      parent.marks?.push(valuesBefore);
    }
    if (event.type !== EVENT_ID.SCALAR) {
      const kind = event.type === EVENT_ID.MAPPING ? 'mapping' : 'sequence';
      stack.push({ kind, atKey: true, items, marks, blockSequence: kind === 'sequence' && event.style !== COLLECTION_STYLE_FLOW });
    }
  }
  return documents === 1 && root !== undefined ? { values, root, children } : undefined;
}

/**
 * The careful parser refuses a key longer than 1024 characters and names a null key "" where
 * js-yaml names it "null": such keys are left to it.
 */
function isOrdinaryKey(text: string, start: number, end: number): boolean {
  if (end - start > 1024) return false;
  return end - start > 4 || !/^(?:~|[Nn]ull|NULL)?$/.test(text.slice(start, end));
}

let schema: Schema | undefined;

/**
 * Plain scalars resolve exactly as in the careful parser: the YAML 1.2 core schema's tags (null,
 * bool, int, float, in its order) decide (core-scalars.ts). A scalar is tried only against the
 * tags it can start like: a name or `tcp` against none.
 */
function fastSchema(): Schema {
  if (schema) return schema;
  const resolvers = CORE_SCALARS.map((core, i) =>
    defineScalarTag(`tag:cgw-sync,core:${i}`, {
      implicit: true,
      implicitFirstChars: core.firstChars,
      identify: () => false,
      resolve: (source) => (core.pattern.test(source) ? core.resolve(source) : NOT_RESOLVED),
    }),
  );
  schema = new Schema([strTag, seqTag, mapTag, ...resolvers]);
  return schema;
}

/**
 * The positions of a file read the fast way. Object starts come from the fast parse; anything else
 * (a field a diagnostic points at) parses the file once more with positions, on first use.
 */
export function fastPositions(file: string, text: string, parsed: FastParse): Positions {
  let lines: LineStarts | undefined;
  let careful: Positions | undefined;
  const carefully = () => {
    careful ??= positionsOf(parseYamlSource(file, text).source);
    return careful;
  };
  return {
    file,
    ref: (path) => {
      const offset = parsed.startOf(path);
      if (offset === undefined) return carefully().ref(path);
      lines ??= lineCounterOf(text);
      const { line, col } = lines.linePos(offset);
      return { file, line, column: col };
    },
    locate: (path, options) => carefully().locate(path, options),
  };
}
