// Loading with a LoadMemory (the running agent: only what changed is parsed and schema-checked
// again, src/state/list-reuse.ts) must give exactly what a fresh full load gives: the same state
// (every object's file, line and column) and, for an invalid revision, the same diagnostics. A
// sequence of random edits of a generated state is loaded both ways after every edit; the memory
// is carried through the whole sequence, valid and invalid revisions alike. The edits are seeded:
// a failure names its seed and step.
import { cp, mkdtemp, readdir, readFile, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeSyntheticStateRepo } from '../src/bench/synthetic.js';
import { RACY_MS } from '../src/fs/stamp.js';
import { STATE_LIMITS } from '../src/state/files.js';
import { commonEnds, listMemo, reuseList } from '../src/state/list-reuse.js';
import { LoadMemory, loadState, type LoadResult } from '../src/state/load.js';
import { seededRandom } from './helpers/random.js';
import { countSeparators, fastPositions, ITEMS_PER_SLICE, parseYamlFast, SEPARATOR_SLACK } from '../src/state/yaml-fast.js';

const scratch = await mkdtemp(join(tmpdir(), 'cgw-load-memory-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const LIST = 'forwards/bench.yaml';

/** Where each item of the list file starts (its `  - ` line), and the end of the text. */
function itemStarts(text: string): number[] {
  const starts = [...text.matchAll(/^ {2}- /gm)].map((m) => m.index as number);
  return [...starts, text.length];
}

/** `text` with the item at `i` replaced by `by` (a whole item text, newline-terminated, or ''). */
function replaceItem(text: string, i: number, by: string): string {
  const starts = itemStarts(text);
  const at = Math.min(i, starts.length - 2);
  return text.slice(0, starts[at]) + by + text.slice(starts[at + 1]);
}

function insertBefore(text: string, i: number, what: string): string {
  const starts = itemStarts(text);
  const at = starts[Math.min(i, starts.length - 1)] as number;
  return text.slice(0, at) + what + text.slice(at);
}

const item = (name: string, port: number, extra = '') => `  - name: ${name}\n    protocol: tcp\n    port: ${port}\n    target:\n      guest: guest1\n      port: 1\n${extra}`;

type Edit = { what: string; file: string; change: (text: string) => string };

/** One random edit: mostly of the long list, some elsewhere, valid and invalid ones. */
function randomEdit(pick: (n: number) => number, items: number, step: number): Edit {
  // Near a cut between slices of the fast parser, or anywhere.
  const near = [ITEMS_PER_SLICE - 1, ITEMS_PER_SLICE, ITEMS_PER_SLICE + 1, 0, items - 1];
  const at = pick(3) === 0 ? (near[pick(near.length)] as number) : pick(items);
  const port = 40000 + step;
  const edits: Array<() => Edit> = [
    () => ({ what: `change item ${at}'s port`, file: LIST, change: (t) => replaceItem(t, at, item(`chg-${step}`, port)) }),
    () => ({ what: `add an item before ${at}`, file: LIST, change: (t) => insertBefore(t, at, item(`add-${step}`, port)) }),
    () => ({ what: `remove item ${at}`, file: LIST, change: (t) => replaceItem(t, at, '') }),
    () => ({ what: `a comment and a blank line before ${at} (positions shift)`, file: LIST, change: (t) => insertBefore(t, at, '  # moved\n\n') }),
    () => ({ what: `an invalid port at ${at}`, file: LIST, change: (t) => replaceItem(t, at, item(`bad-${step}`, 70000)) }),
    () => ({ what: `an unknown property at ${at}`, file: LIST, change: (t) => replaceItem(t, at, item(`unk-${step}`, port, '    prot: tcp\n')) }),
    () => ({ what: `a YAML syntax error at ${at}`, file: LIST, change: (t) => replaceItem(t, at, '  - name: [broken\n') }),
    () => ({ what: `a duplicate name at ${at}`, file: LIST, change: (t) => replaceItem(t, at, item('fwd-3', port)) }),
    () => ({ what: `a port clash at ${at}`, file: LIST, change: (t) => replaceItem(t, at, item(`clash-${step}`, 10_005)) }),
    () => ({ what: `an item line inside a quoted scalar at ${at}`, file: LIST, change: (t) => replaceItem(t, at, `  - name: "q-${step}\n  - x"\n    protocol: tcp\n    port: ${port}\n    target: { guest: guest1, port: 1 }\n`) }),
    () => ({ what: `a line that ends the list at ${at}`, file: LIST, change: (t) => insertBefore(t, at, 'extra: 1\n') }),
    () => ({ what: `two edits far apart (${at} and the end)`, file: LIST, change: (t) => replaceItem(replaceItem(t, items - 2, item(`far-${step}`, port + 500)), at, item(`near-${step}`, port)) }),
    () => ({ what: 'a comment in the head', file: LIST, change: (t) => t.replace('kind: Forwards\n', `kind: Forwards # ${step}\n`) }),
    () => ({ what: 'a key after the list', file: LIST, change: (t) => `${t}apiVersion: cgw-sync/v1\n` }),
    () => ({ what: 'a guest file changes', file: 'guests/guest1.yaml', change: (t) => t.replace(/memoryMiB: \d+/, `memoryMiB: ${512 + step}`) }),
    () => ({ what: 'a node file breaks', file: 'nodes/node1.yaml', change: (t) => t.replace(/publicIP: .*/, 'publicIP: 300.1.1.1') }),
    () => ({ what: 'a second forwards file', file: `forwards/extra-${step}.yaml`, change: () => `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${item(`extra-${step}`, port + 1000)}` }),
  ];
  return (edits[pick(edits.length)] as () => Edit)();
}

/** Applies the edit; returns the file's text before it (undefined: there was no such file). */
async function applyEdit(dir: string, edit: Edit): Promise<string | undefined> {
  const path = join(dir, edit.file);
  const before = await readFile(path, 'utf8').catch(() => undefined);
  await writeFile(path, edit.change(before ?? ''));
  return before;
}

async function restore(dir: string, file: string, text: string | undefined): Promise<void> {
  if (text === undefined) await unlink(join(dir, file));
  else await writeFile(join(dir, file), text);
}

/** The memory's load beside a fresh one: equal, or the failure says which step of which seed. */
async function expectSameLoad(dir: string, memory: LoadMemory, label: string): Promise<LoadResult> {
  const remembered = await loadState(dir, memory);
  const fresh = await loadState(dir);
  expect(remembered, label).toEqual(fresh);
  // The forwards of several files merged by name are in the order one sort of all of them gives.
  const names = remembered.state?.forwards.map((f) => f.name) ?? [];
  expect(names.every((name, i) => i === 0 || (names[i - 1] as string) < name), label).toBe(true);
  return remembered;
}

/** A generated state with `forwards` forwards, loaded once with a new memory. */
async function generated(forwards: number): Promise<{ dir: string; memory: LoadMemory }> {
  const dir = await mkdtemp(join(scratch, `state-${forwards}-`));
  await writeSyntheticStateRepo(dir, forwards);
  const memory = new LoadMemory();
  const first = await expectSameLoad(dir, memory, 'first load');
  expect(first.diagnostics).toEqual([]);
  return { dir, memory };
}

/** The values the fast reading charges for every state file in `dir`, together. */
async function valuesCharged(dir: string): Promise<number> {
  const files = ['cluster.yaml', ...(await readdir(dir, { recursive: true })).filter((f) => /^(nodes|guests|forwards)\/.*\.yaml$/.test(f))];
  let values = 0;
  for (const file of files) values += parseYamlFast(await readFile(join(dir, file), 'utf8'), { nodes: STATE_LIMITS.yamlNodes })?.values ?? Number.NaN;
  return values;
}

/** The list file's items as the memory holds them: the same objects when they were reused. */
const listItems = (memory: LoadMemory) => memory.files.get(LIST)?.list?.items ?? [];

/**
 * `steps` random edits, each loaded both ways. An invalid revision is undone at once, or left for
 * one more edit on top of it (the memory then still holds the last valid reading of the file).
 */
async function randomEdits(forwards: number, seed: number, steps: number): Promise<{ valid: number; invalid: number; reused: number }> {
  const { dir, memory } = await generated(forwards);
  const pick = seededRandom(seed);
  let valid = 0;
  let invalid = 0;
  let reused = 0;
  let broken: { file: string; text: string | undefined } | undefined;
  for (let step = 0; step < steps; step++) {
    const edit = randomEdit(pick, forwards, step);
    const before = await applyEdit(dir, edit);
    const held = listItems(memory);
    const r = await expectSameLoad(dir, memory, `seed ${seed}, step ${step}: ${edit.what}`);
    // Items read before and kept as they were (the first or the last one is always far from a single edit).
    const now = listItems(memory);
    if (edit.file === LIST && now !== held && (now[0] === held[0] || now.at(-1) === held.at(-1))) reused++;
    if (r.state) valid++;
    else invalid++;
    if (broken) {
      if (!r.state && edit.file !== broken.file) await restore(dir, edit.file, before);
      await restore(dir, broken.file, broken.text);
      await expectSameLoad(dir, memory, `seed ${seed}, step ${step}: the earlier invalid edit undone`);
      broken = undefined;
    } else if (!r.state && pick(2) === 0) {
      await restore(dir, edit.file, before);
      await expectSameLoad(dir, memory, `seed ${seed}, step ${step}: undone`);
    } else if (!r.state) broken = { file: edit.file, text: before };
  }
  return { valid, invalid, reused };
}

describe('a load with memory gives what a fresh load gives', () => {
  it('12,000 forwards (read in two slices), 36 random edits', async () => {
    const counts = await randomEdits(12_000, 12, 36);
    // Both kinds of revision were met, or the sequence proves less than it claims.
    expect(counts.valid).toBeGreaterThan(8);
    expect(counts.invalid).toBeGreaterThan(8);
    // And the memory's way was taken, not only a full reading again.
    expect(counts.reused).toBeGreaterThan(4);
  }, 240_000);

  it('50,000 forwards, 5 random edits', async () => {
    const counts = await randomEdits(50_000, 50, 5);
    expect(counts.valid + counts.invalid).toBe(5);
  }, 240_000);

  it('an unchanged file is not read again: its objects are the very same', async () => {
    const { dir, memory } = await generated(2_000);
    const before = await loadState(dir, memory);
    await applyEdit(dir, { what: 'a guest file changes', file: 'guests/guest2.yaml', change: (t) => t.replace(/memoryMiB: \d+/, 'memoryMiB: 777') });
    const after = await expectSameLoad(dir, memory, 'guest2 changed');
    const byName = (r: LoadResult, name: string) => r.state?.guests.find((g) => g.name === name);
    expect(byName(after, 'guest1')).toBe(byName(before, 'guest1'));
    expect(byName(after, 'guest2')).not.toBe(byName(before, 'guest2'));
    expect(byName(after, 'guest2')?.resources.memoryMiB).toBe(777);
    // One item of the long list changed: the others are the objects read before.
    const held = listItems(memory);
    await applyEdit(dir, { what: 'one forward changes', file: LIST, change: (t) => replaceItem(t, 1500, item('changed', 65000)) });
    await expectSameLoad(dir, memory, 'one forward changed');
    const now = listItems(memory);
    expect(now).toHaveLength(2_000);
    expect(now[1499]).toBe(held[1499]);
    expect(now[1501]).toBe(held[1501]);
    expect(now[1500]).not.toBe(held[1500]);
  });

  it('a file added before a long unchanged file does not make it be read again', async () => {
    const { dir, memory } = await generated(2_000);
    const before = await loadState(dir, memory);
    // Sorted before bench.yaml: it takes some of the value budget the long list was read with.
    await writeFile(join(dir, 'forwards/a-extra.yaml'), `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${item('a-extra', 40001)}`);
    const after = await expectSameLoad(dir, memory, 'a file before the long list');
    const fromList = (r: LoadResult) => r.state?.forwards.filter((f) => f.source.file === LIST) ?? [];
    expect(fromList(after)).toHaveLength(2_000);
    const held = fromList(before);
    expect(fromList(after).every((f, i) => f === held[i])).toBe(true);
  });

  it('a file whose bytes are unchanged is not decoded again; any changed byte is', async () => {
    const { dir, memory } = await generated(2_000);
    const text = memory.texts.get(LIST)?.text;
    await applyEdit(dir, { what: 'a guest file changes', file: 'guests/guest2.yaml', change: (t) => t.replace(/memoryMiB: \d+/, 'memoryMiB: 777') });
    const sevens = (r: LoadResult) => r.state?.forwards.filter((f) => f.target.port === 7).length;
    const unchanged = await expectSameLoad(dir, memory, 'guest2 changed');
    expect(memory.texts.get(LIST)?.text).toBe(text);
    // The same length, one byte different: a target port, then a control character.
    const last = (text ?? '').lastIndexOf('port: 1\n');
    await applyEdit(dir, { what: 'a target port', file: LIST, change: (t) => `${t.slice(0, last)}port: 7\n${t.slice(last + 8)}` });
    const changed = await expectSameLoad(dir, memory, 'one byte changed');
    expect(sevens(changed)).toBe((sevens(unchanged) ?? 0) + 1);
    await applyEdit(dir, { what: 'a control character', file: LIST, change: (t) => `${t.slice(0, last)}port: \u0007\n${t.slice(last + 8)}` });
    const control = await expectSameLoad(dir, memory, 'a control character');
    expect(control.diagnostics.map((d) => d.message).join('\n')).toMatch(/control character/);
    await unlink(join(dir, 'guests/guest2.yaml'));
    await expectSameLoad(dir, memory, 'a file removed');
    expect(memory.texts.has('guests/guest2.yaml')).toBe(false);
  });

  it('a remembered file is taken only where the budget left lets the fast reading read it', async () => {
    const { dir, memory } = await generated(2_000);
    // After the long list: a file whose separators (a comment of dashes) need more budget than its values.
    const late = 'forwards/zz-late.yaml';
    const lateText = (dashes: number) => `apiVersion: cgw-sync/v1\nkind: Forwards\n# ${'-'.repeat(dashes)}\nforwards:\n${item('late', 40002)}`;
    const used = await valuesCharged(dir);
    const left = STATE_LIMITS.yamlNodes - used;
    // Exactly 5 less than the budget left for it: a file of 13 values added before it makes the fast reading decline.
    const dashes = Math.floor(SEPARATOR_SLACK * (left - 5)) - countSeparators(lateText(0));
    await writeFile(join(dir, late), lateText(dashes));
    expect(parseYamlFast(lateText(dashes), { nodes: STATE_LIMITS.yamlNodes })?.leastBudget).toBe(left - 5);
    const lateForward = (r: LoadResult) => r.state?.forwards.find((f) => f.name === 'late');
    const first = await expectSameLoad(dir, memory, 'the late file read the fast way');
    await writeFile(join(dir, 'forwards/a-extra.yaml'), `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${item('a-extra', 40001)}`);
    const squeezed = await expectSameLoad(dir, memory, 'too little budget left for the fast reading');
    expect(lateForward(squeezed)).toBeDefined();
    expect(lateForward(squeezed)).not.toBe(lateForward(first));
    await unlink(join(dir, 'forwards/a-extra.yaml'));
    const again = await expectSameLoad(dir, memory, 'enough budget again');
    expect(lateForward(again)).toBe(lateForward(first));
  });

  it('the value limit counts a file read from memory as it counts a file read again', async () => {
    // 50,000 forwards take ~600,000 of the 750,000 values (12 each); a second file of 15,000 passes the limit.
    const { dir, memory } = await generated(50_000);
    const more = Array.from({ length: 15_000 }, (_, i) => item(`more-${i}`, 1 + i)).join('');
    await writeFile(join(dir, 'forwards/more.yaml'), `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${more}`);
    const over = await expectSameLoad(dir, memory, 'over the value limit');
    expect(over.diagnostics.map((d) => d.message).join('\n')).toMatch(new RegExp(`more than ${STATE_LIMITS.yamlNodes} YAML values`));
    await unlink(join(dir, 'forwards/more.yaml'));
    expect((await expectSameLoad(dir, memory, 'back under the limit')).diagnostics).toEqual([]);
    // Before the long list, so that it is the long list that no longer fits.
    await writeFile(join(dir, 'forwards/a-more.yaml'), `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${more}`);
    const before = await expectSameLoad(dir, memory, 'over the value limit, at the long list');
    expect(before.diagnostics.some((d) => d.file === LIST && d.message.includes(`more than ${STATE_LIMITS.yamlNodes} YAML values`))).toBe(true);
    await unlink(join(dir, 'forwards/a-more.yaml'));
    expect((await expectSameLoad(dir, memory, 'back under the limit again')).diagnostics).toEqual([]);
  }, 240_000);
});

describe('a file whose stat stamp is unchanged is not read again', () => {
  /** A clock RACY_MS and more ahead: every file in the test counts as settled (long unchanged). */
  const settledClock = () => Date.now() + 2 * RACY_MS;
  const GUEST = 'guests/guest2.yaml';
  /** Another memory size written with as many digits (the file keeps its size). */
  const otherSize = (old: number) => (old === 2048 ? 1536 : 2048);
  const guestMemory = (r: LoadResult) => r.state?.guests.find((g) => g.name === 'guest2')?.resources.memoryMiB;
  /** A whole second in the past: a modification time utimes can put back exactly. */
  const wholeSecond = new Date(Math.floor(Date.now() / 1000) * 1000 - 10_000);
  /** Rewrites the guest file in place with the same size, until its change time moved (timestamps have ticks). */
  async function rewriteSameSize(dir: string, memoryMiB: number): Promise<void> {
    const file = join(dir, GUEST);
    const before = await stat(file, { bigint: true });
    expect(before.mtimeMs).toBe(BigInt(wholeSecond.getTime()));
    const text = (await readFile(file, 'utf8')).replace(/memoryMiB: \d+/, `memoryMiB: ${memoryMiB}`);
    expect(text.length).toBe(Number(before.size));
    const deadline = Date.now() + 5000;
    do await writeFile(file, text);
    while ((await stat(file, { bigint: true })).ctimeNs === before.ctimeNs && Date.now() < deadline);
    // The modification time put back: only the change time (which utimes cannot set) tells.
    await utimes(file, wholeSecond, wholeSecond);
  }

  /** A generated state whose guest file has a whole-second mtime; `settled`: judged by a clock far ahead. */
  async function stampable(settled: boolean): Promise<{ dir: string; memory: LoadMemory }> {
    const made = await generated(2_000);
    await utimes(join(made.dir, GUEST), wholeSecond, wholeSecond);
    if (settled) made.memory.now = settledClock;
    return made;
  }

  /** Loads twice: the file is stamped by the first load and taken from memory, not read, by the second. */
  async function expectNotReadAgain(dir: string, memory: LoadMemory, file: string): Promise<void> {
    await expectSameLoad(dir, memory, `${file} stamped`);
    const held = memory.texts.get(file);
    expect(held?.stamp).toBeDefined();
    await expectSameLoad(dir, memory, `${file} unchanged`);
    // Read again, it would be a new buffer.
    expect(memory.texts.get(file)?.bytes).toBe(held?.bytes);
  }

  it('an unchanged, settled file is taken from memory without reading it', async () => {
    const { dir, memory } = await stampable(true);
    await expectNotReadAgain(dir, memory, LIST);
  });

  /** Loads (the guest file stamped or not), rewrites the guest file with the same size, and expects the new content read. */
  async function expectRewriteRead(dir: string, memory: LoadMemory, stamped: boolean): Promise<void> {
    const before = await expectSameLoad(dir, memory, 'before the rewrite');
    expect(memory.texts.get(GUEST)?.stamp !== undefined).toBe(stamped);
    const size = otherSize(guestMemory(before) ?? 0);
    await rewriteSameSize(dir, size);
    expect(guestMemory(await expectSameLoad(dir, memory, 'rewritten'))).toBe(size);
  }

  it('a settled file rewritten with the same size and its modification time put back is read again', async () => {
    const { dir, memory } = await stampable(true);
    await expectRewriteRead(dir, memory, true);
  });

  it('a file changed just now is not stamped: a same-size rewrite within the same second is read', async () => {
    // The real clock: the files were all written within RACY_MS.
    const { dir, memory } = await stampable(false);
    await expectRewriteRead(dir, memory, false);
    // Once settled, the file is stamped and taken from memory.
    memory.now = settledClock;
    await expectNotReadAgain(dir, memory, GUEST);
  });

  it('the same file at another state directory is read there', async () => {
    const { dir, memory } = await stampable(true);
    await expectSameLoad(dir, memory, 'stamped');
    const copy = await mkdtemp(join(scratch, 'copy-'));
    await cp(dir, copy, { recursive: true, preserveTimestamps: true });
    await rewriteSameSize(copy, 2048);
    expect(guestMemory(await expectSameLoad(copy, memory, 'the copy'))).toBe(2048);
  });
});

describe('a changed long list is read again item by item', () => {
  const text = `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${Array.from({ length: 3_000 }, (_, i) => item(`f-${i}`, 1 + i)).join('')}`;
  const budget = STATE_LIMITS.yamlNodes;
  const parsed = parseYamlFast(text, { nodes: budget });
  const memo = parsed && listMemo(text, parsed, 'forwards');

  /** The reuse reads `changed` as the whole fast parse does: data, value count, every item's position. */
  const expectReuseReadsAsWhole = (changed: string) => {
    const reused = reuseList(changed, memo!, budget);
    const whole = parseYamlFast(changed, { nodes: budget });
    expect(reused, 'declined').toBeDefined();
    expect(reused!.parsed.data).toEqual(whole!.data);
    expect(reused!.parsed.values).toBe(whole!.values);
    const list = whole!.data.forwards as unknown[];
    const mine = fastPositions('f.yaml', changed, reused!.parsed);
    const theirs = fastPositions('f.yaml', changed, whole!);
    for (const i of [0, 1, 1499, 1500, 1501, list.length - 1]) expect(mine.ref(['forwards', i])).toEqual(theirs.ref(['forwards', i]));
    return reused!;
  };

  it('one changed item: only it is left to schema-check', () => {
    expect(memo).toBeDefined();
    const reused = expectReuseReadsAsWhole(replaceItem(text, 1500, item('changed', 65000)));
    expect(reused.unchecked.forwards).toEqual([{ name: 'changed', protocol: 'tcp', port: 65000, target: { guest: 'guest1', port: 1 } }]);
  });

  it('an item added, one removed, lines shifted, the first and the last item changed', () => {
    expectReuseReadsAsWhole(insertBefore(text, 1500, item('added', 65001)));
    expectReuseReadsAsWhole(replaceItem(text, 1500, ''));
    expectReuseReadsAsWhole(insertBefore(text, 1500, '  # a comment\n\n'));
    expectReuseReadsAsWhole(replaceItem(text, 0, item('first', 65002)));
    expectReuseReadsAsWhole(replaceItem(text, 2999, item('last', 65003)));
  });

  it('declines what changes the file around the items: the head, a line ending the list, too many items', () => {
    expect(reuseList(text.replace('kind: Forwards', 'kind: Forwards # x'), memo!, budget)).toBeUndefined();
    expect(reuseList(insertBefore(text, 1500, 'other: 1\n'), memo!, budget)).toBeUndefined();
    const many = replaceItem(replaceItem(text, 2990, item('late', 65004)), 10, item('early', 65005));
    expect(reuseList(many, memo!, budget)).toBeUndefined();
  });

  it('declines when the budget left is too small for the file, as the whole fast parse does', () => {
    const changed = replaceItem(text, 1500, item('changed', 65000));
    const whole = parseYamlFast(changed, { nodes: budget })!;
    expect(reuseList(changed, memo!, whole.values - 1)).toBeUndefined();
    expect(parseYamlFast(changed, { nodes: whole.values - 1 })).toBeUndefined();
    expect(reuseList(changed, memo!, whole.values)?.parsed.values).toBe(whole.values);
    expect(reuseList(changed, memo!, budget)?.parsed.leastBudget).toBe(whole.leastBudget);
  });

  it('finds the common ends of two texts across its comparison blocks', () => {
    const a = 'x'.repeat(10_000);
    expect(commonEnds(a, a)).toEqual({ prefix: 10_000, suffix: 0 });
    expect(commonEnds(`${a}A${a}`, `${a}BB${a}`)).toEqual({ prefix: 10_000, suffix: 10_000 });
    expect(commonEnds('abc', 'abd')).toEqual({ prefix: 2, suffix: 0 });
  });
});
