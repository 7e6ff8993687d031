// How memory.json keeps the rulesets it names (applied.desired, applying.desired): a snapshot file
// under rulesets/ plus the changes made since, each what one plan changed. A one-forward change
// at 50,000 forwards then records a few elements, not megabytes, before its transaction and
// again after it. A snapshot is written when no change is known (first apply, drift corrected,
// a read of an older memory.json) or when the changes add up; snapshots no memory.json names
// any more are removed after the memory.json naming their successor is in place.
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../fs/atomic.js';
import { afterTransaction } from '../nft/committed.js';
import { tableId, type NftTable, type Ruleset } from '../nft/model.js';
import type { Operation, TableRef } from '../nft/transaction.js';
import type { NftPlan } from '../plan/nft-plan.js';

type ElementOp = Extract<Operation, { op: 'add-elements' | 'delete-elements' }>;

/** What one plan changes in a ruleset: tables put in whole, tables deleted, map elements. */
export interface RulesetChange {
  tables: NftTable[];
  deleted: TableRef[];
  elements: ElementOp[];
}

/** A ruleset as memory.json names it: a snapshot file and the changes since, in order. */
export interface StoredRuleset {
  snapshot: string;
  changes: RulesetChange[];
}

/** Changes kept after a snapshot before the next ruleset is written whole: elements, rules and tables... */
const MAX_CHANGE_ITEMS = 5000;
/** ...and plans. */
const MAX_CHANGES = 200;

/** Pure: the change a plan makes (element updates as elements; a table whose rules change, whole). */
export function changeOfPlan(plan: NftPlan): RulesetChange {
  const change: RulesetChange = { tables: [], deleted: [], elements: [] };
  for (const c of plan.changes) {
    if (c.action === 'delete') change.deleted.push(c.table);
    else if (c.action !== 'update' || c.chains.length > 0) change.tables.push(c.desired);
    else {
      for (const m of c.maps) {
        if (m.remove.length) change.elements.push({ op: 'delete-elements', table: c.table, map: m.map, elements: m.remove });
        if (m.add.length) change.elements.push({ op: 'add-elements', table: c.table, map: m.map, elements: m.add });
      }
    }
  }
  return change;
}

function changeItems(c: RulesetChange): number {
  const whole = c.tables.reduce((n, t) => n + 1 + t.maps.reduce((k, m) => k + m.elements.length, 0) + t.chains.reduce((k, ch) => k + ch.rules.length, 0), 0);
  return whole + c.deleted.length + c.elements.reduce((n, o) => n + o.elements.length, 0);
}

/** Pure: the ruleset after a change; undefined when the change names a table or map the ruleset lacks. */
export function applyChange(base: Ruleset, change: RulesetChange): Ruleset | undefined {
  const tables = new Map<string, NftTable | null>(base.tables.map((t) => [tableId(t), t]));
  const { patched, reread } = afterTransaction(tables, change.elements);
  if (reread.length > 0) return undefined;
  for (const [id, t] of patched) tables.set(id, t);
  for (const t of change.tables) tables.set(tableId(t), t);
  for (const r of change.deleted) tables.delete(tableId(r));
  return { tables: [...tables.values()].filter((t): t is NftTable => t !== null) };
}

/** Pure: the stored ruleset's content, from its snapshot's; undefined when a change does not fit. */
export function replayChanges(snapshot: Ruleset, changes: RulesetChange[]): Ruleset | undefined {
  let r: Ruleset | undefined = snapshot;
  for (const c of changes) r = r && applyChange(r, c);
  return r;
}

/** The stored form of the rulesets of one state directory, as this process wrote or read them. */
class RulesetStore {
  /** By object identity: rulesets are never changed once made. */
  private readonly forms = new WeakMap<Ruleset, StoredRuleset>();

  constructor(readonly dir: string) {}

  /**
   * `next` is `base` changed by `plan` (a plan made against tables equal to `base`): stored as
   * `base`'s form plus the change, while the changes stay small.
   */
  derive(base: Ruleset, next: Ruleset, plan: NftPlan): void {
    if (base === next || this.forms.has(next)) return;
    const held = this.forms.get(base);
    if (!held || held.changes.length >= MAX_CHANGES) return;
    const change = changeOfPlan(plan);
    if ([...held.changes, change].reduce((n, c) => n + changeItems(c), 0) > MAX_CHANGE_ITEMS) return;
    this.forms.set(next, { snapshot: held.snapshot, changes: [...held.changes, change] });
  }

  /** The form to write for `r`: a known one whose snapshot is still on disk, or a new snapshot. */
  async formOf(r: Ruleset): Promise<StoredRuleset> {
    const held = this.forms.get(r);
    if (held && (await stat(this.file(held.snapshot)).catch(() => undefined))?.isFile()) return held;
    const form = { snapshot: randomBytes(8).toString('hex'), changes: [] };
    await writeFileAtomic(this.file(form.snapshot), JSON.stringify(r));
    this.forms.set(r, form);
    return form;
  }

  /** The ruleset a form names (snapshots read once per call site through `snapshots`). */
  async load(form: StoredRuleset, snapshots: Map<string, Promise<Ruleset>>): Promise<Ruleset> {
    let snapshot = snapshots.get(form.snapshot);
    if (!snapshot) {
      snapshot = readFile(this.file(form.snapshot), 'utf8').then((text) => JSON.parse(text) as Ruleset);
      snapshots.set(form.snapshot, snapshot);
    }
    const r = replayChanges(await snapshot, form.changes);
    if (!r) throw new Error(`the changes recorded after ${this.file(form.snapshot)} do not fit it`);
    this.forms.set(r, form);
    return r;
  }

  /** The snapshots the memory.json this process wrote last names. */
  private lastNamed?: string;

  /** memory.json now names these snapshots: when that changed, remove the others (a failure leaves files behind, nothing else). */
  async named(keep: string[]): Promise<void> {
    const key = [...new Set(keep)].sort().join(',');
    if (key === this.lastNamed) return;
    this.lastNamed = key;
    const names = await readdir(this.dir).catch(() => [] as string[]);
    await Promise.all(names.filter((n) => !keep.includes(n.replace(/\.json$/, ''))).map((n) => rm(path.join(this.dir, n), { force: true }).catch(() => undefined)));
  }

  private file(snapshot: string): string {
    // The id comes from memory.json: only the form this module writes is accepted.
    if (!/^[0-9a-f]{16}$/.test(snapshot)) throw new Error(`invalid ruleset snapshot id ${JSON.stringify(snapshot)}`);
    return path.join(this.dir, `${snapshot}.json`);
  }
}

const stores = new Map<string, RulesetStore>();

/** The store of the snapshots under `dir` (one per folder and process). */
export function rulesetStore(dir: string): RulesetStore {
  let s = stores.get(dir);
  if (!s) {
    s = new RulesetStore(dir);
    stores.set(dir, s);
  }
  return s;
}

export type { RulesetStore };
