// The fast paths of planning at scale give exactly what the plain paths give: random edits of a
// large generated state, each planned against the previous one's tables as nft would list them
// (equal content, objects of their own). Pure, no root.
import { describe, expect, it } from 'vitest';
import type { ClusterState, ForwardSpec } from '../src/state/types.js';
import { tableId, type MapElement, type NftTable, type Ruleset } from '../src/nft/model.js';
import { afterTransaction } from '../src/nft/committed.js';
import { keysToCompare } from '../src/nft/lineage.js';
import { sortElements, sortElementsByCanonicalKey } from '../src/nft/normalize.js';
import { syntheticState } from '../src/bench/synthetic.js';
import { entersNode, forwardsEntering, resolveNode } from '../src/render/node-view.js';
import { forwardElements, ownedTables, PROTOCOLS, renderView } from '../src/render/render.js';
import { changedItems } from '../src/render/forward-elements.js';
import { planNft, planToTransaction, type NftPlan } from '../src/plan/nft-plan.js';
import { planConntrackCleanup, planConntrackCleanupFull } from '../src/conntrack/cleanup.js';
import { nodeHealthChecks } from '../src/health/checks.js';
import { seededRandom } from './helpers/random.js';

const FORWARDS = 20_000;

/** A ruleset as a fresh listing would give it: the same content, no object shared. */
const listed = (r: Ruleset): Ruleset => JSON.parse(JSON.stringify(r)) as Ruleset;

/** One random edit of the forwards (a few per step), or now and then of the NAT mode (a table replaced). */
function edit(s: ClusterState, pick: (n: number) => number, step: number): ClusterState {
  if (step % 9 === 8) return { ...s, cluster: { ...s.cluster, nat: { ...s.cluster.nat, forwardSnat: !s.cluster.nat.forwardSnat } } };
  const forwards = s.forwards.slice();
  const free = () => 10_000 + FORWARDS + step * 10 + pick(10);
  for (let n = 1 + pick(4); n > 0; n--) {
    const i = pick(forwards.length);
    const f = forwards[i] as ForwardSpec;
    const changes: (() => ForwardSpec | undefined)[] = [
      () => ({ ...f, target: { ...f.target, guest: f.target.guest === 'guest1' ? 'guest2' : 'guest1' } }),
      () => ({ ...f, target: { ...f.target, port: 1 + pick(65000) } }),
      () => ({ ...f, protocol: f.protocol === 'tcp' ? 'udp' : 'tcp' }),
      () => ({ ...f, conntrackCleanup: !f.conntrackCleanup, target: { ...f.target, port: f.target.port + 1 } }),
      () => ({ ...f, port: free() }),
      () => undefined,
    ];
    const changed = changes[pick(changes.length)]!();
    if (changed) forwards[i] = changed;
    else forwards.splice(i, 1);
    if (pick(3) === 0) forwards.unshift({ ...f, name: `new-${step}-${n}`, port: free() });
  }
  // Ports stay unique (validation guarantees it): the last of a clash goes.
  const seen = new Set<string>();
  const unique = forwards.filter((f) => !seen.has(`${f.protocol}/${f.port}`) && !!seen.add(`${f.protocol}/${f.port}`));
  return { ...s, forwards: unique };
}

/** Now and then a change the forward maps cannot be patched for: a guest's address, the NAT mode (maps with non-port keys). */
function editWide(s: ClusterState, pick: (n: number) => number, step: number): ClusterState {
  if (step % 7 === 3) return { ...s, guests: s.guests.map((g) => (g.name === 'guest1' ? { ...g, ip: `10.5.5.${100 + step}` } : g)) };
  // stateless-nat: reply maps keyed by (guest IP . tagged port), unique while every target port is (only removals then).
  const stride = 21_000;
  if (step === 11) {
    const forwards = s.forwards.map((f, i) => ({ ...f, target: { ...f.target, port: 1 + i } }));
    return { ...s, forwards, cluster: { ...s.cluster, nat: { mode: 'stateless-nat', forwardSnat: false, portStride: stride } }, nodes: s.nodes.map((n, i) => ({ ...n, natTag: i + 1 })) };
  }
  if (step > 11 && step < 15) return { ...s, forwards: s.forwards.filter(() => pick(2000) > 0) };
  if (step === 15) return { ...s, cluster: { ...s.cluster, nat: { mode: 'full-nat', forwardSnat: true } } };
  // Now and then every forward a new object of equal content, as a file read again gives it.
  return edit(step % 4 === 1 ? { ...s, forwards: s.forwards.map((f) => structuredClone(f)) } : s, pick, step);
}

/** The tables after the plan's transaction, as the agent's committed memory keeps them: patched, or read again (fresh objects). */
function committedAfter(live: Ruleset, plan: NftPlan, desired: Ruleset): Ruleset {
  const held = new Map<string, NftTable | null>(live.tables.map((t) => [tableId(t), t]));
  const { patched, reread } = afterTransaction(held, planToTransaction(plan).ops);
  const read = listed(desired);
  for (const r of reread) held.set(tableId(r), read.tables.find((t) => tableId(t) === tableId(r)) ?? null);
  for (const [id, t] of patched) held.set(id, t);
  return { tables: [...held.values()].filter((t): t is NftTable => !!t) };
}

