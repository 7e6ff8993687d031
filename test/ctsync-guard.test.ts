// ct-sync's guard (src/render/syncguard.ts) in the two-node lab with real conntrackd on each node:
// a guest runs its own conntrackd aimed at node1's sync port (the real protocol, so a forged
// message is well-formed) and announces an invented flow. With the guard node1 never learns it;
// with the guard's table removed on node1 (negative control) it does. Sync between the nodes
// still works: a cross-node forward's state reaches the guest's node.
// Namespaces: prefix cgwsg<pid>-; every conntrackd stopped by PID; all removed in afterAll.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterState } from '../src/state/types.js';
import type { LabPlan } from '../src/lab/plan.js';
import { labDown, labNamespaces, labUp } from '../src/lab/topology.js';
import { runIn } from '../src/netns/netns.js';
import { tcpProbe } from '../src/lab/probes.js';
import { parseReply } from '../src/lab/responder.js';
import { processAlive, terminate, waitUntil } from '../src/proc/process.js';
import { DEFAULT_SYNC_PORT } from '../src/settings/conntrackd.js';
import { applyRulesets, applySettings, conntrackEntries, nodeConntrackdPaths, nodeSettingsHost, stateInMode } from './helpers/modes-lab.js';
import { FORGED, forgeFlow, startRogue } from './helpers/rogue-sync.js';

const prefix = `cgwsg${process.pid}-`;
let tmp: string;
let plan: LabPlan;
let state: ClusterState;
const started: Array<{ pid: number; startTime: string | undefined }> = [];
const node = (name: string) => plan.nodes.find((n) => n.name === name)!;
const guest1 = () => plan.guests.find((x) => x.name === 'guest1')!;

async function forgedOnNode1(sport: number): Promise<boolean> {
  return (await conntrackEntries(node('node1').ns, FORGED.src)).some((l) => l.includes(`sport=${sport} `));
}

beforeAll(async () => {
  state = await stateInMode('ct-sync');
  tmp = await mkdtemp(join(tmpdir(), 'cgw-sg-'));
  plan = await labUp(state, { prefix, runRoot: tmp });
  await applyRulesets(state, plan);
  await applySettings(state, plan, tmp);
  for (const n of plan.nodes) {
    const rec = await nodeSettingsHost(n.ns).runningConntrackd(nodeConntrackdPaths(tmp, n.name));
    if (rec) started.push(rec);
  }
  started.push(await startRogue(guest1(), { unicastTo: node('node1').nodeIP }, tmp));
}, 60_000);

afterAll(async () => {
  try {
    for (const p of started) await terminate(p.pid, p.startTime, 3_000);
    await labDown(prefix, { runRoot: tmp });
  } finally {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
  expect(await labNamespaces(prefix)).toEqual([]);
  expect(started.filter((p) => processAlive(p.pid, p.startTime))).toEqual([]);
});

describe('ct-sync guard: only the nodes speak the sync protocol', () => {
  it('a guest\'s forged sync message is dropped: node1 never learns the flow', async () => {
    await forgeFlow(guest1(), 40001);
    // The rogue resends (FTFW retransmits unacknowledged messages); give it time to, then look.
    const learned = await waitUntil(() => forgedOnNode1(40001), 3_000, 200);
    expect(learned).toBe(false);
    const drops = await runIn(node('node1').ns, 'nft', ['list', 'table', 'bridge', 'cgw_sync']);
    expect(drops.stdout).toContain(`udp dport ${DEFAULT_SYNC_PORT} drop`);
  });

  it('sync between the nodes still works: a cross-node forward is answered through the guest\'s node', async () => {
    const r = await tcpProbe(plan.client.ns, node('node1').publicIP, 2202, { timeoutS: 5 });
    expect(r.ok, r.detail).toBe(true);
    expect(parseReply(r.reply!)).toEqual({ guest: 'guest2', from: plan.client.ip, via: 'tcp/22' });
    const entries = await conntrackEntries(node('node2').ns, plan.client.ip);
    expect(entries.some((l) => l.includes(`dst=${node('node1').publicIP}`) && l.includes('src=10.5.5.202')), entries.join('\n')).toBe(true);
  });

  it('negative control: without the guard table on node1 the same forged message creates the entry', async () => {
    await runIn(node('node1').ns, 'nft', ['delete', 'table', 'bridge', 'cgw_sync']);
    try {
      await forgeFlow(guest1(), 40002);
      expect(await waitUntil(() => forgedOnNode1(40002), 5_000, 100)).toBe(true);
    } finally {
      await applyRulesets(state, plan);
    }
  });
});
