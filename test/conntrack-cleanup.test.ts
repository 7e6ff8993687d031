// Stale conntrack entries after a forward is retargeted, in the two-node lab (full-nat), applied
// through planNode + applyNodePlan as the agent does. A client sends to node1:1231 (ntp-guest1)
// and node1:1232 (ntp-guest2) every 100 ms, each from one source port.
//   negative control: retargeted without the cleanup step, 1231 keeps reaching guest1;
//   with it: the first reply after the apply comes from guest2, exactly one entry went, and the
//   1232 flow's entry is untouched.
// Namespaces: prefix cgwcc<pid>-, removed in afterAll with the sender (stopped by PID).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterState } from '../src/state/types.js';
import type { LabNode, LabPlan } from '../src/lab/plan.js';
import { labDown, labNamespaces, labUp } from '../src/lab/topology.js';
import { resolveNode } from '../src/render/node-view.js';
import { readLiveNode } from '../src/reconcile/live.js';
import { planNode } from '../src/plan/plan.js';
import { applyNodePlan, applyNotes } from '../src/reconcile/apply.js';
import { ConntrackCli } from '../src/conntrack/cli.js';
import { waitUntil } from '../src/proc/process.js';
import { runIn } from '../src/netns/netns.js';
import { applyRulesets, nodeNft, nodeSettingsHost, stateInMode } from './helpers/modes-lab.js';
import { startUdpSender, type UdpSender } from './helpers/udp-sender.js';

const prefix = `cgwcc${process.pid}-`;
let tmp: string;
let plan: LabPlan;
let base: ClusterState;
let sender: UdpSender | undefined;
const node1 = (): LabNode => plan.nodes.find((n) => n.name === 'node1')!;

/** ntp-guest1 pointed at another guest. */
const withNtp1At = (guest: string): ClusterState => ({ ...base, forwards: base.forwards.map((f) => (f.name === 'ntp-guest1' ? { ...f, target: { ...f.target, guest } } : f)) });

/** Plan and apply node1 as the agent does; with `cleanup`, stale entries are deleted in node1's namespace. */
async function planNode1(state: ClusterState) {
  const n = node1();
  const view = resolveNode(state, n.name, join(tmp, n.name));
  return planNode(view, await readLiveNode(view, { nft: nodeNft(n.ns), settings: nodeSettingsHost(n.ns), guests: 'not planned in this test' }));
}

async function applyNode1(state: ClusterState, cleanup: boolean) {
  const n = node1();
  const p = await planNode1(state);
  const result = await applyNodePlan(p, { nft: nodeNft(n.ns), settings: nodeSettingsHost(n.ns), ...(cleanup && { conntrack: new ConntrackCli({ prefix: ['ip', 'netns', 'exec', n.ns] }) }) });
  expect(result.nft.status).toBe('done');
  return { plan: p, result, appliedAt: Date.now() };
}

/** Replies to a port that came after a moment. */
const repliesAfter = (port: number, t: number) => sender!.replies.filter((r) => r.port === port && r.at > t);
const guestOf = (text: string) => /this is (\S+) OK/.exec(text)?.[1];

/** node1's entries of the 1232 flow, without the timeout column (it counts down). */
/**
 * The 1232 flow's entries by identity: the kernel's entry id and both tuples. The timeout and the
 * status flags ([ASSURED] once the flow has seen replies) change while the flow lives; a deleted and
 * re-created entry gets a new id.
 */
async function entries1232(): Promise<string[]> {
  const r = await runIn(node1().ns, 'conntrack', ['-L', '-p', 'udp', '--orig-port-dst', '1232', '-o', 'id'], { stderr: 'ignore' } as never);
  return r.stdout
    .split('\n')
    .filter((l) => l.includes('dport=1232'))
    .map((l) => l.split(/\s+/).filter((t) => /^(id|src|dst|sport|dport)=/.test(t)).join(' '));
}

