// Pure tests of guest planning and the migration gate (no root, no processes).
import { describe, expect, it } from 'vitest';
import { syntheticState } from '../src/bench/synthetic.js';
import { planGuests } from '../src/reconcile/guests.js';
import { resolveNode } from '../src/render/node-view.js';
import { desiredFingerprint, type RunningGuest } from '../src/guests/driver.js';
import { buildMigrationGate, updateArrivals, placementOf, type Arrival } from '../src/agent/migration.js';
import type { NodeStatus } from '../src/agent/report.js';

const state = syntheticState(0);
const node1 = state.nodes[0]!;
const guest1 = state.guests[0]!;
const running = (name: string, extra: Partial<RunningGuest> = {}): RunningGuest => ({
  name,
  state: 'running',
  managed: true,
  fingerprint: desiredFingerprint(state.guests.find((g) => g.name === name) ?? guest1, node1),
  ...extra,
});

describe('planGuests', () => {
  it('starts a missing guest and leaves a matching one alone', () => {
    expect(planGuests(resolveNode(state, 'node1'), []).actions).toEqual([{ guest: 'guest1', action: 'start', reason: 'is not running' }]);
    expect(planGuests(resolveNode(state, 'node1'), [running('guest1')]).actions).toEqual([]);
  });

  it('reports a configuration change, and restarts only with restartOnChange', () => {
    const differs = [running('guest1', { fingerprint: 'sha256:old' })];
    expect(planGuests(resolveNode(state, 'node1'), differs).actions.map((a) => a.action)).toEqual(['config-differs']);
    const s = syntheticState(0);
    s.guests[0]!.restartOnChange = true;
    expect(planGuests(resolveNode(s, 'node1'), differs).actions.map((a) => a.action)).toEqual(['restart']);
  });

  it('stops a managed guest placed elsewhere, never one started by hand', () => {
    const p = planGuests(resolveNode(state, 'node1'), [running('guest1'), running('guest2'), running('stray', { managed: false })]);
    expect(p.actions).toEqual([
      { guest: 'guest2', action: 'stop', reason: 'placed on node2; running here' },
      { guest: 'stray', action: 'unmanaged', reason: 'not in the state, yet runs here without cgw-sync; stop it by hand' },
    ]);
  });

  it('waits when the migration gate says so, and restarts a crashed guest of its own', () => {
    expect(planGuests(resolveNode(state, 'node1'), [], (g) => (g === 'guest1' ? 'waiting for node node2' : undefined)).actions).toEqual([{ guest: 'guest1', action: 'wait', reason: 'is not running; waiting for node node2' }]);
    expect(planGuests(resolveNode(state, 'node1'), [running('guest1', { state: 'crashed' })]).actions.map((a) => a.action)).toEqual(['start']);
  });
});

describe('migration gate', () => {
  const moved = syntheticState(0);
  moved.guests[1]!.node = 'node1'; // guest2 moves from node2 to node1 at revision "r2"
  const status = (over: Partial<NodeStatus>): NodeStatus =>
    ({ format: 'cgw-sync.status/v1', node: 'node2', time: 't', outcome: 'applied', source: { url: '', branch: 'main', state: 'ok' }, plan: null, drift: { items: [], corrected: false }, guests: [], hooks: [], errors: [], timings: {}, ...over }) as NodeStatus;
  const order = ['r1', 'r2', 'r3'];
  const isAtOrAfter = async (rev: string, since: string) => order.indexOf(rev) >= order.indexOf(since);

  it('records an arrival only for guests that were placed elsewhere', () => {
    const arrivals = updateArrivals(placementOf(state), moved, 'node1', 'r2', {});
    expect(arrivals).toEqual({ guest2: { from: 'node2', since: 'r2' } });
    // A fresh node knows no previous placement: every guest placed on it must be confirmed by all others.
    expect(updateArrivals(undefined, moved, 'node1', 'r2', {})).toEqual({ guest1: { from: null, since: 'r2' }, guest2: { from: null, since: 'r2' } });
  });

  const gate = (s: NodeStatus | null, releases = {}) =>
    buildMigrationGate({ node: 'node1', state: moved, arrivals: { guest2: { from: 'node2', since: 'r2' } as Arrival }, releases, readStatus: async () => ({ status: s }), isAtOrAfter });

  it('blocks while the old node is silent, behind the move, or still runs the guest', async () => {
    expect((await gate(null)).guest2).toMatch(/waiting for node node2: it has not reported .*guest release guest2 --from node2/);
    expect((await gate(status({ appliedRevision: 'r1' }))).guest2).toMatch(/waiting for node node2 to apply revision r2 \(it reports r1/);
    expect((await gate(status({ appliedRevision: 'r2', guests: [{ name: 'guest2', state: 'running' }] }))).guest2).toMatch(/waiting for node node2 to stop it/);
  });

  it('lets the guest start once the old node reports it stopped at or after the move, or on release', async () => {
    expect((await gate(status({ appliedRevision: 'r3', guests: [{ name: 'guest2', state: 'stopped' }] }))).guest2).toBeUndefined();
    expect((await gate(null, { guest2: { from: 'node2', at: 'now' } })).guest2).toBeUndefined();
  });
});
