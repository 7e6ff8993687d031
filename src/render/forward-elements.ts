// The forward map's elements of one protocol, in port order. A new revision usually changes a few
// forwards of 50,000: given the elements rendered for the previous revision, only the forwards
// that differ in what an element is made of (the same object, or equal protocol, port and target)
// are rendered, and the previous elements are patched. The result equals the plain render (test/plan-fast.test.ts), and is noted
// as derived from the previous elements (src/nft/lineage.ts), so the planner diffs a few keys.
import type { ForwardSpec, Protocol } from '../state/types.js';
import { lowerBound, numericKeyOrder, type MapElement } from '../nft/model.js';
import { sortElements } from '../nft/normalize.js';
import { noteDerived, sortedKeys, unionKeys } from '../nft/lineage.js';

/** What a rendered elements array was made of: the base of the next revision's patch. */
interface Rendered {
  forwards: readonly ForwardSpec[];
  protocol: Protocol;
  guestIP: ReadonlyMap<string, string>;
}

const renderedFrom = new WeakMap<readonly MapElement[], Rendered>();

/** Beyond this share of the forwards changed, rendering them all is as cheap as patching. */
const MAX_CHANGED_SHARE = 0.125;

function forwardElement(f: ForwardSpec, ip: string): MapElement {
  return { key: f.port, value: { concat: [ip, f.target.port] } };
}

/** Every forward of the protocol whose guest has an address, in one pass, then port-ordered; whether no port repeats. */
function plainElements(forwards: readonly ForwardSpec[], protocol: Protocol, guestIP: ReadonlyMap<string, string>): { elements: MapElement[]; unique: boolean } {
  const elements: MapElement[] = [];
  let ordered = true;
  for (const f of forwards) {
    if (f.protocol !== protocol) continue;
    const ip = guestIP.get(f.target.guest);
    if (ip === undefined) continue;
    if (ordered && elements.length > 0 && (elements[elements.length - 1]!.key as number) >= f.port) ordered = false;
    elements.push(forwardElement(f, ip));
  }
  if (ordered) return { elements, unique: true };
  const sorted = sortElements(elements);
  return { elements: sorted, unique: numericKeyOrder(sorted) };
}

/** Two forwards that make the same element (given the same guest addresses). */
function sameElement(a: ForwardSpec, b: ForwardSpec): boolean {
  return a === b || (a.port === b.port && a.protocol === b.protocol && a.target.guest === b.target.guest && a.target.port === b.target.port);
}

function sameEntries(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a === b) return true;
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/**
 * How far ahead the walk looks for an item again after a difference: a run of more inserted or
 * removed forwards in one place counts everything after it as changed (then the plain render).
 */
const LOOKAHEAD = 256;

/**
 * The items that differ between two lists: each item of `before` is either found again in `after`
 * (`same`, in a walk that looks a little ahead at each difference) or gone, each of `after` found
 * or new. Undefined beyond `limit` differences.
 */
export function changedItems<T>(before: readonly T[], after: readonly T[], same: (a: T, b: T) => boolean, limit: number): { gone: T[]; came: T[] } | undefined {
  const gone: T[] = [];
  const came: T[] = [];
  let i = 0;
  let j = 0;
  while (i < before.length && j < after.length) {
    if (same(before[i]!, after[j]!)) {
      i++;
      j++;
      continue;
    }
    const found = (k: number) => (j + k < after.length && same(before[i]!, after[j + k]!) ? 'came' : i + k < before.length && same(before[i + k]!, after[j]!) ? 'gone' : undefined);
    let k = 1;
    let hit = found(k);
    while (k < LOOKAHEAD && !hit) hit = found(++k);
    if (!hit) {
      gone.push(before[i++]!);
      came.push(after[j++]!);
    } else if (hit === 'came') {
      while (k-- > 0) came.push(after[j++]!);
    } else {
      while (k-- > 0) gone.push(before[i++]!);
    }
    if (gone.length + came.length > limit) return undefined;
  }
  while (i < before.length) gone.push(before[i++]!);
  while (j < after.length) came.push(after[j++]!);
  return gone.length + came.length > limit ? undefined : { gone, came };
}

