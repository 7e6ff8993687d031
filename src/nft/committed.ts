// The committed ruleset in memory (kube-proxy's nftables mode does the same, kubernetes #139531):
// an NftBackend around the real one that lists the owned tables once, then answers list() from
// what it read plus what its own transactions committed. Listing a 50,000-element table costs
// ~0.5 s; a cycle with nothing new must not pay it.
//   run()         a transaction that only adds and deletes map elements is patched into memory:
//                 nft applies a batch whole or not at all, so exit code 0 means exactly these
//                 changes are in the kernel. (A cheaper read-back does not exist in nft 1.0.6:
//                 `--echo` and `get element` both load the whole set first, measured 1.1 s and
//                 1.5 s at 50,000 elements against 0.01 s for the batch itself.) Anything
//                 structural re-lists just the tables it touched.
//   a failure     forgets everything: the next list() reads the node again
//   invalidate()  a foreign change (nft monitor), a restarted monitor or the full-read interval:
//                 the next list() reads the node again
// The memory is only as good as the events that invalidate it: use it only with a monitor
// running (src/agent/watch.ts). Returned rulesets are shared, never to be mutated.
import { elementKey, lowerBound, numericKeyOrder, tableId, type MapElement, type NftTable, type Ruleset } from './model.js';
import { knownPortOrdered, noteDerived, sortedKeys } from './lineage.js';
import { sortElements } from './normalize.js';
import type { BaseChainInfo, NftBackend } from './backend.js';
import type { Operation, TableRef, Transaction } from './transaction.js';

const ELEMENT_OPS = new Set<Operation['op']>(['add-elements', 'delete-elements']);

export class CommittedRuleset implements NftBackend {
  /** Per table id: the table as committed, or null when known absent. */
  private tables = new Map<string, NftTable | null>();
  /** Every table list() was asked for: the node's own tables, kept across invalidations. */
  private readonly watched = new Set<string>();
  private baseChains?: BaseChainInfo[];
  /** The last list() answer, handed out again while nothing changed (planners memoize on it). */
  private answer?: { key: string; ruleset: Ruleset };
  /** Bumped by every invalidation: a read or write that overlapped one must not fill the memory. */
  private epoch = 0;
  /** Reads of the node's tables (full reads) and of single changed tables, for the log and tests. */
  readonly reads = { full: 0, tables: 0, baseChains: 0 };

  constructor(readonly inner: NftBackend) {}

  /** The tables planned so far ("family name"): the ones whose foreign changes matter. */
  tracked(): ReadonlySet<string> {
    return this.watched;
  }

  /** Whether the next list() of these tables is answered from memory. */
  holds(refs: TableRef[]): boolean {
    return refs.every((r) => this.tables.has(tableId(r)));
  }

  /** False while nothing would tell us of foreign changes (the monitor is down): every list() reads. */
  private trusting = true;

  /**
   * Whether the next list() of the node's tables reads them from the node (start, an event, the
   * full-read interval, the monitor down): what else the agent trusts in memory is read then too.
   */
  fullReadDue(): boolean {
    return !this.trusting || this.watched.size === 0 || [...this.watched].some((id) => !this.tables.has(id));
  }

  /** Stop (false) or resume (true) answering from memory; either way, what is held is forgotten. */
  trust(on: boolean): void {
    this.trusting = on;
    this.invalidate();
  }

  /** Forget the committed tables (and base chains): the next list() reads the node. */
  invalidate(): void {
    this.epoch++;
    this.tables.clear();
    this.baseChains = undefined;
    this.answer = undefined;
  }

  /** A foreign base chain came or went: read the chains again, the tables stay. */
  invalidateBaseChains(): void {
    this.baseChains = undefined;
  }

  async list(refs: TableRef[]): Promise<Ruleset> {
    const key = refs.map(tableId).join(',');
    for (const r of refs) this.watched.add(tableId(r));
    if (this.trusting && this.holds(refs)) {
      if (this.answer?.key !== key) this.answer = { key, ruleset: { tables: refs.map((r) => this.tables.get(tableId(r))).filter((t): t is NftTable => !!t) } };
      return this.answer.ruleset;
    }
    const epoch = this.epoch;
    const live = await this.inner.list(refs);
    this.reads.full++;
    if (epoch === this.epoch && this.trusting) this.store(refs, live);
    return live;
  }

