// `lab check`, reply paths: which node's uplink sends a guest's reply to a forward that entered
// another node. For one TCP forward per (entering node, guest node) pair, the client captures the
// forward's first data segment (the banner) while it connects and checks the frame's Ethernet
// source: it must be the uplink of the node replyLeavesThrough (src/lab/check.ts) names for the
// cluster's NAT mode. Not the SYN-ACK: in ct-sync a SYN-ACK that beats the state synchronisation is
// steered through the entering node on purpose (src/render/ctsync.ts); the data after it is not.
import { entersNode } from '../render/node-view.js';
import { execa } from 'execa';
import type { ClusterState } from '../state/types.js';
import { inNs } from '../netns/netns.js';
import type { LabNode, LabPlan } from './plan.js';
import { linkMac, replyLeavesThrough } from './check.js';
import { KILL_GRACE_MS, tcpProbe, type ProbeResult } from './probes.js';

export interface ReplyPathCheck {
  name: string;
  entering: LabNode;
  port: number;
  /** The node whose uplink must send the reply. */
  expected: LabNode;
}

/** Pure: one check per (entering node, other node running a TCP forward's guest). */
export function planReplyPathChecks(state: ClusterState, plan: LabPlan): ReplyPathCheck[] {
  const checks: ReplyPathCheck[] = [];
  const seen = new Set<string>();
  for (const entering of plan.nodes) {
    for (const f of state.forwards.filter((f) => f.protocol === 'tcp' && entersNode(f, entering.name))) {
      const guestNode = plan.nodes.find((n) => n.name === plan.guests.find((g) => g.name === f.target.guest)?.node);
      const pair = `${entering.name} ${guestNode?.name}`;
      if (!guestNode || guestNode === entering || seen.has(pair)) continue;
      seen.add(pair);
      const expected = replyLeavesThrough(state.cluster.nat, entering, guestNode);
      if (!expected) continue;
      checks.push({ name: `reply path: ${f.name} entering ${entering.name} (guest on ${guestNode.name}) is answered through ${expected.name}`, entering, port: f.port, expected });
    }
  }
  return checks;
}

/** Bound on tcpdump attaching its filter (an event it prints); a loaded machine takes seconds. */
const LISTENING_MS = 15_000;
/** How long tcpdump may take to print a captured packet after the probe has ended. */
const CAPTURE_GRACE_MS = 5_000;

/** Capture the first data segment at the client while connecting; compare its source MAC with the expected uplink. */
export async function runReplyPathCheck(c: ReplyPathCheck, plan: LabPlan, timeoutS = 5): Promise<ProbeResult> {
  const want = await linkMac({ ns: c.expected.ns, dev: c.expected.uplink });
  const filter = `tcp and src host ${c.entering.publicIP} and src port ${c.port} and tcp[tcpflags] & tcp-push != 0`;
  const [cmd, args] = inNs(plan.client.ns, 'tcpdump', ['-i', plan.client.dev, '-e', '-n', '-l', '-c', '1', filter]);
  // `-c 1` ends it at the captured SYN-ACK; the timeout covers its start, the probe and the probe's start.
  const dump = execa(cmd, args, { reject: false, timeout: LISTENING_MS + timeoutS * 1000 + KILL_GRACE_MS, encoding: 'utf8' });
  // tcpdump says "listening on ..." once its filter is attached: only then connect.
  const listening = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), LISTENING_MS);
    dump.stderr?.on('data', (d: Buffer) => {
      if (String(d).includes('listening on')) {
        clearTimeout(timer);
        resolve(true);
      }
    });
    void dump.then(() => resolve(false));
  });
  if (!listening) {
    dump.kill();
    return { name: c.name, ok: false, detail: `tcpdump did not start: ${String((await dump).stderr).trim()}` };
  }
  const probe = await tcpProbe(plan.client.ns, c.entering.publicIP, c.port, { timeoutS });
  // A SYN-ACK came during the probe, if at all: tcpdump gets a moment to print it, then stops.
  const stop = setTimeout(() => dump.kill(), CAPTURE_GRACE_MS);
  const out = await dump;
  clearTimeout(stop);
  const mac = /^\S+ ((?:[0-9a-f]{2}:){5}[0-9a-f]{2}) >/m.exec(String(out.stdout))?.[1];
  if (!mac) return { name: c.name, ok: false, detail: `no data segment captured (probe: ${probe.detail})` };
  const owner = await Promise.all(plan.nodes.map(async (n) => ((await linkMac({ ns: n.ns, dev: n.uplink })) === mac ? n.name : undefined)));
  const from = owner.find((x) => x) ?? 'an unknown host';
  return mac === want
    ? { name: c.name, ok: true, detail: `data from ${mac} (${from}'s uplink)` }
    : { name: c.name, ok: false, detail: `data from ${mac} (${from}), wanted ${want} (${c.expected.name}'s uplink)` };
}

export async function runReplyPathChecks(state: ClusterState, plan: LabPlan, timeoutS?: number): Promise<ProbeResult[]> {
  return Promise.all(planReplyPathChecks(state, plan).map((c) => runReplyPathCheck(c, plan, timeoutS)));
}