/**
 * The previous port-ordered elements without the keys in `removed` and with `added` (port-ordered)
 * put in; undefined when a key would repeat (the plain render decides the order then) or a removed
 * key is missing. A copy and a binary search per change (a few changes in 50,000 elements).
 */
function patched(previous: readonly MapElement[], removed: number[], added: MapElement[]): MapElement[] | undefined {
  const out = previous.slice();
  for (const key of removed) {
    const i = lowerBound(out, key);
    if (out[i]?.key !== key) return undefined;
    out.splice(i, 1);
  }
  for (const e of added) {
    const i = lowerBound(out, e.key as number);
    if (out[i]?.key === e.key) return undefined;
    out.splice(i, 0, e);
  }
  return out;
}

/**
 * The last comparison from each older forward list, for the other maps of the same render
 * (protocols, address families). Keyed by the older list: an entry keeps nothing older alive.
 */
const compared = new WeakMap<readonly ForwardSpec[], { after: readonly ForwardSpec[]; changed: ReturnType<typeof changedItems<ForwardSpec>> }>();

function changedForwards(before: readonly ForwardSpec[], after: readonly ForwardSpec[]): ReturnType<typeof changedItems<ForwardSpec>> {
  const known = compared.get(before);
  if (known?.after === after) return known.changed;
  const changed = changedItems(before, after, sameElement, MAX_CHANGED_SHARE * Math.max(before.length, after.length));
  compared.set(before, { after, changed });
  return changed;
}

/** The elements patched from the previous ones, or undefined when they cannot be (then render them all). */
function patchedElements(previous: readonly MapElement[], forwards: readonly ForwardSpec[], protocol: Protocol, guestIP: ReadonlyMap<string, string>): readonly MapElement[] | undefined {
  const before = renderedFrom.get(previous);
  if (!before || before.protocol !== protocol || !sameEntries(before.guestIP, guestIP)) return undefined;
  const changed = changedForwards(before.forwards, forwards);
  if (!changed) return undefined;
  const { gone, came } = changed;
  if (gone.length === 0 && came.length === 0) return previous;
  // The same addresses: a forward in both lists has the same element in both.
  const mapped = (f: ForwardSpec) => f.protocol === protocol && guestIP.has(f.target.guest);
  const removed = gone.filter(mapped).map((f) => f.port);
  const removedKeys = sortedKeys(removed);
  const added = came.filter(mapped).map((f) => forwardElement(f, guestIP.get(f.target.guest) as string));
  if (!numericKeyOrder(added)) added.sort((x, y) => (x.key as number) - (y.key as number));
  // A repeated port: the plain render's stable sort decides the order.
  if (!numericKeyOrder(added) || removedKeys.length !== removed.length) return undefined;
  const out = patched(previous, removedKeys, added);
  if (!out) return undefined;
  noteDerived(out, previous, unionKeys(removedKeys, added.map((e) => e.key as number)));
  // The next revision patches `out`: the older forwards need not stay alive with `previous`.
  renderedFrom.delete(previous);
  return out;
}

/**
 * The elements of the protocol's forward map: forwards whose guest has an address in `guestIP`,
 * keyed by public port. `previous`: the elements rendered for an earlier revision, patched when
 * the forwards differ in a few objects only. The array is shared with that render when nothing
 * differs: never to be mutated.
 */
export function renderForwardElements(forwards: readonly ForwardSpec[], protocol: Protocol, guestIP: ReadonlyMap<string, string>, previous?: readonly MapElement[]): MapElement[] {
  const patch = previous && patchedElements(previous, forwards, protocol, guestIP);
  const { elements, unique } = patch ? { elements: patch, unique: true } : plainElements(forwards, protocol, guestIP);
  // Only a port-ordered array (no repeated port) is a base to patch.
  if (unique) renderedFrom.set(elements, { forwards, protocol, guestIP });
  return elements as MapElement[];
}