/** A foreign change of the committed memory: an element of a map deleted, as the memory would patch it. */
function drifted(live: Ruleset, pick: (n: number) => number): Ruleset {
  const maps = live.tables.flatMap((table) => table.maps.filter((m) => m.elements.length > 0).map((map) => ({ table, map })));
  const { table, map } = maps[pick(maps.length)]!;
  const victim = map.elements[pick(map.elements.length)]!;
  const ops = [{ op: 'delete-elements' as const, table: { family: table.family, name: table.name }, map: map.name, elements: [victim] }];
  const { patched } = afterTransaction(new Map([[tableId(table), table]]), ops);
  return { tables: live.tables.map((t) => patched.get(tableId(t)) ?? t) };
}

describe('planning fast paths at scale', () => {
  it('renders patched from the previous revision and plans by lineage exactly as the plain paths do, revision after revision', () => {
    const pick = seededRandom(21);
    // Correctness, not scale: a quarter of the size keeps the plain comparisons quick.
    let state = syntheticState(FORWARDS / 4);
    let desired = renderView(resolveNode(state, 'node1'));
    // A first full read: nothing known about it.
    let live = listed(desired);
    const seen = { patched: 0, patchedAfterReading: 0, byKeys: 0, stale: 0, updates: 0, replaces: 0, drift: 0 };
    for (let step = 0; step < 24; step++) {
      state = editWide(state, pick, step);
      const view = resolveNode(state, 'node1');
      const next = renderView(view, desired);
      expect(next).toEqual(renderView(view));
      const tcp = (r: Ruleset) => r.tables[0]!.maps.find((m) => m.name === 'fwd_tcp')?.elements ?? [];
      // Unchanged forwards keep their elements (objects) when the render was patched.
      if (tcp(next).length > 0 && tcp(next)[0] === tcp(desired)[0]) {
        seen.patched++;
        if (step % 4 === 1) seen.patchedAfterReading++;
      }
      if (step % 5 === 4) {
        live = drifted(live, pick);
        seen.drift++;
      }
      const owned = ownedTables(state);
      // What the revision itself changes (as a review of it plans), between the two renders.
      expect(planNft(next, desired, owned)).toEqual(planNft(listed(next), listed(desired), owned));
      const portMaps = (r: Ruleset) => r.tables[0]!.maps.filter((m) => m.name.startsWith('fwd_')).map((m) => m.elements);
      const liveMaps = portMaps(live);
      if (liveMaps.length === 2 && portMaps(next).every((m, i) => keysToCompare(m, liveMaps[i]!))) seen.byKeys++;
      const plan = planNft(next, live, owned);
      expect(plan).toEqual(planNft(listed(next), listed(live), owned));
      const planned = { desired: next, live, owned, plan };
      const stale = planConntrackCleanup(view, planned);
      expect(stale).toEqual(planConntrackCleanupFull(view, planned));
      seen.stale += stale.length;
      if (plan.changes.some((c) => c.action === 'update' && c.maps.length > 0)) seen.updates++;
      if (plan.changes.some((c) => c.action === 'replace')) seen.replaces++;
      live = committedAfter(live, plan, next);
      // The read-back plan after the apply: nothing left, by lineage as in full.
      expect(planNft(next, live, owned).changes).toEqual([]);
      expect(planNft(listed(next), listed(live), owned).changes).toEqual([]);
      desired = next;
    }
    // Every way was taken: patched renders (also of forwards read again) planned by keys, stale conntrack entries, element updates, replaced tables, drift.
    expect(seen.patched).toBeGreaterThan(10);
    expect(seen.patchedAfterReading).toBeGreaterThan(2);
    // Every patched render was planned by keys in both port maps, whatever else was diffed in between.
    expect(seen.byKeys).toBe(seen.patched);
    expect(seen.updates).toBeGreaterThan(10);
    expect(seen.replaces).toBeGreaterThan(0);
    expect(seen.drift).toBeGreaterThan(3);
    expect(seen.stale).toBeGreaterThan(5);
  });

  it('conntrack cleanup from the plan equals the whole-map comparison on random edits', () => {
    const pick = seededRandom(12);
    let state = syntheticState(FORWARDS);
    let stale = 0;
    let updates = 0;
    let replaces = 0;
    for (let step = 0; step < 18; step++) {
      const live = listed(renderView(resolveNode(state, 'node1')));
      state = edit(state, pick, step);
      const view = resolveNode(state, 'node1');
      const desired = renderView(view);
      const owned = ownedTables(state);
      const planned = { desired, live, owned, plan: planNft(desired, live, owned) };
      const fast = planConntrackCleanup(view, planned);
      expect(fast).toEqual(planConntrackCleanupFull(view, planned));
      stale += fast.length;
      if (planned.plan.changes.some((c) => c.action === 'update' && c.maps.length > 0)) updates++;
      else replaces++;
    }
    // The edits did make entries stale (the comparison was not of empty lists only), through
    // both ways: element updates (the fast way) and replaced tables (the whole maps).
    expect(stale).toBeGreaterThan(10);
    expect(updates).toBeGreaterThan(10);
    expect(replaces).toBeGreaterThan(0);
  });

  it('forward map elements equal the plain filter, map and canonical sort on random edits', () => {
    const pick = seededRandom(7);
    let state = syntheticState(FORWARDS);
    let unordered = 0;
    for (let step = 0; step < 12; step++) {
      state = edit(state, pick, step);
      const view = resolveNode(state, 'node1');
      for (const protocol of PROTOCOLS) {
        const plain = sortElementsByCanonicalKey(
          view.forwards.filter((f) => f.protocol === protocol && view.guestIP.has(f.target.guest)).map((f): MapElement => ({ key: f.port, value: { concat: [view.guestIP.get(f.target.guest) as string, f.target.port] } })),
        );
        expect(forwardElements(view, protocol)).toEqual(plain);
        if (view.forwards.some((f, i) => i > 0 && f.protocol === protocol && f.port < (view.forwards[i - 1] as ForwardSpec).port)) unordered++;
      }
    }
    expect(unordered).toBeGreaterThan(0);
  });

  it('the forwards entering a node equal the plain filter; the state\'s list itself when none names its nodes', () => {
    const all = syntheticState(200).forwards;
    expect(forwardsEntering(all, 'node1')).toBe(all);
    // One forward anywhere in the list (the last one too) that names other nodes is left out.
    for (const at of [0, 100, 199]) {
      const some = all.map((f, i) => (i === at ? { ...f, nodes: ['node2'] } : f));
      const entering = forwardsEntering(some, 'node1');
      expect(entering).toEqual(some.filter((f) => entersNode(f, 'node1')));
      expect(entering).toHaveLength(199);
      expect(forwardsEntering(some, 'node2')).toHaveLength(200);
    }
  });

  it('the items that differ between two lists account for every item, and give up beyond the limit', () => {
    const pick = seededRandom(5);
    const count = (xs: number[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<number, number>());
    for (let round = 0; round < 40; round++) {
      const before = Array.from({ length: 500 }, (_, i) => i);
      const after = before.slice();
      // Items removed, inserted, or replaced (one gone and one new).
      let edits = 0;
      for (let n = 1 + pick(6); n > 0; n--) {
        const i = pick(after.length);
        const ways = [() => after.splice(i, 1 + pick(40)).length, () => after.splice(i, 0, 1000 + round * 100 + n).length + 1, () => after.splice(i, 1, 2000 + round * 100 + n).length + 1];
        edits += ways[pick(ways.length)]!();
      }
      const changed = changedItems(before, after, (a, b) => a === b, 200);
      expect(changed).toBeDefined();
      const { gone, came } = changed!;
      // before - gone + came == after, as multisets, naming no more items than were edited
      const left = count(before);
      for (const g of gone) left.set(g, left.get(g)! - 1);
      for (const c of came) left.set(c, (left.get(c) ?? 0) + 1);
      expect([...left].filter(([, k]) => k > 0).sort((a, b) => a[0] - b[0])).toEqual([...count(after)].sort((a, b) => a[0] - b[0]));
      expect(gone.length + came.length).toBeLessThanOrEqual(edits);
      expect(changedItems(before, after, (a, b) => a === b, Math.max(0, gone.length + came.length - 1))).toBeUndefined();
    }
  });

  it('sorting port keys keeps the canonical sort\'s order, duplicates in their order too', () => {
    const pick = seededRandom(3);
    for (let round = 0; round < 20; round++) {
      const numeric: MapElement[] = Array.from({ length: 2000 }, (_, i) => ({ key: pick(500), value: i }));
      expect(sortElements(numeric)).toEqual(sortElementsByCanonicalKey(numeric));
      const mixed: MapElement[] = numeric.map((e, i) => (i % 7 === 0 ? { key: { concat: [`10.0.0.${pick(9)}`, e.key] }, value: i } : e));
      expect(sortElements(mixed)).toEqual(sortElementsByCanonicalKey(mixed));
    }
  });

  it('health checks are made once per view, equal to a fresh view\'s, and follow an edit', () => {
    const probed = (s: ClusterState, every: number): ClusterState => ({ ...s, forwards: s.forwards.map((f, i) => (i % every === 0 ? { ...f, health: { type: 'tcp' as const, timeoutSeconds: 2 } } : f)) });
    const state = probed(syntheticState(FORWARDS), 1000);
    const view = resolveNode(state, 'node1');
    const checks = nodeHealthChecks(view);
    expect(nodeHealthChecks(view)).toBe(checks);
    expect(Object.isFrozen(checks)).toBe(true);
    expect(nodeHealthChecks(resolveNode(state, 'node1'))).toEqual(checks);
    const edited = nodeHealthChecks(resolveNode(probed(state, 500), 'node1'));
    expect(edited.length).toBeGreaterThan(checks.length);
    expect(edited.filter((c) => 'probe' in c).map((c) => c.name)).toEqual(view.forwards.filter((_, i) => i % 500 === 0 || !!view.forwards[i]!.health).map((f) => `forward ${f.name}`));
  });
});
