// The rollout decisions on fakes (FakeNft, FakeSettings, FakeGuests, a fake health edge): the
// real cycle rolls a breaking revision back through the same applier and holds it; a suspended
// node (operator or Git) plans and reports but applies nothing; resume converges.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetworkProbe } from '../src/health/checks.js';
import { resumeNode, suspendNode } from '../src/rollout/suspend.js';
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
      probe: async (p: NetworkProbe) => (probed.push(p), open.has(p.port) ? { ok: true, detail: 'connected' } : { ok: false, detail: 'ECONNREFUSED' }),
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
