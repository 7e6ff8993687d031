// The committed ruleset in memory (kube-proxy's nftables mode does the same, kubernetes #139531):
// an NftBackend around the real one that lists the owned tables once, then answers list() from
// what it read plus what its own transactions committed. Listing a 50,000-element table costs
// ~0.5 s; a cycle with nothing new must not pay it.
//   run()         element-only transactions are read back through `nft --echo` (what nft says it
//                 added) and patched into memory; anything structural re-lists just those tables
//   a failure     forgets everything: the next list() reads the node again
//   invalidate()  a foreign change (nft monitor), a restarted monitor or the full-read interval:
//                 the next list() reads the node again
// The memory is only as good as the events that invalidate it: use it only with a monitor
// running (src/agent/watch.ts). Returned rulesets are shared, never to be mutated.
import { canonicalJson, elementKey, numericKeyOrder, tableId, type Json, type MapElement, type NftTable, type Ruleset } from './model.js';
import { parseElement, sortElements } from './normalize.js';
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
    let echoed: string | undefined;
    try {
      if (elementsOnly && this.inner.runEchoed) echoed = await this.inner.runEchoed(tx);
      else await this.inner.run(tx);
    } catch (e) {
      // Nothing of the transaction applied, but whatever made it fail may be a change we missed.
      this.invalidate();
      throw e;
    }
    if (epoch !== this.epoch || !this.trusting) return;
    if (!elementsOnly) this.baseChains = undefined;
    const { patched, reread } = afterTransaction(this.tables, tx.ops, echoed);
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

/** Elements nft echoed as added, per "family table map" (deletions are not echoed by nft 1.0.6). */
export function echoedAdds(echoed: string): Map<string, MapElement[]> {
  const out = new Map<string, MapElement[]>();
  // A batch of deletions only echoes nothing at all.
  if (echoed.trim() === '') return out;
  const items = (JSON.parse(echoed) as { nftables?: { add?: { element?: Record<string, Json> } }[] }).nftables ?? [];
  for (const i of items) {
    const e = i.add?.element;
    if (!e) continue;
    const elem = e.elem as Json;
    const list = (elem !== null && typeof elem === 'object' && !Array.isArray(elem) && Array.isArray(elem.set) ? elem.set : Array.isArray(elem) ? elem : []) as Json[];
    const id = `${String(e.family)} ${String(e.table)} ${String(e.name)}`;
    out.set(id, [...(out.get(id) ?? []), ...list.map(parseElement)]);
  }
  return out;
}

const pairKey = (e: MapElement) => canonicalJson([e.key, e.value]);

function sameElements(a: MapElement[], b: MapElement[]): boolean {
  if (a.length !== b.length) return false;
  const want = a.map(pairKey).sort();
  const got = b.map(pairKey).sort();
  return want.every((k, i) => k === got[i]);
}

/**
 * Pure: the memory after a committed transaction. Tables changed only in their map elements are
 * patched (when the echo, if any, shows exactly the elements sent); every other touched table,
 * and any table memory does not hold, is to be read again.
 */
export function afterTransaction(tables: ReadonlyMap<string, NftTable | null>, ops: Operation[], echoed?: string): { patched: Map<string, NftTable>; reread: TableRef[] } {
  const byTable = new Map<string, { ref: TableRef; ops: Operation[] }>();
  for (const o of ops) {
    const id = tableId(o.table);
    const g = byTable.get(id) ?? { ref: o.table, ops: [] };
    g.ops.push(o);
    byTable.set(id, g);
  }
  let adds: Map<string, MapElement[]> | undefined;
  try {
    adds = echoed === undefined ? undefined : echoedAdds(echoed);
  } catch {
    // An echo we cannot read confirms nothing: read the touched tables back.
    return { patched: new Map(), reread: [...byTable.values()].map((g) => g.ref) };
  }
  const patched = new Map<string, NftTable>();
  const reread: TableRef[] = [];
  for (const [id, g] of byTable) {
    const held = tables.get(id);
    const table = held && g.ops.every((o) => ELEMENT_OPS.has(o.op)) ? patchElements(held, g.ops) : undefined;
    const confirmed = table && (!adds || echoConfirms(id, g.ops, adds));
    if (table && confirmed) patched.set(id, table);
    else reread.push(g.ref);
  }
  return { patched, reread };
}

function echoConfirms(id: string, ops: Operation[], adds: Map<string, MapElement[]>): boolean {
  const sent = new Map<string, MapElement[]>();
  for (const o of ops) if (o.op === 'add-elements') sent.set(o.map, [...(sent.get(o.map) ?? []), ...o.elements]);
  const echoedMaps = [...adds.keys()].filter((k) => k.startsWith(`${id} `));
  if (echoedMaps.length !== sent.size) return false;
  return [...sent].every(([map, es]) => sameElements(es, adds.get(`${id} ${map}`) ?? []));
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
  if (numericKeyOrder(elements) && changes.every((c) => typeof c.key === 'number')) {
    // Port maps: binary search per change, O(changes x log n) plus one copy.
    const out = elements.slice();
    for (const c of changes) {
      const i = lowerBound(out, c.key as number);
      const hit = out[i]?.key === c.key;
      if (add) out.splice(i, hit ? 1 : 0, c);
      else if (hit) out.splice(i, 1);
    }
    return out;
  }
  const keys = new Set(changes.map(elementKey));
  const kept = elements.filter((e) => !keys.has(elementKey(e)));
  return sortElements(add ? [...kept, ...changes] : kept);
}

/** First index whose (numeric) key is >= key. */
function lowerBound(es: MapElement[], key: number): number {
  let lo = 0;
  let hi = es.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((es[mid]!.key as number) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
