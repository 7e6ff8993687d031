// `lab check`: the probes that tell whether the lab behaves as the state intends.
//   - every forward, from the client, on every node it enters: the answer must come from the target
//     guest's service and name the source address the guest saw (per NAT mode: forwardSourceSeen);
//   - from every guest, a connection to the client (casual outbound): the client must see the
//     guest's node's public IP as the source (outboundSourceSeen);
//   - from every guest, ARP for the gateway IP: only its own node's guest bridge may answer.
// planChecks is pure; runChecks runs them.
import { entersNode } from '../render/node-view.js';
import type { ClusterSettings, ClusterState, ForwardSpec } from '../state/types.js';
import { runIn } from '../netns/netns.js';
import type { LabNode, LabPlan, NsDev } from './plan.js';
import { arpProbe, httpProbe, ndpProbe, tcpProbe, udpProbe, type ProbeResult } from './probes.js';
import { ipv6Checks } from './ipv6-check.js';
import { vmArpProbe, vmTcpProbe } from './guest-exec.js';

export type LabCheck =
  | {
      kind: 'http' | 'tcp' | 'udp';
      name: string;
      /** Namespace the probe runs in (the client, or a guest for outbound checks). */
      ns: string;
      ip: string;
      port: number;
      /** The answer must contain this (the responder's whole answer, or a pattern of it). */
      expect: string | RegExp;
      /** Run inside this VM guest (its serial shell socket) instead of namespace ns. */
      vm?: string;
    }
  | NeighbourCheck<'arp'>
  | NeighbourCheck<'ndp'>;

/** arp: ARP for an IPv4 address; ndp: neighbour solicitation for an IPv6 one (src/lab/ipv6-check.ts). */
interface NeighbourCheck<K extends 'arp' | 'ndp'> {
  kind: K;
  name: string;
  ns: string;
  dev: string;
  ip: string;
  /** The only interface whose MAC may answer, or the only MAC (the shared gateway MAC). */
  answeredBy: NsDev | { mac: string };
  vm?: string;
}

export function planChecks(state: ClusterState, plan: LabPlan): LabCheck[] {
  const checks: LabCheck[] = [];
  for (const node of plan.nodes) {
    for (const f of state.forwards.filter((f) => entersNode(f, node.name))) {
      checks.push(forwardCheck(state, plan, node, f));
    }
  }
  for (const g of plan.guests) {
    const node = plan.nodes.find((n) => n.name === g.node)!;
    const from = outboundSourceSeen(state.cluster.nat, node);
    checks.push({
      kind: 'tcp',
      name: `outbound: ${g.name} (on ${node.name}) -> client ${plan.client.ip}:22`,
      ns: g.ns,
      ip: plan.client.ip,
      port: 22,
      expect: from !== undefined ? `this is client OK from ${from} via tcp/22` : /^this is client OK from \S+ via tcp\/22$/,
      vm: g.vm?.serial,
    });
    checks.push({
      kind: 'arp',
      name: `arp ${state.cluster.gatewayIP} from ${g.name}: ${gatewayAnswer(state, node)}`,
      ns: g.ns,
      dev: g.dev,
      ip: state.cluster.gatewayIP,
      answeredBy: gatewayAnswerer(state, node),
      vm: g.vm?.serial,
    });
  }
  return [...checks, ...ipv6Checks(state, plan)];
}

/** Who answers ARP/NDP for the gateway to a guest on `node`: its guest bridge, or only the shared gateway MAC (cluster gatewayMAC). */
export function gatewayAnswerer(state: ClusterState, node: LabNode): NeighbourCheck<'arp'>['answeredBy'] {
  return state.cluster.gatewayMAC !== undefined ? { mac: state.cluster.gatewayMAC } : { ns: node.ns, dev: node.guestBridge };
}

/** The check's name for that answer. */
export function gatewayAnswer(state: ClusterState, node: LabNode): string {
  return state.cluster.gatewayMAC !== undefined ? "only the shared gateway MAC answers" : `only ${node.name} answers`;
}

async function answerMac(a: NeighbourCheck<'arp'>['answeredBy']): Promise<string> {
  return 'mac' in a ? a.mac : linkMac(a);
}

export function forwardCheck(state: ClusterState, plan: LabPlan, node: LabNode, f: ForwardSpec): LabCheck {
  const guest = f.target.guest;
  // The responder serves HTTP on 80 and answers any other TCP port it listens on with a banner.
  const kind = f.protocol === 'udp' ? 'udp' : f.target.port === 80 ? 'http' : 'tcp';
  const via = `${kind}/${f.target.port}`;
  const from = forwardSourceSeen(state.cluster.nat, node, plan.client);
  const expect = from !== undefined ? `this is ${guest} OK from ${from} via ${via}` : new RegExp(`^this is ${guest} OK from \\S+ via ${via}$`);
  return {
    kind,
    name: `${f.name}: ${f.protocol} ${node.publicIP.includes(':') ? `[${node.publicIP}]` : node.publicIP}:${f.port} (${node.name}) -> ${guest}:${f.target.port}`,
    ns: plan.client.ns,
    ip: node.publicIP,
    port: f.port,
    expect,
  };
}

