// Results remembered per object identity, for pure functions of inputs that are never mutated
// after they are made (a loaded state, a node view, a rendered or listed ruleset). The long-running
// agent hands the same objects to every cycle while nothing changes (same revision, same committed
// ruleset), so a cycle with nothing new does not render or diff 50,000 elements again. Weak: an
// entry goes with its object.

/** compute(), once per (obj, key). */
export function rememberedFor<O extends object, R>(cache: WeakMap<O, Map<string, R>>, obj: O, key: string, compute: () => R): R {
  let byKey = cache.get(obj);
  if (!byKey) {
    byKey = new Map();
    cache.set(obj, byKey);
  }
  if (byKey.has(key)) return byKey.get(key) as R;
  const value = compute();
  byKey.set(key, value);
  return value;
}

/** compute(), once per (a, b, key). */
export function rememberedForPair<A extends object, B extends object, R>(cache: WeakMap<A, WeakMap<B, Map<string, R>>>, a: A, b: B, key: string, compute: () => R): R {
  let byB = cache.get(a);
  if (!byB) {
    byB = new WeakMap();
    cache.set(a, byB);
  }
  return rememberedFor(byB, b, key, compute);
}
