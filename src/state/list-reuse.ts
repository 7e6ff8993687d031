// Reading a changed file with a long list (50,000 forwards) again without parsing all of it: the
// items whose text is unchanged keep what the last reading made of them, and only the changed
// run of items is parsed. The result is what parseYamlFast would give for the whole new text
// (same data, value count, object positions, and the same decision to decline), or undefined, and
// then the caller reads the file the ordinary way.
//
// Why reusing an item is exact: the last reading of the file found exactly one list item per item
// line (`<indent>- ` inside the list, see listSlices), so every item is the text from its item line
// to the next one, and a block list item without anchors, aliases or tags (which the fast way
// declines) means the same wherever it stands. What the edit touched is found by comparing the old
// and new text from both ends; the lines in between are classified as listSlices does, and any
// change of the file's shape (its head before the first item, a line that would end the list
// early) declines.
import {
  countSeparators,
  ITEMS_PER_SLICE,
  listLine,
  listSlices,
  parseOne,
  leastBudget,
  listValuesOf,
  SEPARATOR_SLACK,
  type FastParse,
} from './yaml-fast.js';

/** What the last reading of one file with a long list keeps for the next one. */
export interface ListMemo {
  text: string;
  key: string;
  indent: number;
  /** The text before the first item line. */
  header: string;
  /** Where each item's text starts (its item line); an item runs to the next one, the last one to the end. */
  starts: number[];
  /** The items, as read and schema-checked (defaults applied). */
  items: unknown[];
  /** Where each item's object starts, from the start of its text. */
  offsets: number[];
  /** Per item: YAML values and separators (see countSeparators). */
  values: number[];
  separators: number[];
  headerValues: number;
  headerSeparators: number;
  /** Values after the list (root keys below it, in the last item's text). */
  tailValues: number;
  /** The root mapping with the list. */
  data: Record<string, unknown>;
  rootStart: number | undefined;
  listStart: number | undefined;
}

/** Lists shorter than this are simply parsed again. */
export const REUSE_MIN_ITEMS = 1_000;
/** More changed items than this and parsing them alone saves little: read the file again. */
const REPARSE_MAX_ITEMS = 2_000;

/** The memo of a file just read the fast way, when it has a long block list under `key`. */
export function listMemo(text: string, parsed: FastParse, key: string): ListMemo | undefined {
  const list = parsed.data[key];
  if (!Array.isArray(list) || list.length < REUSE_MIN_ITEMS) return undefined;
  const shape = listSlices(text, 1);
  const counts = parsed.listValues(key);
  if (!shape || shape.key !== key || !counts) return undefined;
  const starts = [shape.header.length, ...shape.cuts];
  if (starts.length !== list.length || counts.items.length !== list.length) return undefined;
  const offsets: number[] = [];
  for (let i = 0; i < starts.length; i++) {
    const at = parsed.startOf([key, i]);
    if (at === undefined) return undefined; // an item that is not an object: not worth it
    offsets.push(at - (starts[i] as number));
  }
  return {
    text,
    key,
    indent: shape.indent,
    // A copy: a slice would keep this whole text alive for as long as the memo lives on.
    header: Buffer.from(shape.header).toString(),
    starts,
    items: list,
    offsets,
    values: counts.items,
    separators: starts.map((s, i) => countSeparators(text.slice(s, starts[i + 1] ?? text.length))),
    headerValues: counts.header,
    headerSeparators: countSeparators(shape.header),
    tailValues: counts.tail,
    data: parsed.data,
    rootStart: parsed.startOf([]),
    listStart: parsed.startOf([key]),
  };
}

/** The new text read with the memo's items reused: the parse, the items still to be schema-checked, and the next memo. */
export interface ListReuse {
  parsed: FastParse;
  /** The data to schema-check: the root mapping with only the newly parsed items in its list. */
  unchecked: Record<string, unknown>;
  memo: ListMemo;
}

export function reuseList(text: string, memo: ListMemo, budget: number): ListReuse | undefined {
  const { key, indent, header, starts } = memo;
  const old = memo.text;
  const n = starts.length;
  const { prefix, suffix } = commonEnds(old, text);
  if (prefix < header.length) return undefined; // the head changed
  const delta = text.length - old.length;
  // Items kept in front: their text and the next item line's marker (`<indent>-` and the character
  // after it, `\r\n` at most) lie in the unchanged prefix. Items kept behind: their text and the
  // newline before it lie in the unchanged suffix.
  let front = 0;
  while (front < n - 1 && (starts[front + 1] as number) + indent + 3 <= prefix) front++;
  const suffixFrom = old.length - suffix;
  let back = n;
  while (back > front && (starts[back - 1] as number) - 1 >= suffixFrom) back--;
  const from = starts[front] as number;
  const to = back < n ? (starts[back] as number) + delta : text.length;
  const run = runItems(text, from, to, indent, back === n);
  // The last item holds what follows the list: it is always read again when its text changed.
  if (!run || run.length > REPARSE_MAX_ITEMS || (back === n && run.length === 0)) return undefined;

  const fresh = run.length > 0 ? parseRun(text, header, key, run, to, back === n, budget) : undefined;
  if (run.length > 0 && !fresh) return undefined;
  if (fresh && fresh.counts.header !== memo.headerValues) return undefined;
  const keep = <T>(a: T[], b: T[], c: T[]) => a.slice(0, front).concat(b, c.slice(back));
  const newStarts = keep(starts, run, delta === 0 ? starts : starts.map((s) => s + delta));
  const next: ListMemo = {
    ...memo,
    text,
    starts: newStarts,
    items: keep(memo.items, fresh?.items ?? [], memo.items),
    offsets: keep(memo.offsets, fresh?.offsets ?? [], memo.offsets),
    values: keep(memo.values, fresh?.counts.items ?? [], memo.values),
    separators: keep(memo.separators, run.map((s, i) => countSeparators(text.slice(s, run[i + 1] ?? to))), memo.separators),
    tailValues: back === n ? (fresh?.counts.tail ?? 0) : memo.tailValues,
    data: {},
  };
  // With the last item, the root keys after the list were read again; else they are the memo's.
  const root = back === n && fresh ? fresh.data : memo.data;
  next.data = { ...root, [key]: next.items };
  if (next.items.length < REUSE_MIN_ITEMS) return undefined;
  const accepted = valuesIfAccepted(next, budget);
  if (accepted === undefined) return undefined;
  const { values, least } = accepted;
  return {
    memo: next,
    unchecked: { ...root, [key]: fresh?.items ?? [] },
    parsed: {
      data: next.data,
      values,
      leastBudget: least,
      startOf: (path) => {
        if (path.length === 0) return next.rootStart;
        if (path[0] !== key) return undefined; // not known here: positions are read carefully
        if (path.length === 1) return next.listStart;
        const i = path[1];
        return path.length === 2 && typeof i === 'number' && i < newStarts.length ? (newStarts[i] as number) + (next.offsets[i] as number) : undefined;
      },
      listValues: (k) => (k === key ? { header: next.headerValues, items: next.values, tail: next.tailValues } : undefined),
    },
  };
}

