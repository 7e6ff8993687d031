// Planning: a pure function of (desired, live) that says what must change in the owned tables.
//
// Three depths of change, cheapest first:
//   - map elements only      -> add/delete those elements (forwards come and go incrementally);
//   - rules of a chain       -> flush that chain and add its rules again (order is preserved);
//   - anything structural    -> replace the whole table (add; delete; add) in the same batch.
// Whatever the depth, the result runs as one nft transaction.
import { canonicalJson, elementAt, elementKey, jsonEqual, numericKeyOrder, tableId, type MapElement, type NftChain, type NftMap, type NftRule, type NftTable, type Ruleset } from '../nft/model.js';
import { Transaction, type TableRef } from '../nft/transaction.js';
import { keysToCompare, noteEqual } from '../nft/lineage.js';

export interface ChainRulesChange {
  chain: string;
  /** The chain's rules after the change (what is added back after the flush). */
  rules: NftRule[];
  removed: NftRule[];
  added: NftRule[];
}

export interface MapElementsChange {
  map: string;
  add: MapElement[];
  /** Elements removed, or whose value changed (deleted, then added with the new value). */
  remove: MapElement[];
}

export type TableChange =
  | { action: 'create'; table: TableRef; desired: NftTable }
  | { action: 'replace'; table: TableRef; desired: NftTable; live: NftTable; reasons: string[] }
  | { action: 'update'; table: TableRef; desired: NftTable; live: NftTable; chains: ChainRulesChange[]; maps: MapElementsChange[] }
  | { action: 'delete'; table: TableRef; live: NftTable };

export interface NftPlan {
  /** Only tables that change; empty means the node has converged. */
  changes: TableChange[];
}

const ruleKey = (r: NftRule): string => canonicalJson({ expr: r.expr, comment: r.comment ?? null });

function chainSpecKey(c: NftChain): string {
  // The device is left out: nft 1.0.6 does not list it, and the chain name carries it.
  if (!c.base) return 'regular';
  const { type, hook, priority, policy } = c.base;
  return `${type} hook ${hook} priority ${priority} policy ${policy}`;
}

/** Why a live table cannot be brought to the desired one by element or rule changes alone. */
function structuralDifferences(desired: NftTable, live: NftTable): string[] {
  const reasons: string[] = [];
  for (const o of live.otherObjects ?? []) reasons.push(`unexpected ${o}`);
  const names = (xs: { name: string }[]) => new Set(xs.map((x) => x.name));
  const liveMaps = new Map(live.maps.map((m) => [m.name, m]));
  for (const m of desired.maps) {
    const l = liveMaps.get(m.name);
    if (!l) reasons.push(`map ${m.name} missing`);
    else if (l.keyType !== m.keyType || l.dataType !== m.dataType) reasons.push(`map ${m.name} has type ${l.keyType} : ${l.dataType}`);
  }
  for (const n of names(live.maps)) if (!names(desired.maps).has(n)) reasons.push(`unexpected map ${n}`);
  const liveChains = new Map(live.chains.map((c) => [c.name, c]));
  for (const c of desired.chains) {
    const l = liveChains.get(c.name);
    if (!l) reasons.push(`chain ${c.name} missing`);
    else if (chainSpecKey(l) !== chainSpecKey(c)) reasons.push(`chain ${c.name} is "${chainSpecKey(l)}"`);
  }
  for (const n of names(live.chains)) if (!names(desired.chains).has(n)) reasons.push(`unexpected chain ${n}`);
  return reasons;
}

function diffRules(desired: NftChain, live: NftChain): ChainRulesChange | undefined {
  const want = desired.rules.map(ruleKey);
  const have = live.rules.map(ruleKey);
  if (want.length === have.length && want.every((k, i) => k === have[i])) return undefined;
  const haveSet = new Set(have);
  const wantSet = new Set(want);
  return {
    chain: desired.name,
    rules: desired.rules,
    removed: live.rules.filter((_, i) => !wantSet.has(have[i] as string)),
    added: desired.rules.filter((_, i) => !haveSet.has(want[i] as string)),
  };
}

/** diffElements of two port-ordered maps in one merge walk: no hashing, no key strings (50,000 elements in a few ms). */
function diffOrderedElements(mapName: string, desired: MapElement[], live: MapElement[]): MapElementsChange | undefined {
  const add: MapElement[] = [];
  const changed: MapElement[] = [];
  const gone: MapElement[] = [];
  let j = 0;
  for (const e of desired) {
    const key = e.key as number;
    while (j < live.length && (live[j]!.key as number) < key) gone.push(live[j++]!);
    const l = live[j];
    if (l && l.key === key) {
      j++;
      if (!jsonEqual(l.value, e.value)) {
        changed.push(l);
        add.push(e);
      }
    } else add.push(e);
  }
  while (j < live.length) gone.push(live[j++]!);
  // The same order as the general path: value changes (desired order), then elements gone (live order).
  const remove = [...changed, ...gone];
  return add.length || remove.length ? { map: mapName, add, remove } : undefined;
}

