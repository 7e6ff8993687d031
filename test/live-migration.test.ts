// Live migration (`migration: live`) without root: validation, the pure decisions of both sides,
// the guard table, the review of a live move, and the whole handshake through the nodes' reports
// with the real cycle (runOnce) on fakes: the destination listens and reports, the source migrates
// and reports the handover or the failure (bounded), a dead source is released. The fake driver's
// migration hands the guest from one fake to the other (src/guests/fake.ts); the real qemu path is
// the lab test (e2e-lab-qemu.test.ts), the guard against real nft in migration-guard.test.ts.
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadState, loadStateOrThrow } from '../src/state/load.js';
import { releaseGuest } from '../src/agent/migration.js';
import { destinationWord, sourceWord } from '../src/agent/live-migration.js';
import { MAX_MIGRATION_ATTEMPTS, MIGRATION_PORTS, migrationPort, planArrival, planDeparture } from '../src/reconcile/live-migration.js';
import { migrationGuardTable } from '../src/render/migration-guard.js';
import { resolveNode } from '../src/render/node-view.js';
import { liveAsApplied, reviewGates } from '../src/plan/review.js';
import { formatPlanText, planJson, planNode } from '../src/plan/plan.js';
import type { NodeStatus } from '../src/agent/report.js';
import type { GatewayAnnouncer } from '../src/guests/announce.js';
import { fakeCluster, fakeLiveCluster, fakeNode, placeGuest, type FakeNode } from './helpers/fake-node.js';

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-live-'));
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const entry = (s: NodeStatus, guest = 'guest2') => s.guests.find((g) => g.name === guest);

/** Records the gateway announcements a node sends (guest MAC, bridge, gateway address). */
function recordingAnnouncer(): GatewayAnnouncer & { told: string[] } {
  const told: string[] = [];
  return {
    told,
    announce: async (r) => {
      told.push(`${r.guestMac} ${r.bridge} ${r.ip}`);
      return 'recorded';
    },
  };
}

/** A live cluster whose two fake nodes ran one cycle each (guest1 on node1, guest2 on node2); node1 records its gateway announcements. */
async function convergedPair(name: string) {
  const c = await fakeLiveCluster(scratch, name);
  const announcer = recordingAnnouncer();
  const n1 = fakeNode(c, 'node1', {}, { announce: announcer });
  const n2 = fakeNode(c, 'node2');
  await n1.cycle();
  await n2.cycle();
  return { c, n1, n2, announced: announcer.told };
}

/** Where guest2 runs (not a waiting destination), on each node. */
function runningOn(...nodes: Array<[string, FakeNode]>): string[] {
  return nodes.filter(([, n]) => n.guests.guests.get('guest2')?.state === 'running').map(([name]) => name);
}

