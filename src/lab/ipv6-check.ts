// `lab check` in a dual-stack lab: the IPv4 checks again over IPv6 (every forward on every node it
// enters, to a guest with an IPv6 address; every guest's casual outbound), and neighbour discovery
// for both shared gateway addresses (global and link-local) from every guest, which only the
// guest's own node may answer (the trunks drop NDP for them). Netns guests only: the lab's VMs
// are IPv4 only. Pure (planning only); check.ts runs them.
import { entersNode } from '../render/node-view.js';
import { gatewayIPv6Addresses } from '../render/ipv6.js';
import type { ClusterState } from '../state/types.js';
import { forwardCheck, gatewayAnswer, gatewayAnswerer, outboundSourceSeen, type LabCheck } from './check.js';
import type { LabNode, LabPlan } from './plan.js';

/** The node as IPv6 sees it: its IPv6 addresses where the IPv4 ones are. */
function asIPv6(node: LabNode): LabNode | undefined {
  return node.publicIPv6 && node.nodeIPv6 ? { ...node, publicIP: node.publicIPv6, nodeIP: node.nodeIPv6 } : undefined;
}

export function ipv6Checks(state: ClusterState, plan: LabPlan): LabCheck[] {
  const clientIPv6 = plan.client.ipv6;
  if (!state.cluster.ipv6 || !clientIPv6) return [];
  const plan6: LabPlan = { ...plan, client: { ...plan.client, ip: clientIPv6 } };
  const netnsGuests = plan.guests.filter((g) => g.ipv6 !== undefined && !g.vm);
  const reachable = new Set(netnsGuests.map((g) => g.name));
  const checks: LabCheck[] = [];
  for (const node of plan.nodes) {
    const node6 = asIPv6(node);
    if (!node6) continue;
    for (const f of state.forwards.filter((f) => entersNode(f, node.name) && reachable.has(f.target.guest))) {
      const c = forwardCheck(state, plan6, node6, f);
      checks.push({ ...c, name: `${f.name} (IPv6): ${c.name.slice(f.name.length + 2)}` });
    }
  }
  for (const g of netnsGuests) {
    const node = plan.nodes.find((n) => n.name === g.node)!;
    const node6 = asIPv6(node);
    if (!node6) continue;
    const from = outboundSourceSeen(state.cluster.nat, node6);
    checks.push({
      kind: 'tcp',
      name: `outbound (IPv6): ${g.name} (on ${node.name}) -> client ${clientIPv6}:22`,
      ns: g.ns,
      ip: clientIPv6,
      port: 22,
      expect: from !== undefined ? `this is client OK from ${from} via tcp/22` : /^this is client OK from \S+ via tcp\/22$/,
    });
    for (const gw of gatewayIPv6Addresses(state)) {
      checks.push({ kind: 'ndp', name: `ndp ${gw} from ${g.name}: ${gatewayAnswer(state, node)}`, ns: g.ns, dev: g.dev, ip: gw, answeredBy: gatewayAnswerer(state, node) });
    }
  }
  return checks;
}