/**
 * diffOrderedElements where the two maps are known equal but at `keys` (src/nft/lineage.ts): the
 * same lists, in the same order, from a binary search per key.
 */
function diffAtKeys(mapName: string, desired: MapElement[], live: MapElement[], keys: number[]): MapElementsChange | undefined {
  const add: MapElement[] = [];
  const changed: MapElement[] = [];
  const gone: MapElement[] = [];
  for (const key of keys) {
    const e = elementAt(desired, key);
    const l = elementAt(live, key);
    if (e && l && jsonEqual(l.value, e.value)) continue;
    if (e) add.push(e);
    if (l) (e ? changed : gone).push(l);
  }
  const remove = [...changed, ...gone];
  return add.length || remove.length ? { map: mapName, add, remove } : undefined;
}

/** Port maps, compared in full or at the keys lineage names; a map found equal is noted so. */
function diffPortElements(mapName: string, desired: MapElement[], live: MapElement[], keys: number[] | undefined): MapElementsChange | undefined {
  const change = keys ? diffAtKeys(mapName, desired, live, keys) : diffOrderedElements(mapName, desired, live);
  if (!change) noteEqual(desired, live);
  return change;
}

export function diffElements(mapName: string, desired: MapElement[], live: MapElement[]): MapElementsChange | undefined {
  const keys = keysToCompare(desired, live);
  if (keys || (numericKeyOrder(desired) && numericKeyOrder(live))) return diffPortElements(mapName, desired, live, keys);
  const liveByKey = new Map(live.map((e) => [elementKey(e), e]));
  const desiredKeys = new Set(desired.map(elementKey));
  const add: MapElement[] = [];
  const remove: MapElement[] = [];
  for (const e of desired) {
    const l = liveByKey.get(elementKey(e));
    if (!l) add.push(e);
    else if (!jsonEqual(l.value, e.value)) {
      remove.push(l);
      add.push(e);
    }
  }
  for (const l of live) if (!desiredKeys.has(elementKey(l))) remove.push(l);
  return add.length || remove.length ? { map: mapName, add, remove } : undefined;
}

function planTable(desired: NftTable | undefined, live: NftTable | undefined, ref: TableRef): TableChange | undefined {
  if (!desired && !live) return undefined;
  if (!desired) return { action: 'delete', table: ref, live: live as NftTable };
  if (!live) return { action: 'create', table: ref, desired };
  const reasons = structuralDifferences(desired, live);
  if (reasons.length > 0) return { action: 'replace', table: ref, desired, live, reasons };

  const liveChains = new Map(live.chains.map((c) => [c.name, c]));
  const chains = desired.chains.map((c) => diffRules(c, liveChains.get(c.name) as NftChain)).filter((c): c is ChainRulesChange => !!c);
  const liveMaps = new Map(live.maps.map((m) => [m.name, m]));
  const maps = desired.maps
    .map((m: NftMap) => diffElements(m.name, m.elements, (liveMaps.get(m.name) as NftMap).elements))
    .filter((m): m is MapElementsChange => !!m);
  if (chains.length === 0 && maps.length === 0) return undefined;
  return { action: 'update', table: ref, desired, live, chains, maps };
}

/**
 * Plan the owned tables of one node. `owned` lists every table cgw-sync owns: one that is live
 * but no longer desired is deleted; tables outside `owned` are never looked at.
 */
export function planNft(desired: Ruleset, live: Ruleset, owned: TableRef[]): NftPlan {
  const byId = (rs: Ruleset) => new Map(rs.tables.map((t) => [tableId(t), t]));
  const want = byId(desired);
  const have = byId(live);
  for (const t of desired.tables) {
    if (!owned.some((o) => tableId(o) === tableId(t))) throw new Error(`refusing to plan table ${tableId(t)}: not an owned table`);
  }
  const changes = owned
    .map((ref) => planTable(want.get(tableId(ref)), have.get(tableId(ref)), ref))
    .filter((c): c is TableChange => !!c);
  return { changes };
}

/** The one transaction that carries out a plan. */
export function planToTransaction(plan: NftPlan): Transaction {
  const tx = new Transaction();
  for (const c of plan.changes) {
    switch (c.action) {
      case 'create':
      case 'replace':
        tx.replaceTable(c.desired);
        break;
      case 'delete':
        // `add` first so the batch never fails because the table vanished after planning.
        tx.add({ op: 'add-table', table: c.table }).add({ op: 'delete-table', table: c.table });
        break;
      case 'update':
        for (const m of c.maps) {
          if (m.remove.length) tx.add({ op: 'delete-elements', table: c.table, map: m.map, elements: m.remove });
          if (m.add.length) tx.add({ op: 'add-elements', table: c.table, map: m.map, elements: m.add });
        }
        for (const ch of c.chains) {
          tx.add({ op: 'flush-chain', table: c.table, chain: ch.chain });
          for (const rule of ch.rules) tx.add({ op: 'add-rule', table: c.table, chain: ch.chain, rule });
        }
        break;
    }
  }
  return tx;
}