beforeAll(async () => {
  base = await stateInMode('full-nat');
  tmp = await mkdtemp(join(tmpdir(), 'cgw-cc-'));
  plan = await labUp(base, { prefix, runRoot: tmp });
  await applyRulesets(base, plan);
  sender = startUdpSender(plan.client.ns, node1().publicIP, [1231, 1232], 100);
  const flowing = await waitUntil(() => repliesAfter(1231, 0).length >= 3 && repliesAfter(1232, 0).length >= 3, 10_000);
  if (!flowing) throw new Error(`the UDP sender got no replies: ${JSON.stringify(sender.replies.slice(-3))}`);
}, 60_000);

afterAll(async () => {
  try {
    await sender?.stop();
    await labDown(prefix, { runRoot: tmp });
  } finally {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
  expect(await labNamespaces(prefix)).toEqual([]);
});

describe('conntrack cleanup after a forward is retargeted (UDP, one source port, every 100 ms)', () => {
  it('before: the flow reaches guest1', () => {
    expect(repliesAfter(1231, 0).map((r) => guestOf(r.text)).slice(-3)).toEqual(['guest1', 'guest1', 'guest1']);
  });

  it('negative control: without the cleanup step the existing flow keeps reaching the old guest', async () => {
    const { plan: p, result, appliedAt } = await applyNode1(withNtp1At('guest2'), false);
    // The plan names the stale forward either way; this applier was given no conntrack port.
    expect(p.conntrack.map((s) => `${s.forward} ${s.from.ip} -> ${s.to?.ip}`)).toEqual(['ntp-guest1 10.5.5.201 -> 10.5.5.202']);
    expect(result.conntrack.cleaned).toEqual([]);
    expect(await waitUntil(() => repliesAfter(1231, appliedAt).length >= 15, 10_000)).toBe(true);
    const seen = new Set(repliesAfter(1231, appliedAt).map((r) => guestOf(r.text)));
    expect([...seen]).toEqual(['guest1']);
    // Back to guest1 (the flow never left it), so the next apply retargets a live flow again.
    const back = await applyNode1(base, false);
    expect(back.plan.conntrack.map((s) => s.forward)).toEqual(['ntp-guest1']);
  });

  it('with the cleanup step the flow reaches the new guest at once; only its entry is deleted', async () => {
    const before1232 = await entries1232();
    expect(before1232).toHaveLength(1);
    expect(before1232[0]).toMatch(/\bid=\d+/);
    const t0 = Date.now();
    const { result, appliedAt } = await applyNode1(withNtp1At('guest2'), true);
    expect(result.conntrack.errors).toEqual([]);
    expect(result.conntrack.cleaned.map((c) => ({ forward: c.forward, deleted: c.deleted }))).toEqual([{ forward: 'ntp-guest1', deleted: 1 }]);
    expect(applyNotes(result)).toEqual(['conntrack: forward ntp-guest1 (udp 192.168.122.11:1231): entries to 10.5.5.201:123 (now 10.5.5.202:123): 1 deleted']);
    // Within one send interval or two of the apply, and nothing from guest1 after the first guest2 reply.
    expect(await waitUntil(() => repliesAfter(1231, appliedAt).length >= 5, 5_000)).toBe(true);
    const after = repliesAfter(1231, appliedAt);
    const firstNew = after.find((r) => guestOf(r.text) === 'guest2');
    expect(firstNew, JSON.stringify(after)).toBeDefined();
    console.log(`conntrack cleanup: apply took ${appliedAt - t0} ms; first reply from guest2 ${firstNew!.at - appliedAt} ms after it`);
    expect(firstNew!.at - appliedAt).toBeLessThan(1_000);
    expect(after.filter((r) => r.at > firstNew!.at).map((r) => guestOf(r.text))).not.toContain('guest1');
    // The other forward's flow kept its entry (same original tuple: not re-created).
    expect(await entries1232()).toEqual(before1232);
    expect(repliesAfter(1232, appliedAt).map((r) => guestOf(r.text))).not.toContain('guest1');
  });

  it('planned again, the converged node has nothing stale', async () => {
    const again = await planNode1(withNtp1At('guest2'));
    expect(again.nft.plan.changes).toEqual([]);
    expect(again.conntrack).toEqual([]);
  });
});