describe('migration: live, validation', () => {
  it('is refused on a xen or netns node, with file, line, field and the reason; accepted on qemu', async () => {
    const c = await fakeCluster(scratch, 'validate');
    await writeFile(path.join(c.state, 'guests', 'guest2.yaml'), `${await readFile(path.join(c.state, 'guests', 'guest2.yaml'), 'utf8')}migration: live\n`);
    const netns = await loadState(c.state);
    expect(netns.diagnostics).toHaveLength(1);
    expect(netns.diagnostics[0]).toMatchObject({ file: 'guests/guest2.yaml', field: 'migration', line: expect.any(Number) });
    expect(netns.diagnostics[0]?.message).toMatch(/node node2 \(nodes\/node2\.yaml:\d+:\d+\) is netns: .*no running state to migrate; use migration: stop-start/);
    const lines = (await readFile(path.join(c.state, 'guests', 'guest2.yaml'), 'utf8')).split('\n');
    expect(lines[(netns.diagnostics[0]?.line ?? 0) - 1]).toMatch(/^migration: live/);

    const node2 = path.join(c.state, 'nodes', 'node2.yaml');
    await writeFile(node2, (await readFile(node2, 'utf8')).replace('hypervisor: netns', 'hypervisor: xen'));
    expect((await loadState(c.state)).diagnostics[0]?.message).toMatch(/is xen: cgw-sync's xen driver has no live migration/);
    await writeFile(node2, (await readFile(node2, 'utf8')).replace('hypervisor: xen', 'hypervisor: qemu'));
    const ok = await loadState(c.state);
    expect(ok.diagnostics).toEqual([]);
    expect(ok.state?.guests.find((g) => g.name === 'guest2')?.migration).toBe('live');
    expect(ok.state?.guests.find((g) => g.name === 'guest1')?.migration).toBeUndefined();
  });

  it('an unknown migration kind is a schema error naming the field', async () => {
    const c = await fakeLiveCluster(scratch, 'badkind');
    const file = path.join(c.state, 'guests', 'guest2.yaml');
    await writeFile(file, (await readFile(file, 'utf8')).replace('migration: live', 'migration: teleport'));
    const r = await loadState(c.state);
    expect(r.diagnostics.map((d) => `${d.file} ${d.field}`)).toEqual(['guests/guest2.yaml migration']);
  });
});

describe('migration: live, decisions (pure)', () => {
  it('the destination port is derived from the guest name, inside the guarded range, past taken ports', () => {
    const p = migrationPort('guest2', new Set());
    expect(p).toBe(migrationPort('guest2', new Set()));
    expect(p).toBeGreaterThanOrEqual(MIGRATION_PORTS.first);
    expect(p).toBeLessThanOrEqual(MIGRATION_PORTS.last);
    const next = migrationPort('guest2', new Set([p]));
    expect(next).not.toBe(p);
    expect(next === p + 1 || (p === MIGRATION_PORTS.last && next === MIGRATION_PORTS.first)).toBe(true);
  });

  it('destination: listens while the source runs it, retries after a failure, gives up after the last attempt, replaces its listener when the source stopped it', async () => {
    const state = await loadStateOrThrow((await fakeLiveCluster(scratch, 'pure')).state);
    const g = { ...state.guests.find((x) => x.name === 'guest2')!, node: 'node1' };
    const node = state.nodes.find((n) => n.name === 'node1')!;
    const word = (failures: number, handedOver = false) => ({ node: 'node2', failures, handedOver, error: 'boom' });
    const listener = (attempt: number) => ({ name: 'guest2', state: 'paused' as const, managed: true, incoming: { host: node.guestBridge.nodeIP, port: 47111, attempt, revision: 'r1' } });
    const held = 'waiting for node node2 to stop it';

    const first = planArrival(g, node, undefined, held, word(0), 'r1', new Set());
    expect(first).toMatchObject({ kind: 'incoming', listen: { host: '10.5.5.251', attempt: 0, revision: 'r1' } });
    expect(planArrival(g, node, listener(0), held, word(0), 'r1', new Set())).toMatchObject({ kind: 'wait', reason: expect.stringMatching(/listens at tcp:10\.5\.5\.251:47111 .*attempt 1 of 3/) });
    expect(planArrival(g, node, listener(0), held, word(1), 'r1', new Set())).toMatchObject({ kind: 'incoming', listen: { port: 47111, attempt: 1 }, reason: expect.stringMatching(/attempt 1 of 3 failed \(last: boom\)/) });
    expect(planArrival(g, node, listener(1), held, word(MAX_MIGRATION_ATTEMPTS), 'r1', new Set())).toMatchObject({ kind: 'cancel-incoming', reason: expect.stringMatching(/failed 3 times .*keeps running on node2/) });
    expect(planArrival(g, node, undefined, held, word(MAX_MIGRATION_ATTEMPTS), 'r1', new Set())).toMatchObject({ kind: 'wait' });
    // The gate passes: handed over (the destination takes it), or stopped/released (a fresh start).
    expect(planArrival(g, node, listener(0), undefined, word(0, true), 'r1', new Set())).toEqual({ kind: 'none' });
    expect(planArrival(g, node, listener(0), undefined, word(0), 'r1', new Set())).toMatchObject({ kind: 'start', replacesIncoming: true });
    expect(planArrival(g, node, undefined, undefined, word(0), 'r1', new Set())).toEqual({ kind: 'none' });
    // No word from a qemu source: the ordinary wait.
    expect(planArrival(g, node, undefined, held, undefined, 'r1', new Set())).toEqual({ kind: 'none' });
  });

  it('source: migrates only to the listener of its next attempt, keeps the guest otherwise', () => {
    const dest = (attempt: number) => ({ node: 'node1', target: { host: '10.5.5.251', port: 47111 }, attempt });
    expect(planDeparture('node1', undefined, undefined)).toMatchObject({ kind: 'keep', reason: expect.stringMatching(/until node1's destination listens/) });
    expect(planDeparture('node1', undefined, dest(0))).toMatchObject({ kind: 'migrate-out', to: 'node1', target: { host: '10.5.5.251', port: 47111 }, attempt: 0 });
    expect(planDeparture('node1', { to: 'node1', failures: 1, error: 'x' }, dest(0))).toMatchObject({ kind: 'keep' });
    expect(planDeparture('node1', { to: 'node1', failures: 1 }, dest(1))).toMatchObject({ kind: 'migrate-out', attempt: 1 });
    // Failures of a move to another node do not count for this one.
    expect(planDeparture('node1', { to: 'node3', failures: 3 }, dest(0))).toMatchObject({ kind: 'migrate-out', attempt: 0 });
    expect(planDeparture('node1', { to: 'node1', failures: 3 }, dest(3))).toMatchObject({ kind: 'keep', reason: expect.stringMatching(/failed 3 times/) });
  });

  it("reports are untrusted: only whole numbers in range are taken, the address always comes from the state", () => {
    const inc = (over: object) => ({ name: 'guest2', state: 'paused', incoming: { uri: 'tcp:6.6.6.6:22', port: 47111, attempt: 0, revision: 'r', ...over } });
    expect(destinationWord('node1', '10.5.5.251', inc({}))).toEqual({ node: 'node1', target: { host: '10.5.5.251', port: 47111 }, attempt: 0 });
    expect(destinationWord('node1', '10.5.5.251', inc({ port: 22 }))).toBeUndefined();
    expect(destinationWord('node1', '10.5.5.251', inc({ port: '47111' }))).toBeUndefined();
    expect(destinationWord('node1', '10.5.5.251', inc({ attempt: -1 }))).toBeUndefined();
    expect(destinationWord('node1', '10.5.5.251', { name: 'guest2', state: 'running' })).toBeUndefined();
    const src = (migration: object) => ({ name: 'guest2', state: 'running', migration: migration as never });
    expect(sourceWord('node2', 'node1', src({ to: 'node1', failures: 2, error: 'e' }))).toEqual({ node: 'node2', failures: 2, handedOver: false, error: 'e' });
    expect(sourceWord('node2', 'node1', src({ to: 'node3', failures: 2 }))).toEqual({ node: 'node2', failures: 0, handedOver: false });
    // A malformed count stops the attempts rather than restarting them.
    expect(sourceWord('node2', 'node1', src({ to: 'node1', failures: 'lots' })).failures).toBe(MAX_MIGRATION_ATTEMPTS);
  });
});

describe('migration: live, the guard table', () => {
  it('drops streams to the nodes on the migration ports unless they come from or go to a trunk; absent without live guests', async () => {
    const c = await fakeLiveCluster(scratch, 'guard');
    const state = await loadStateOrThrow(c.state);
    const table = migrationGuardTable(resolveNode(state, 'node1'))!;
    expect(table).toMatchObject({ family: 'bridge', name: 'cgw_migration' });
    expect(table.chains.map((ch) => `${ch.name} ${ch.base?.hook} ${ch.base?.priority}`)).toEqual(['forward forward -200', 'output output -200', 'prerouting prerouting -200']);
    const pre = table.chains.find((ch) => ch.name === 'prerouting')!.rules[0]!.expr;
    expect(pre).toEqual([
      { match: { op: '!=', left: { meta: { key: 'iifname' } }, right: { set: ['eth1.100', 'eth2.100'] } } },
      { match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: { set: ['10.5.5.251', '10.5.5.252'] } } },
      { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: { range: [MIGRATION_PORTS.first, MIGRATION_PORTS.last] } } },
      { drop: null },
    ]);
    const plain = await loadStateOrThrow((await fakeCluster(scratch, 'noguard')).state);
    expect(migrationGuardTable(resolveNode(plain, 'node1'))).toBeUndefined();
  });

  it('once no guest migrates live, a node deletes the table (where its ownedTables grant it)', async () => {
    const c = await fakeLiveCluster(scratch, 'guard-off');
    const n1 = fakeNode(c, 'node1');
    const guard = [{ family: 'bridge' as const, name: 'cgw_migration' }];
    expect((await n1.cycle()).errors).toEqual([]);
    expect((await n1.nft.list(guard)).tables).toHaveLength(1);
    const file = path.join(c.state, 'guests', 'guest2.yaml');
    await writeFile(file, (await readFile(file, 'utf8')).replace(/^migration: live\n/m, ''));
    const off = await n1.cycle();
    expect(off.errors).toEqual([]);
    expect(off.plan?.tables).toEqual([expect.objectContaining({ table: 'bridge cgw_migration', action: 'delete' })]);
    expect((await n1.nft.list(guard)).tables).toEqual([]);
  });
});

describe('migration: live, the handshake through the reports (fakes)', () => {
  it('a move migrates the running guest: the destination listens, the source hands it over, never two copies and never none', async () => {
    const { c, n1, n2, announced } = await convergedPair('handshake');
    expect(runningOn(['node1', n1], ['node2', n2])).toEqual(['node2']);
    await placeGuest(c, 'guest2', 'node1');

    // node2 goes first: node1 does not listen yet, so it keeps the guest.
    const keep = await n2.cycle();
    expect(entry(keep)).toMatchObject({ state: 'running', detail: expect.stringMatching(/^keep: placed on node1: keeps running here until node1's destination listens/) });

    const listening = await n1.cycle();
    const port = migrationPort('guest2', new Set());
    expect(entry(listening)).toMatchObject({ state: 'paused', incoming: { uri: `tcp:10.5.5.251:${port}`, port, attempt: 0 } });
    expect(n1.guests.history.at(-1)).toBe(`incoming guest2 10.5.5.251:${port} attempt 0`);
    expect(runningOn(['node1', n1], ['node2', n2])).toEqual(['node2']);

    const handed = await n2.cycle();
    expect(n2.guests.history.at(-1)).toBe(`migrate guest2 to 10.5.5.251:${port}`);
    expect(entry(handed)).toMatchObject({ state: 'migrated', migration: { to: 'node1', failures: 0, handedOver: true }, detail: expect.stringMatching(/^handed over to node1 at tcp:10\.5\.5\.251:\d+ \(qemu downtime 5 ms/) });
    expect(runningOn(['node1', n1], ['node2', n2])).toEqual(['node1']);
    expect(announced).toEqual([]);

    // node1 tells the arrived guest its gateway MAC, once.
    const arrived = await n1.cycle();
    expect(entry(arrived)).toMatchObject({ state: 'running', detail: 'arrived by live migration' });
    expect(arrived.errors).toEqual([]);
    const spec = (await loadStateOrThrow(c.state)).guests.find((g) => g.name === 'guest2')!;
    expect(announced).toEqual([`${spec.mac} guestbr0 10.5.5.254`]);
    expect(arrived.notes).toContain('gateway 10.5.5.254 announced to guest guest2: recorded');
    // Nothing more to do on either side; node2 keeps saying it handed the guest over.
    expect(entry(await n1.cycle())).toMatchObject({ state: 'running' });
    expect(entry(await n2.cycle())).toMatchObject({ state: 'migrated', migration: { handedOver: true } });
    expect(n1.guests.history.filter((h) => h.startsWith('start guest2'))).toEqual([]);
    expect(announced).toHaveLength(1);
  });

  it('a failing migration leaves the guest on its source, is reported, and is retried with a new listener at most 3 times', async () => {
    const { c, n1, n2 } = await convergedPair('failing');
    n2.guests.failMigration.add('guest2');
    await placeGuest(c, 'guest2', 'node1');
    for (let attempt = 0; attempt < MAX_MIGRATION_ATTEMPTS; attempt++) {
      expect(entry(await n1.cycle())).toMatchObject({ incoming: { attempt } });
      const failed = await n2.cycle();
      expect(entry(failed)).toMatchObject({ state: 'running', migration: { to: 'node1', failures: attempt + 1, error: expect.stringMatching(/failed; it still runs here/) } });
      expect(failed.errors.join('\n')).toMatch(/guest guest2: migrate-out failed/);
      expect(runningOn(['node1', n1], ['node2', n2])).toEqual(['node2']);
    }
    const given = await n1.cycle();
    expect(entry(given)).toMatchObject({ state: 'waiting', detail: expect.stringMatching(/live migration from node2 failed 3 times .*keeps running on node2/) });
    expect(entry(await n2.cycle())).toMatchObject({ state: 'running', detail: expect.stringMatching(/^keep: placed on node1, but live migration failed 3 times/) });
    expect(n1.guests.history.filter((h) => h.startsWith('incoming'))).toHaveLength(MAX_MIGRATION_ATTEMPTS);
    expect(n2.guests.history.filter((h) => h.startsWith('migrate'))).toHaveLength(MAX_MIGRATION_ATTEMPTS);
    expect(runningOn(['node1', n1], ['node2', n2])).toEqual(['node2']);

    // Moved back in Git: node2 keeps it, its failures are forgotten, node1 has nothing.
    await placeGuest(c, 'guest2', 'node2');
    expect(entry(await n2.cycle())).toEqual({ name: 'guest2', state: 'running' });
    expect(entry(await n1.cycle())).toBeUndefined();
  });

  it('a dead source: the release starts the guest afresh in place of the waiting destination', async () => {
    const { c, n1, n2 } = await convergedPair('release');
    await placeGuest(c, 'guest2', 'node1');
    expect(entry(await n1.cycle())).toMatchObject({ incoming: { attempt: 0 } });
    // node2 dies (its qemu with it); the operator releases guest2 from it.
    n2.guests.guests.clear();
    await releaseGuest(n1.config.stateDir, 'guest2', 'node2');
    const started = await n1.cycle();
    expect(entry(started)).toMatchObject({ state: 'running', detail: 'started (the waiting destination replaced)' });
    expect(n1.guests.history.slice(-2)).toEqual(['stop guest2', 'start guest2']);
    expect(n1.guests.guests.get('guest2')?.incoming).toBeUndefined();
  });

  it('the review of a live move shows the listener on the destination and the migration on the source, in text and JSON', async () => {
    const c = await fakeLiveCluster(scratch, 'review');
    const base = await loadStateOrThrow(c.state);
    await placeGuest(c, 'guest2', 'node1');
    const head = await loadStateOrThrow(c.state);
    const plans = Object.fromEntries(
      ['node1', 'node2'].map((n) => {
        const view = resolveNode(head, n);
        return [n, planNode(view, liveAsApplied(resolveNode(base, n), view), reviewGates(base, view), { revision: 'head' })];
      }),
    );
    const port = migrationPort('guest2', new Set());
    expect(formatPlanText(plans.node1!)).toMatch(new RegExp(`\\+~ guest2: incoming \\(destination for node2's live migration listens at tcp:10\\.5\\.5\\.251:${port}`));
    expect(formatPlanText(plans.node2!)).toMatch(new RegExp(`~> guest2: migrate-out \\(placed on node1: live migration to tcp:10\\.5\\.5\\.251:${port}`));
    expect(planJson(plans.node2!)).toMatchObject({ changed: true, guests: { actions: [{ guest: 'guest2', action: 'migrate-out', to: 'node1', target: { host: '10.5.5.251', port } }] } });
  });
});