  async listBaseChains(): Promise<BaseChainInfo[]> {
    if (this.trusting && this.baseChains) return this.baseChains;
    const epoch = this.epoch;
    const chains = await this.inner.listBaseChains();
    this.reads.baseChains++;
    if (epoch === this.epoch && this.trusting) this.baseChains = chains;
    return chains;
  }

  async run(tx: Transaction): Promise<void> {
    const epoch = this.epoch;
    const elementsOnly = tx.ops.every((o) => ELEMENT_OPS.has(o.op));
    try {
      await this.inner.run(tx);
    } catch (e) {
      // Nothing of the transaction applied, but whatever made it fail may be a change we missed.
      this.invalidate();
      throw e;
    }
    if (epoch !== this.epoch || !this.trusting) return;
    if (!elementsOnly) this.baseChains = undefined;
    const { patched, reread } = afterTransaction(this.tables, tx.ops);
    for (const [id, t] of patched) this.tables.set(id, t);
    this.answer = undefined;
    if (reread.length === 0) return;
    const live = await this.inner.list(reread);
    this.reads.tables++;
    if (epoch === this.epoch && this.trusting) this.store(reread, live);
  }

  private store(refs: TableRef[], live: Ruleset): void {
    const byId = new Map(live.tables.map((t) => [tableId(t), t]));
    for (const r of refs) this.tables.set(tableId(r), byId.get(tableId(r)) ?? null);
    this.answer = undefined;
  }
}

/**
 * Pure: the memory after a committed transaction. Tables changed only in their map elements are
 * patched; every other touched table, and any table memory does not hold, is to be read again.
 */
export function afterTransaction(tables: ReadonlyMap<string, NftTable | null>, ops: Operation[]): { patched: Map<string, NftTable>; reread: TableRef[] } {
  const byTable = new Map<string, { ref: TableRef; ops: Operation[] }>();
  for (const o of ops) {
    const id = tableId(o.table);
    const g = byTable.get(id) ?? { ref: o.table, ops: [] };
    g.ops.push(o);
    byTable.set(id, g);
  }
  const patched = new Map<string, NftTable>();
  const reread: TableRef[] = [];
  for (const [id, g] of byTable) {
    const held = tables.get(id);
    const table = held && g.ops.every((o) => ELEMENT_OPS.has(o.op)) ? patchElements(held, g.ops) : undefined;
    if (table) patched.set(id, table);
    else reread.push(g.ref);
  }
  return { patched, reread };
}

/** The table with the ops' element deletions and additions applied in order; undefined if a map is missing. */
function patchElements(table: NftTable, ops: Operation[]): NftTable | undefined {
  const maps = new Map(table.maps.map((m) => [m.name, m]));
  for (const o of ops) {
    if (o.op !== 'add-elements' && o.op !== 'delete-elements') return undefined;
    const m = maps.get(o.map);
    if (!m) return undefined;
    maps.set(o.map, { ...m, elements: patchedElements(m.elements, o.elements, o.op === 'add-elements') });
  }
  return { ...table, maps: table.maps.map((m) => maps.get(m.name) ?? m) };
}

/** The elements with `changes` added (replacing equal keys) or deleted, kept in the listing's order. */
function patchedElements(elements: MapElement[], changes: MapElement[], add: boolean): MapElement[] {
  if (changes.every((c) => typeof c.key === 'number') && (knownPortOrdered(elements) || numericKeyOrder(elements))) {
    // Port maps: binary search per change, O(changes x log n) plus one copy.
    const out = elements.slice();
    for (const c of changes) {
      const i = lowerBound(out, c.key as number);
      const hit = out[i]?.key === c.key;
      if (add) out.splice(i, hit ? 1 : 0, c);
      else if (hit) out.splice(i, 1);
    }
    noteDerived(out, elements, sortedKeys(changes.map((c) => c.key as number)));
    return out;
  }
  const keys = new Set(changes.map(elementKey));
  const kept = elements.filter((e) => !keys.has(elementKey(e)));
  return sortElements(add ? [...kept, ...changes] : kept);
}
