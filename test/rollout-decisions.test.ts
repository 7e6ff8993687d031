// The rollout decisions on fakes (FakeNft, FakeSettings, FakeGuests, a fake health edge): the
// real cycle rolls a breaking revision back through the same applier and holds it; a suspended
// node (operator or Git) plans and reports but applies nothing; resume converges; a change
// window holds a new revision and, under its policy, drift corrections.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetworkProbe } from '../src/health/checks.js';
import { resumeNode, suspendNode } from '../src/rollout/suspend.js';
import { windowGate, type ChangeWindow } from '../src/rollout/windows.js';
import { loadState } from '../src/state/load.js';
import { formatDiagnostics } from '../src/state/diagnostics.js';
import { fakeCluster, fakeNode } from './helpers/fake-node.js';

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-rollout-'));
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const edit = async (file: string, fn: (t: string) => string) => writeFile(file, fn(await readFile(file, 'utf8')));
const OWNED = [{ family: 'ip' as const, name: 'cgw_nat' }, { family: 'netdev' as const, name: 'cgw_arp' }];

/** Answers only these ports on guest addresses; the gateway IP is always on the bridge. */
function fakeEdge(open: Set<number>) {
  const probed: NetworkProbe[] = [];
  return {
    probed,
    edge: {
      probe: async (p: NetworkProbe) => {
        probed.push(p);
        return open.has(p.port) ? { ok: true, detail: 'connected' } : { ok: false, detail: 'ECONNREFUSED' };
      },
      addresses: async () => ['10.5.5.254'],
    },
  };
}

describe('rollback on fakes', () => {
  it('restores the previous tables in one more transaction, holds the revision, tries the next one', async () => {
    const c = await fakeCluster(scratch, 'rollback');
    await edit(path.join(c.state, 'cluster.yaml'), (t) => `${t}health:\n  windowSeconds: 1\n`);
    const ssh = path.join(c.state, 'forwards', 'ssh.yaml');
    await edit(ssh, (t) => t.replace('target: { guest: guest1, port: 22 }', 'target: { guest: guest1, port: 22 }\n    health: { type: tcp }'));
    const { edge, probed } = fakeEdge(new Set([22]));
    const n = fakeNode(c, 'node1', {}, { health: edge });
    const first = await n.cycle();
    expect(first).toMatchObject({ outcome: 'applied', health: { state: 'healthy' } });
    const good = await n.nft.list(OWNED);

    await edit(ssh, (t) => t.replace('port: 22 }\n    health', 'port: 2222 }\n    health'));
    const rolled = await n.cycle();
    expect(rolled).toMatchObject({ outcome: 'rolled-back', appliedRevision: first.appliedRevision, rollback: { ok: true, failing: [{ name: 'forward ssh-guest1', detail: 'ECONNREFUSED' }] } });
    // Before the apply the previous revision's check (port 22) was run; after it, the new one's.
    expect(probed.map((p) => p.port)).toEqual([22, 22, 2222, 22]);
    expect(n.nft.history).toHaveLength(3);
    expect(await n.nft.list(OWNED)).toEqual(good);

    const held = await n.cycle();
    expect(held).toMatchObject({ outcome: 'converged', held: { revision: rolled.rollback!.revision } });
    expect(n.nft.history).toHaveLength(3);

    await edit(ssh, (t) => t.replace('port: 2222 }', 'port: 22 }').replace('port: 2201', 'port: 2299'));
    expect(await n.cycle()).toMatchObject({ outcome: 'applied', health: { state: 'healthy' } });
    expect(n.nft.history).toHaveLength(4);
  });
});

describe('the bridge read by the health checks', () => {
  it('is read once per cycle of the running agent, before the apply and after it', async () => {
    const c = await fakeCluster(scratch, 'bridge-once');
    let reads = 0;
    const edge = {
      probe: async () => ({ ok: true, detail: 'connected' }),
      addresses: async () => {
        reads++;
        return ['10.5.5.254'];
      },
    };
    const n = fakeNode(c, 'node1', {}, { health: edge, carry: { unsaved: false } });
    expect(await n.cycle()).toMatchObject({ outcome: 'applied', health: { state: 'healthy' } });
    expect(reads).toBe(1);
    // A new revision: the previous one's checks before the apply, the new one's after it, one read.
    await edit(path.join(c.state, 'forwards', 'ssh.yaml'), (t) => t.replace('port: 2201', 'port: 2299'));
    expect(await n.cycle()).toMatchObject({ outcome: 'applied', health: { state: 'healthy' } });
    expect(reads).toBe(2);
  });

  it('a new gateway address missing from what the running agent remembers is read again at once, not rolled back', async () => {
    const c = await fakeCluster(scratch, 'bridge-fresh');
    const onBridge = ['10.5.5.251', '10.5.5.254'];
    let reads = 0;
    const edge = {
      probe: async () => ({ ok: true, detail: 'connected' }),
      addresses: async () => {
        reads++;
        const seen = [...onBridge];
        // The operator puts the new gateway on the bridge right after the check before the apply read it.
        if (reads === 2) onBridge.push('10.5.5.253');
        return seen;
      },
    };
    const n = fakeNode(c, 'node1', {}, { health: edge, carry: { unsaved: false } });
    expect(await n.cycle()).toMatchObject({ outcome: 'applied', health: { state: 'healthy' } });
    // The state moves the gateway.
    await edit(path.join(c.state, 'cluster.yaml'), (t) => t.replace('gatewayIP: 10.5.5.254', 'gatewayIP: 10.5.5.253'));
    const moved = await n.cycle();
    expect(moved).toMatchObject({ outcome: 'applied', health: { state: 'healthy' } });
    expect(moved.rollback).toBeUndefined();
    // Before the apply the previous gateway was checked; after it the new one, missing from what
    // was remembered, on a read made then.
    expect(reads).toBe(3);
  });
});

