// What is known about port maps' element arrays without comparing them again:
//   - equal:   a diff found no change between two arrays (the committed map and the desired one);
//   - derived: an array is an older one with only the elements at a few keys changed (the next
//              revision's render, a committed transaction patched into memory).
// The planner then diffs a desired and a live map at those few keys only: a one-forward change at
// 50,000 forwards is planned from a handful of binary searches, with the answer the full merge
// walk would give. Every array noted here has strictly increasing numeric keys and, like every
// element array, is never mutated. Weak, and a few generations deep: an entry goes with its
// array, and a derivation takes over its base's, so a run of revisions keeps no old maps alive.
import type { MapElement } from './model.js';

type Elements = readonly MapElement[];

interface Ancestor {
  elements: Elements;
  /** Sorted, unique: the keys at which this ancestor and the derived array may differ. */
  keys: number[];
}

/** Classes of arrays known equal (union-find over small tokens, so no array keeps another alive). */
interface EqualClass {
  parent?: EqualClass;
}
const classOf = new WeakMap<Elements, EqualClass>();
const ancestors = new WeakMap<Elements, Ancestor[]>();
/** Arrays known to have strictly increasing numeric keys (every array noted above). */
const ordered = new WeakSet<Elements>();

const GENERATIONS = 3;
/** Beyond this many changed keys a derivation is not worth keeping: the full walk is as cheap. */
const MAX_KEYS = 4096;

function root(c: EqualClass): EqualClass {
  let r = c;
  while (r.parent) r = r.parent;
  // Shortened on the way, so a long run of revisions in one class stays one step from its root.
  let x = c;
  while (x.parent && x.parent !== r) {
    const next: EqualClass = x.parent;
    x.parent = r;
    x = next;
  }
  return r;
}

function classFor(e: Elements): EqualClass {
  const known = classOf.get(e);
  if (known) return known;
  const c: EqualClass = {};
  classOf.set(e, c);
  return c;
}

/** a and b (both port-ordered) hold equal elements. */
export function noteEqual(a: Elements, b: Elements): void {
  if (a === b) return;
  ordered.add(a).add(b);
  const [ra, rb] = [root(classFor(a)), root(classFor(b))];
  if (ra !== rb) rb.parent = ra;
}

function knownEqual(a: Elements, b: Elements): boolean {
  if (a === b) return true;
  const [ca, cb] = [classOf.get(a), classOf.get(b)];
  return !!ca && !!cb && root(ca) === root(cb);
}

/**
 * `derived` (port-ordered) is `base` (port-ordered) with only the elements at `keys` (sorted,
 * unique) added, removed or changed.
 */
export function noteDerived(derived: Elements, base: Elements, keys: number[]): void {
  const older = ancestors.get(base) ?? [];
  // The base's own lineage moves here: kept once, not as a chain through every revision.
  ancestors.delete(base);
  const line = [{ elements: base, keys }, ...older.map((a) => ({ elements: a.elements, keys: unionKeys(a.keys, keys) }))].filter((a) => a.keys.length <= MAX_KEYS).slice(0, GENERATIONS);
  ordered.add(base).add(derived);
  if (line.length > 0) ancestors.set(derived, line);
}

/** Whether the elements are known to be port-ordered (noted here), without a pass over them. */
export function knownPortOrdered(elements: Elements): boolean {
  return ordered.has(elements);
}

/**
 * The keys at which `desired` and `live` may differ, when what is noted says so (both then
 * port-ordered, and equal at every other key); undefined: compare them in full.
 */
export function keysToCompare(desired: Elements, live: Elements): number[] | undefined {
  if (!ordered.has(desired) || !ordered.has(live)) return undefined;
  const mine = (e: Elements): Ancestor[] => [{ elements: e, keys: [] }, ...(ancestors.get(e) ?? [])];
  for (const d of mine(desired)) {
    for (const l of mine(live)) {
      if (knownEqual(d.elements, l.elements)) return unionKeys(d.keys, l.keys);
    }
  }
  return undefined;
}

/** Two sorted unique key lists merged, sorted and unique. */
export function unionKeys(a: number[], b: number[]): number[] {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = i < a.length ? a[i]! : Infinity;
    const y = j < b.length ? b[j]! : Infinity;
    out.push(Math.min(x, y));
    if (x <= y) i++;
    if (y <= x) j++;
  }
  return out;
}

/** Numbers sorted ascending without repeats. */
export function sortedKeys(keys: number[]): number[] {
  return [...new Set(keys)].sort((a, b) => a - b);
}