/** Lengths of the longest common prefix and suffix of a and b, not overlapping in either. */
export function commonEnds(a: string, b: string): { prefix: number; suffix: number } {
  const max = Math.min(a.length, b.length);
  // Block by block first: comparing two slices is one native comparison, not 4,096 calls.
  const block = 4096;
  let prefix = 0;
  while (prefix + block <= max && a.slice(prefix, prefix + block) === b.slice(prefix, prefix + block)) prefix += block;
  while (prefix < max && a.charCodeAt(prefix) === b.charCodeAt(prefix)) prefix++;
  const room = max - prefix;
  let suffix = 0;
  while (suffix + block <= room && a.slice(a.length - suffix - block, a.length - suffix) === b.slice(b.length - suffix - block, b.length - suffix)) suffix += block;
  while (suffix < room && a.charCodeAt(a.length - 1 - suffix) === b.charCodeAt(b.length - 1 - suffix)) suffix++;
  return { prefix, suffix };
}

/**
 * Where the items of text[from, to) start: its first line must be an item line and nothing in it
 * may end the list, except in the last run (`toEnd`), whose last item runs on into what follows
 * the list. undefined when the run does not read as whole items of the list.
 */
function runItems(text: string, from: number, to: number, indent: number, toEnd: boolean): number[] | undefined {
  const starts: number[] = [];
  for (let offset = from; offset < to; ) {
    const end = text.indexOf('\n', offset);
    const kind = listLine(text.slice(offset, end === -1 ? text.length : end), indent);
    if (starts.length === 0 && kind !== 'item') return undefined;
    if (kind === 'item') starts.push(offset);
    else if (kind === 'end') return toEnd ? starts : undefined;
    offset = end === -1 ? to : Math.min(to, end + 1);
  }
  return starts;
}

/** The run's items parsed after the head, as one slice of the file would be. */
function parseRun(text: string, header: string, key: string, run: number[], to: number, toEnd: boolean, budget: number) {
  const from = run[0] as number;
  const parsed = parseOne(header + text.slice(from, to), budget);
  const items = parsed?.data[key];
  const counts = parsed && listValuesOf(parsed.scan, key, toEnd);
  const itemStarts = parsed?.scan.children.get(key)?.items;
  if (!parsed || !counts || !itemStarts || !Array.isArray(items) || items.length !== run.length) return undefined;
  const offsets: number[] = [];
  for (let i = 0; i < run.length; i++) {
    const at = itemStarts[i];
    if (at === undefined) return undefined;
    // In the parsed text the run starts right after the head.
    offsets.push(at - header.length - ((run[i] as number) - from));
  }
  return { data: parsed.data, items, offsets, counts };
}

/**
 * The value count parseYamlFast would charge for the memo's text and the least budget it reads it
 * with, or undefined where it would decline: per slice of ITEMS_PER_SLICE items (each with the
 * head), at most SEPARATOR_SLACK separators per value the budget has left, and never more values
 * than the budget.
 */
function valuesIfAccepted(memo: ListMemo, budget: number): { values: number; least: number } | undefined {
  const { text, items } = memo;
  const sliced = listSlicesWouldCut(text, items.length);
  const per = sliced ? ITEMS_PER_SLICE : items.length;
  let values = 0;
  let least = 0;
  for (let first = 0; first < items.length; first += per) {
    const last = Math.min(items.length, first + per);
    let separators = memo.headerSeparators;
    let sliceValues = memo.headerValues;
    for (let i = first; i < last; i++) {
      separators += memo.separators[i] as number;
      sliceValues += memo.values[i] as number;
    }
    if (last === items.length) sliceValues += memo.tailValues;
    if (separators > SEPARATOR_SLACK * Math.max(0, budget - values)) return undefined;
    least = Math.max(least, leastBudget(values, sliceValues, separators));
    values += sliceValues;
    if (values > budget) return undefined;
  }
  return { values, least };
}

/** Whether parseYamlFast reads a file of this length with this many list items in slices (see listSlices). */
function listSlicesWouldCut(text: string, items: number): boolean {
  return text.length >= ITEMS_PER_SLICE * 2 * 20 && items > ITEMS_PER_SLICE;
}