describe('suspend', () => {
  it('an operator suspension: planned and reported, nothing applied; resume converges', async () => {
    const c = await fakeCluster(scratch, 'suspend');
    const n = fakeNode(c, 'node1', {}, { health: fakeEdge(new Set()).edge });
    await n.cycle();
    await suspendNode(n.config.stateDir, { reason: 'disk swap', by: 'alice', since: '2026-11-30T15:00:00Z' });
    await edit(path.join(c.state, 'forwards', 'ssh.yaml'), (t) => t.replace('port: 2201', 'port: 2299'));
    const s = await n.cycle();
    expect(s).toMatchObject({ outcome: 'suspended', suspended: { reason: 'disk swap', by: 'alice' }, plan: { changed: true } });
    expect(n.nft.history).toHaveLength(1);
    const published = await n.published();
    expect(published?.suspended?.reason).toBe('disk swap');
    expect(await resumeNode(n.config.stateDir)).toBe(true);
    expect(await n.cycle()).toMatchObject({ outcome: 'applied' });
    expect(n.nft.history).toHaveLength(2);
  });

  it('a fleet suspension in Git holds every node until it is lifted', async () => {
    const c = await fakeCluster(scratch, 'suspend-git');
    const cluster = path.join(c.state, 'cluster.yaml');
    await edit(cluster, (t) => `${t}suspend: { reason: "change freeze" }\n`);
    const n = fakeNode(c, 'node2', {}, { health: fakeEdge(new Set()).edge });
    const s = await n.cycle();
    expect(s).toMatchObject({ outcome: 'suspended', suspended: { reason: 'change freeze', by: 'cluster.yaml in the state' } });
    expect(n.nft.history).toHaveLength(0);
    await edit(cluster, (t) => t.replace('suspend: { reason: "change freeze" }\n', ''));
    expect(await n.cycle()).toMatchObject({ outcome: 'applied' });
  });
});

describe('change windows', () => {
  const at = (iso: string) => new Date(iso);
  const deny = (schedule: string, durationMinutes: number): ChangeWindow => ({ kind: 'deny', schedule, durationMinutes, drift: 'correct' });

  it('opens a window at its cron time for its duration, UTC', () => {
    const nightly: ChangeWindow = { kind: 'allow', schedule: '0 22 * * *', durationMinutes: 120, drift: 'report' };
    expect(windowGate([nightly], at('2026-11-30T22:30:00Z'))).toEqual({ open: true });
    expect(windowGate([nightly], at('2026-12-01T00:00:00Z'))).toEqual({ open: false, reason: 'waiting for window: outside the allow windows; the next opens at 2026-12-01T22:00:00.000Z', drift: 'report' });
    expect(windowGate([nightly, deny('0 23 * * *', 30)], at('2026-11-30T23:10:00Z'))).toEqual({ open: false, reason: 'waiting for window: deny window "0 23 * * *" is active until 2026-11-30T23:30:00.000Z', drift: 'correct' });
    expect(windowGate([nightly, deny('0 23 * * *', 30)], at('2026-11-30T23:30:00Z'))).toEqual({ open: true });
    expect(windowGate([], at('2026-11-30T12:00:00Z'))).toEqual({ open: true });
  });

  it('a deny window holds a new revision; drift is reported under its policy; the revision goes once the window is gone', async () => {
    const c = await fakeCluster(scratch, 'window');
    const cluster = path.join(c.state, 'cluster.yaml');
    const n = fakeNode(c, 'node1', {}, { health: fakeEdge(new Set()).edge });
    expect(await n.cycle()).toMatchObject({ outcome: 'applied' });
    // Opens every minute for an hour: always active.
    await edit(cluster, (t) => `${t}windows:\n  - { kind: deny, schedule: "* * * * *", durationMinutes: 60, drift: report }\n`);
    const waiting = await n.cycle();
    expect(waiting).toMatchObject({ outcome: 'converged', window: { drift: 'report', waiting: expect.stringMatching(/^waiting for window: deny window "\* \* \* \* \*" is active until /) } });
    expect(n.nft.history).toHaveLength(1);
    n.nft.edit((t) => t.delete('netdev cgw_arp'));
    expect(await n.cycle()).toMatchObject({ outcome: 'drift-reported', drift: { corrected: false } });
    expect(n.nft.history).toHaveLength(1);
    await edit(cluster, (t) => t.replace(/windows:\n.*\n/, ''));
    expect(await n.cycle()).toMatchObject({ outcome: 'applied', drift: { corrected: true } });
  });

  it('a schedule cron does not understand is a state error with its position', async () => {
    const c = await fakeCluster(scratch, 'window-bad');
    await edit(path.join(c.state, 'cluster.yaml'), (t) => `${t}windows:\n  - { kind: allow, schedule: "61 * * * *", durationMinutes: 10 }\n`);
    expect(formatDiagnostics((await loadState(c.state)).diagnostics)).toMatch(/^cluster\.yaml:\d+:\d+: windows\[0\]\.schedule: not a cron schedule/m);
  });
});
