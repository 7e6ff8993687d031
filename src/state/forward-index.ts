// What the cross-document checks over forwards need to know of one list of forwards (one file's),
// made in one pass with number keys and, for the loader's lists, kept per list: an unchanged file
// of 50,000 forwards is not indexed again on the next load. The checks use the indexes only to
// learn that the forwards are clean (no name twice, no port twice on a node, every reference
// known); when they may not be, the checks run their plain loops, which word every diagnostic, so
// the diagnostics (texts, positions, order) do not depend on the indexes.
import type { ForwardSpec } from './types.js';

export interface ForwardIndex {
  names: Set<string>;
  /** Some name occurs twice in the list. */
  repeatsName: boolean;
  /** Guests the forwards target, and nodes they name in `nodes`. */
  guests: Set<string>;
  nodes: Set<string>;
  /** Port keys (portKey) of the forwards entering every node (no `nodes`). */
  wild: Set<number>;
  repeatsWild: boolean;
  /** Port key -> the nodes named by the forwards on it that name their nodes. */
  named: Map<number, Set<string>>;
  /** Some node is named twice on one port key. */
  repeatsNamed: boolean;
  /** The forwards with a health check, in list order. */
  withHealth: ForwardSpec[];
}

/** One number per protocol and port (ports are below 2^16, schema). */
export function portKey(forward: ForwardSpec): number {
  return (forward.protocol === 'udp' ? 0x10000 : 0) + forward.port;
}

/** Indexes of lists the loader made: such a list never changes once it is made. */
const kept = new WeakMap<readonly ForwardSpec[], ForwardIndex>();

/** The index of `list`; `keep`: the list never changes, so its index may be kept for the next call. */
export function forwardIndex(list: readonly ForwardSpec[], keep: boolean): ForwardIndex {
  const known = keep ? kept.get(list) : undefined;
  if (known) return known;
  const index = indexForwards(list);
  if (keep) kept.set(list, index);
  return index;
}

function indexForwards(list: readonly ForwardSpec[]): ForwardIndex {
  const index: ForwardIndex = { names: new Set(), repeatsName: false, guests: new Set(), nodes: new Set(), wild: new Set(), repeatsWild: false, named: new Map(), repeatsNamed: false, withHealth: [] };
  const { names, guests, wild } = index;
  for (const f of list) {
    // A set that did not grow already held the value: one hash lookup, not two.
    const size = names.size;
    names.add(f.name);
    if (names.size === size) index.repeatsName = true;
    guests.add(f.target.guest);
    if (f.health) index.withHealth.push(f);
    const key = portKey(f);
    if (f.nodes === undefined) {
      const wilds = wild.size;
      wild.add(key);
      if (wild.size === wilds) index.repeatsWild = true;
      continue;
    }
    const onKey = setAt(index.named, key);
    for (const node of f.nodes) {
      index.nodes.add(node);
      const count = onKey.size;
      onKey.add(node);
      if (onKey.size === count) index.repeatsNamed = true;
    }
  }
  return index;
}

/** The set at `key`, made empty when there is none. */
function setAt(map: Map<number, Set<string>>, key: number): Set<string> {
  const known = map.get(key);
  if (known) return known;
  const made = new Set<string>();
  map.set(key, made);
  return made;
}

/** The largest of the indexes: the others are compared with it item by item, it is only looked up. */
function largest(indexes: readonly ForwardIndex[]): ForwardIndex | undefined {
  let big: ForwardIndex | undefined;
  for (const i of indexes) if (!big || i.names.size > big.names.size) big = i;
  return big;
}

/** False only when no two forwards of all lists share a name. */
export function namesMayRepeat(indexes: readonly ForwardIndex[]): boolean {
  if (indexes.some((i) => i.repeatsName)) return true;
  const big = largest(indexes);
  const seen = new Set<string>();
  for (const i of indexes) {
    if (i === big) continue;
    for (const name of i.names) {
      if (big?.names.has(name) || seen.has(name)) return true;
      seen.add(name);
    }
  }
  return false;
}

/** Every guest the forwards target and every node they name is known. */
export function referencesKnown(indexes: readonly ForwardIndex[], guests: ReadonlySet<string>, nodes: ReadonlySet<string>): boolean {
  for (const i of indexes) {
    for (const g of i.guests) if (!guests.has(g)) return false;
    for (const n of i.nodes) if (!nodes.has(n)) return false;
  }
  return true;
}

/**
 * False only when no protocol/port is taken twice on one node. A forward without `nodes` enters
 * every node of `allNodes` (none when there are none); one with `nodes` enters the nodes it names.
 */
export function portsMayClash(indexes: readonly ForwardIndex[], allNodes: ReadonlySet<string>): boolean {
  const entersAny = allNodes.size > 0;
  const namesKnownNode = (nodes: ReadonlySet<string> | undefined) => {
    if (nodes) for (const n of nodes) if (allNodes.has(n)) return true;
    return false;
  };
  for (const i of indexes) {
    if (i.repeatsNamed || (entersAny && i.repeatsWild)) return true;
    for (const [key, nodes] of i.named) if (i.wild.has(key) && namesKnownNode(nodes)) return true;
  }
  // Across lists: each list but the largest against the largest and the lists met before it.
  const big = largest(indexes);
  const wild = new Set<number>();
  const named = new Map<number, Set<string>>();
  for (const i of indexes) {
    if (i === big || !big) continue;
    for (const key of i.wild) {
      if (entersAny && (big.wild.has(key) || wild.has(key))) return true;
      if (namesKnownNode(big.named.get(key)) || namesKnownNode(named.get(key))) return true;
    }
    for (const [key, nodes] of i.named) {
      const wildHere = big.wild.has(key) || wild.has(key);
      for (const n of nodes) {
        if (big.named.get(key)?.has(n) || named.get(key)?.has(n)) return true;
        if (wildHere && allNodes.has(n)) return true;
      }
    }
    for (const key of i.wild) wild.add(key);
    for (const [key, nodes] of i.named) {
      const onKey = setAt(named, key);
      for (const n of nodes) onKey.add(n);
    }
  }
  return false;
}
