// Shared by the NAT-mode namespace tests (test/modes-*.test.ts): the state-example cluster in
// another mode, brought up with the real lab topology, rulesets applied by cgw-sync itself.
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { expect } from 'vitest';
import { labDown, labNamespaces, labUp } from '../../src/lab/topology.js';
import { loadStateOrThrow } from '../../src/state/index.js';
import type { ClusterState, NatMode } from '../../src/state/types.js';
import { NftCli } from '../../src/nft/backend.js';
import { planNodeNft } from '../../src/reconcile/nft.js';
import { planToTransaction } from '../../src/plan/nft-plan.js';
import type { LabPlan } from '../../src/lab/plan.js';
import { runIn } from '../../src/netns/netns.js';
import { SettingsHost } from '../../src/settings/host.js';
import { conntrackdPaths, settingsDir } from '../../src/settings/model.js';
import type { ConntrackdPaths } from '../../src/settings/conntrackd.js';
import { resolveNode } from '../../src/render/node-view.js';
import { applyNodeSettings, planNodeSettings, type SettingsPlanned } from '../../src/settings/reconcile.js';

export const STATE_DIR = join(import.meta.dirname, '..', '..', 'state-example');

/** state-example/ switched to another mode (node1 gets natTag 1, node2 natTag 2). */
export async function stateInMode(mode: NatMode): Promise<ClusterState> {
  const s = await loadStateOrThrow(STATE_DIR);
  return {
    ...s,
    cluster: { ...s.cluster, nat: { ...s.cluster.nat, mode } },
    nodes: s.nodes.map((n, i) => ({ ...n, natTag: i + 1 })),
  };
}

export function nodeNft(ns: string): NftCli {
  return new NftCli({ prefix: ['ip', 'netns', 'exec', ns] });
}

/** Render, plan and apply every node's ruleset; afterwards each node must plan empty. */
export async function applyRulesets(state: ClusterState, plan: LabPlan): Promise<void> {
  for (const node of plan.nodes) {
    const nft = nodeNft(node.ns);
    const planned = await planNodeNft(state, node.name, nft);
    await nft.run(planToTransaction(planned.plan));
    const again = await planNodeNft(state, node.name, nft);
    if (again.plan.changes.length > 0) throw new Error(`${node.name} did not converge: ${JSON.stringify(again.plan.changes.map((c) => (c.action === 'update' ? c.chains.map((ch) => [ch.added, ch.removed]) : c.action)))}`);
  }
}

/** `conntrack -L` lines in a namespace that mention an address (empty when none). */
export async function conntrackEntries(ns: string, ip: string): Promise<string[]> {
  const r = await runIn(ns, 'conntrack', ['-L'], { stderr: 'ignore' } as never);
  return r.stdout.split('\n').filter((l) => l.includes(`=${ip} `));
}

/** Packets counted by a rule of a test-only table (nft list chain ... | counter packets N). */
export async function counterPackets(ns: string, table: string, chain: string): Promise<number[]> {
  const r = await runIn(ns, 'nft', ['list', 'chain', 'ip', table, chain]);
  return [...r.stdout.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
}

/** Plan and apply every node's settings (sysctls, conntrackd), each node's state dir dir/<node>; returns the plans. */
export async function applySettings(state: ClusterState, plan: LabPlan, dir: string): Promise<SettingsPlanned[]> {
  const plans: SettingsPlanned[] = [];
  for (const node of plan.nodes) {
    const host = nodeSettingsHost(node.ns);
    const view = resolveNode(state, node.name, join(dir, node.name));
    const planned = planNodeSettings(view.settings, await host.readLive(view.settings, view.conntrackdPaths), view.conntrackdPaths);
    await applyNodeSettings(planned, host);
    plans.push(planned);
  }
  return plans;
}

/** Where applySettings keeps a node's conntrackd files. */
export function nodeConntrackdPaths(dir: string, node: string): ConntrackdPaths {
  return conntrackdPaths(settingsDir(join(dir, node)));
}

export function nodeSettingsHost(ns: string): SettingsHost {
  return new SettingsHost({ prefix: ['ip', 'netns', 'exec', ns], netns: ns });
}

/** A lab topology (guests started) under a temporary run root, and a teardown that must leave no namespace. */
export async function testLab(state: ClusterState, opts: { prefix: string; brNetfilter: boolean }): Promise<{ plan: LabPlan; down: () => Promise<void> }> {
  const tmp = await mkdtemp(join(tmpdir(), 'cgw-lab-'));
  const down = async () => {
    await labDown(opts.prefix, { runRoot: tmp }).finally(() => rm(tmp, { recursive: true, force: true }));
    expect(await labNamespaces(opts.prefix)).toEqual([]);
  };
  try {
    return { plan: await labUp(state, { ...opts, runRoot: tmp }), down };
  } catch (e) {
    await down();
    throw e;
  }
}
