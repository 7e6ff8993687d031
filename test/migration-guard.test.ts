// The live-migration guard (src/render/migration-guard.ts) against the real nft in the two-node
// lab topology (netns guests): a listener stands where a destination qemu would (node2's
// guest-bridge IP, the guest's migration port). With the guard, a guest can reach it neither on
// its own node's bridge nor through the trunk from the other node, while node1 (the source a
// migration comes from) still can; with the guard's table removed (negative control) the guest
// connects. The rendered table converges (the port range reads back as rendered).
// Namespaces: prefix cgwmg<pid>-; the listener stopped by PID; all removed in afterAll.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterState } from '../src/state/types.js';
import type { LabPlan } from '../src/lab/plan.js';
import { labDown, labNamespaces, labUp } from '../src/lab/topology.js';
import { runIn } from '../src/netns/netns.js';
import { tcpProbe } from '../src/lab/probes.js';
import { processAlive, processStartTime, terminate, waitUntil } from '../src/proc/process.js';
import { migrationPort } from '../src/reconcile/live-migration.js';
import { applyRulesets, stateInMode } from './helpers/modes-lab.js';

const prefix = `cgwmg${process.pid}-`;
const BANNER = 'migration stream';
let tmp: string;
let plan: LabPlan;
let state: ClusterState;
let listener: { pid: number; startTime: string | undefined } | undefined;
const node = (name: string) => plan.nodes.find((n) => n.name === name)!;
const guestNs = (name: string) => plan.guests.find((g) => g.name === name)!.ns;
const port = migrationPort('guest2', new Set());
const node2IP = () => state.nodes.find((n) => n.name === 'node2')!.guestBridge.nodeIP;

/** Whether namespace ns gets the listener's banner from node2's migration port. */
async function reaches(ns: string): Promise<boolean> {
  const r = await tcpProbe(ns, node2IP(), port, { timeoutS: 2 });
  return r.ok && r.reply === BANNER;
}

beforeAll(async () => {
  const s = await stateInMode('full-nat');
  state = { ...s, guests: s.guests.map((g) => (g.name === 'guest2' ? { ...g, migration: 'live' as const } : g)) };
  tmp = await mkdtemp(join(tmpdir(), 'cgw-mg-'));
  plan = await labUp(state, { prefix, runRoot: tmp });
  await applyRulesets(state, plan);
  // A stand-in for a destination qemu: listens on node2's guest-bridge IP, greets and closes.
  const program = `require('node:net').createServer((c) => c.end(${JSON.stringify(BANNER)})).listen(${port}, ${JSON.stringify(node2IP())})`;
  const child = spawn('ip', ['netns', 'exec', node('node2').ns, process.execPath, '-e', program], { detached: true, stdio: 'ignore' });
  child.unref();
  listener = { pid: child.pid!, startTime: processStartTime(child.pid!) };
  const up = await waitUntil(() => reaches(node('node2').ns), 10_000, 100);
  if (!up) throw new Error('the stand-in listener did not come up');
}, 60_000);

afterAll(async () => {
  try {
    if (listener) await terminate(listener.pid, listener.startTime, 3_000);
    await labDown(prefix, { runRoot: tmp });
  } finally {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
  expect(await labNamespaces(prefix)).toEqual([]);
  expect(listener && processAlive(listener.pid, listener.startTime)).toBe(false);
});

describe('live-migration guard: only the nodes reach a destination qemu', () => {
  it('the other node (the migration source) reaches the port through the trunk', async () => {
    expect(await reaches(node('node1').ns)).toBe(true);
  });

  it("a guest's connection to the port is dropped, from the destination's own bridge and through the trunk", async () => {
    expect(await reaches(guestNs('guest2'))).toBe(false); // on node2's bridge
    expect(await reaches(guestNs('guest1'))).toBe(false); // on node1, through the trunk
    const listed = await runIn(node('node2').ns, 'nft', ['list', 'table', 'bridge', 'cgw_migration']);
    expect(listed.stdout).toMatch(/iifname != \{ .* \} ip daddr \{ 10\.5\.5\.251, 10\.5\.5\.252 \} tcp dport 47100-47355 drop/);
  });

  it('negative control: without the guard tables the guests connect', async () => {
    for (const n of plan.nodes) await runIn(n.ns, 'nft', ['delete', 'table', 'bridge', 'cgw_migration']);
    try {
      expect(await reaches(guestNs('guest2'))).toBe(true);
      expect(await reaches(guestNs('guest1'))).toBe(true);
    } finally {
      await applyRulesets(state, plan);
    }
    expect(await reaches(guestNs('guest1'))).toBe(false);
  });
});
