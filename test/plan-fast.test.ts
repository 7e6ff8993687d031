// The fast paths of planning at scale give exactly what the plain paths give: random edits of a
// large generated state, each planned against the previous one's tables as nft would list them
// (equal content, objects of their own). Pure, no root.
import { describe, expect, it } from 'vitest';
import type { ClusterState, ForwardSpec } from '../src/state/types.js';
import type { MapElement, Ruleset } from '../src/nft/model.js';
import { sortElements, sortElementsByCanonicalKey } from '../src/nft/normalize.js';
import { syntheticState } from '../src/bench/synthetic.js';
import { resolveNode } from '../src/render/node-view.js';
import { forwardElements, ownedTables, PROTOCOLS, renderView } from '../src/render/render.js';
import { planNft } from '../src/plan/nft-plan.js';
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

describe('planning fast paths at scale', () => {
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