// --- Expectations per NAT mode ----------------------------------------------------------------
// The only place that knows which source address each side sees in each mode. undefined means
// "not predictable here": any source is accepted, the guest (or client) must still answer.

/** The source address a guest sees for a forwarded flow that entered node `entering`. */
export function forwardSourceSeen(nat: ClusterSettings['nat'], entering: LabNode, client: LabPlan['client']): string | undefined {
  switch (nat.mode) {
    case 'full-nat':
      // SNAT to the entering node's guest-bridge IP; without it (the negative control) DNAT only.
      return nat.forwardSnat ? entering.nodeIP : client.ip;
    case 'ct-sync':
      return client.ip; // DNAT only; the connection state is shared between the nodes
    case 'stateless-nat':
      return client.ip; // rewritten without state, the client address untouched (docs/nat-modes.md)
  }
}

/**
 * The node whose uplink sends a guest's (translated) reply to a forward that entered `entering`
 * (src/lab/reply-path.ts); undefined when no translated reply is promised.
 */
export function replyLeavesThrough(nat: ClusterSettings['nat'], entering: LabNode, guestNode: LabNode): LabNode | undefined {
  switch (nat.mode) {
    case 'full-nat':
      // With the forward SNAT the guest answers the entering node; without it (the negative
      // control) cross-node forwards get no translated reply at all.
      return nat.forwardSnat ? entering : undefined;
    case 'ct-sync':
    case 'stateless-nat':
      return guestNode; // the guest's own gateway; translated there (docs/nat-modes.md)
  }
}

/** The source address the client sees for a guest's own connection out (casual outbound). */
export function outboundSourceSeen(_nat: ClusterSettings['nat'], guestNode: LabNode): string | undefined {
  // Every mode SNATs traffic from the guest subnet leaving through the uplink to the public IP
  // of the node the guest runs on.
  return guestNode.publicIP;
}

export async function runCheck(c: LabCheck, timeoutS?: number): Promise<ProbeResult> {
  if (c.vm !== undefined) {
    if (c.kind === 'ndp') throw new Error(`${c.name}: NDP probes do not run inside a VM`);
    if (c.kind === 'arp') return vmArpProbe(c.vm, c.dev, c.ip, { name: c.name, expectMacs: [await answerMac(c.answeredBy)], timeoutS });
    if (c.kind === 'tcp') return vmTcpProbe(c.vm, c.ip, c.port, { name: c.name, expect: c.expect, timeoutS });
    throw new Error(`${c.name}: ${c.kind} probes do not run inside a VM`);
  }
  switch (c.kind) {
    case 'http':
      return httpProbe(c.ns, c.ip, c.port, { name: c.name, expect: c.expect, timeoutS });
    case 'tcp':
      return tcpProbe(c.ns, c.ip, c.port, { name: c.name, expect: c.expect, timeoutS });
    case 'udp':
      return udpProbe(c.ns, c.ip, c.port, { name: c.name, expect: c.expect, timeoutS });
    case 'arp':
      return arpProbe(c.ns, c.dev, c.ip, { name: c.name, expectMacs: [await answerMac(c.answeredBy)], timeoutS });
    case 'ndp':
      return ndpProbe(c.ns, c.dev, c.ip, { name: c.name, expectMacs: [await answerMac(c.answeredBy)], timeoutS });
  }
}

/**
 * Run all checks; the network probes in parallel (each is bounded), at most `concurrency` at once
 * when given (each probe is a process), results in check order.
 */
export async function runChecks(checks: LabCheck[], timeoutS?: number, concurrency = checks.length): Promise<ProbeResult[]> {
  const results: ProbeResult[] = new Array(checks.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < checks.length; i = next++) results[i] = await runCheck(checks[i]!, timeoutS);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, checks.length)) }, worker));
  return results;
}

export async function linkMac(l: NsDev): Promise<string> {
  const r = await runIn(l.ns, 'ip', ['-j', 'link', 'show', 'dev', l.dev]);
  const mac = (JSON.parse(r.stdout) as Array<{ address?: string }>)[0]?.address;
  if (!mac) throw new Error(`no MAC address on ${l.dev} in ${l.ns}`);
  return mac.toLowerCase();
}

/** One line per result, for the `lab check` command: "ok   <name>: <detail>" or "FAIL <name>: <detail>". */
export function formatResults(results: ProbeResult[]): string {
  return results.map((r) => `${r.ok ? 'ok  ' : 'FAIL'} ${r.name}: ${r.detail}`).join('\n');
}
