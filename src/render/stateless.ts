// stateless-nat: forwards without connection tracking on either path (docs/nat-modes.md).
//
// The tag: every node has a small integer `natTag`, and a forward entering node N reaches the guest
// on the *tagged port* = target port + natTag(N) * portStride. The guest accepts on that port (see
// guestSnippet), so its replies carry the tag in their source port, and whichever node they leave
// through can rebuild the reverse translation from (guest IP . tagged port) alone:
//   entering node, raw prerouting:  daddr <public IP>, dport P  ->  daddr <guest>, dport tagged(P)
//   every node, raw prerouting:     saddr <guest>, sport tagged ->  saddr <N public IP>, sport P
// Both rewrites are payload sets (nft updates the IP and L4 checksums) followed by `notrack`, so
// neither direction creates a conntrack entry and the nat hooks never see these packets.
import { comment, word } from '../nft/syntax.js';
import type { ClusterState, GuestSpec, NodeSpec, Protocol } from '../state/types.js';
import type { MapElement, NftChain, NftMap, NftRule } from '../nft/model.js';
import { sortElements } from '../nft/normalize.js';
import { DEFAULT_PORT_STRIDE } from '../state/mode-checks.js';
import { entersNode, guestIPs, type NodeView } from './node-view.js';
import { concat, mangle, mapLookup, match, meta, notrack, payload, prefix, range, rule, setOf } from './expr.js';

export { DEFAULT_PORT_STRIDE };

export function portStride(state: ClusterState): number {
  return state.cluster.nat.portStride ?? DEFAULT_PORT_STRIDE;
}

/** The port a forward entering `node` uses towards the guest. */
export function taggedPort(state: ClusterState, node: NodeSpec, targetPort: number): number {
  return targetPort + (node.natTag ?? 0) * portStride(state);
}

/** The source ports of replies to forwards that entered `node`. */
export function tagRange(state: ClusterState, node: NodeSpec): [number, number] {
  const lo = (node.natTag ?? 0) * portStride(state);
  return [lo, lo + portStride(state) - 1];
}

const PROTOCOLS: Protocol[] = ['tcp', 'udp'];
export const dstMapName = (p: Protocol) => `sl_dst_${p}`;
export const dportMapName = (p: Protocol) => `sl_dport_${p}`;
export const replyPortMapName = (p: Protocol) => `sl_rport_${p}`;

/** One forward as it enters one node: public port -> guest IP, tagged port. */
export interface TaggedForward {
  node: NodeSpec;
  protocol: Protocol;
  publicPort: number;
  guestIP: string;
  targetPort: number;
  taggedPort: number;
}

/** Every (entering node, forward) pair of the cluster, with its tagged port. */
export function taggedForwards(state: ClusterState, guestIP: ReadonlyMap<string, string> = guestIPs(state)): TaggedForward[] {
  return state.nodes.flatMap((node) =>
    state.forwards
      .filter((f) => entersNode(f, node.name))
      .map((f) => ({
        node,
        protocol: f.protocol,
        publicPort: f.port,
        guestIP: guestIP.get(f.target.guest) as string,
        targetPort: f.target.port,
        taggedPort: taggedPort(state, node, f.target.port),
      })),
  );
}

/** (guest IP . port) pairs without duplicates (setOf puts them in the normalised order). */
function uniquePairs(pairs: Array<[string, number]>): Array<[string, number]> {
  return [...new Map(pairs.map((p) => [`${p[0]} ${p[1]}`, p])).values()];
}

export function statelessMaps({ state, node, guestIP }: NodeView): NftMap[] {
  const all = taggedForwards(state, guestIP);
  const here = all.filter((t) => t.node.name === node.name);
  return PROTOCOLS.flatMap((p): NftMap[] => {
    const entering = here.filter((t) => t.protocol === p);
    return [
      {
        name: dstMapName(p),
        keyType: 'inet_service',
        dataType: 'ipv4_addr',
        elements: sortElements(entering.map((t): MapElement => ({ key: t.publicPort, value: t.guestIP }))),
      },
      {
        name: dportMapName(p),
        keyType: 'inet_service',
        dataType: 'inet_service',
        elements: sortElements(entering.map((t): MapElement => ({ key: t.publicPort, value: t.taggedPort }))),
      },
      {
        // Every entering node's forwards: a guest's reply may leave through any node (migration).
        name: replyPortMapName(p),
        keyType: 'ipv4_addr . inet_service',
        dataType: 'inet_service',
        elements: sortElements(
          all.filter((t) => t.protocol === p).map((t): MapElement => ({ key: concat(t.guestIP, t.taggedPort), value: t.publicPort })),
        ),
      },
    ];
  });
}

/** The raw prerouting chain (priority -300, before conntrack) of one node in stateless-nat. */
export function statelessPrerouting({ state, node, guestIP }: NodeView): NftChain {
  const bridge = node.guestBridge.interface;
  const subnet = prefix(state.cluster.guestSubnet);
  const all = taggedForwards(state, guestIP);
  const rules: NftRule[] = [];
  for (const p of PROTOCOLS) {
    // A port that is not in the map ends the rule before anything is rewritten or untracked.
    rules.push(
      rule(
        `stateless-nat: ${p} forwards entering ${node.uplink.publicIP}, tagged ${node.natTag}`,
        match(payload('ip', 'daddr'), node.uplink.publicIP),
        mangle(payload('ip', 'daddr'), mapLookup(payload(p, 'dport'), dstMapName(p))),
        mangle(payload(p, 'dport'), mapLookup(payload(p, 'dport'), dportMapName(p))),
        notrack,
      ),
    );
  }
  for (const p of PROTOCOLS) {
    // With br_netfilter, frames this node only bridges to a guest pass its ip hooks too: keep them
    // out of conntrack, so no half-seen entry is left behind on the guest's node.
    const pairs = uniquePairs(all.filter((t) => t.protocol === p).map((t) => [t.guestIP, t.taggedPort]));
    if (pairs.length === 0) continue;
    rules.push(
      rule(
        `stateless-nat: ${p} forwards bridged towards a guest are not tracked`,
        match(meta('iifname'), bridge),
        match(concat(payload('ip', 'daddr'), payload(p, 'dport')), setOf(pairs.map(([ip, port]) => concat(ip, port)))),
        notrack,
      ),
    );
  }
  for (const entering of state.nodes) {
    if (entering.natTag === undefined) continue;
    const [lo, hi] = tagRange(state, entering);
    for (const p of PROTOCOLS) {
      rules.push(
        rule(
          `stateless-nat: ${p} replies to forwards that entered ${entering.name} leave as ${entering.uplink.publicIP}`,
          match(meta('iifname'), bridge),
          match(payload('ip', 'saddr'), subnet),
          match(payload(p, 'sport'), range(lo, hi)),
          mangle(payload(p, 'sport'), mapLookup(concat(payload('ip', 'saddr'), payload(p, 'sport')), replyPortMapName(p))),
          mangle(payload('ip', 'saddr'), entering.uplink.publicIP),
          notrack,
        ),
      );
    }
  }
  return { name: 'prerouting', base: { type: 'filter', hook: 'prerouting', priority: -300, policy: 'accept' }, rules };
}

/** The table the guest snippet creates inside the guest. */
export const GUEST_TABLE = 'cgw_guest';

/**
 * What a guest needs in stateless-nat: accept the tagged ports as if they were the service port
 * (an nft redirect inside the guest), and keep its own ephemeral ports off them. Printed by
 * `cgw-sync render --guest <name>`, applied as is by the lab.
 */
export function guestSnippet(state: ClusterState, guest: GuestSpec): string {
  const mine = taggedForwards(state).filter((t) => t.guestIP === guest.ip);
  const lines = [`# stateless-nat: guest ${word('guest name', guest.name)} (${word('guest ip', guest.ip)}) accepts forwards on tagged ports`];
  if (mine.length === 0) return `${lines[0]}\n# no forwards target this guest\n`;
  const byKey = new Map<string, TaggedForward>();
  for (const t of mine) byKey.set(`${t.protocol} ${t.taggedPort}`, t);
  const tagged = [...byKey.values()].sort((a, b) => a.protocol.localeCompare(b.protocol) || a.taggedPort - b.taggedPort);
  lines.push(`# 1. nftables inside the guest (nft -f <this file>; loading it again replaces the table):`);
  lines.push(`table ip ${GUEST_TABLE}`, `delete table ip ${GUEST_TABLE}`);
  lines.push(`table ip ${GUEST_TABLE} {`, '\tchain prerouting {', '\t\ttype nat hook prerouting priority -100; policy accept;');
  for (const t of tagged) {
    // Through the checked printer like every batch: a node name is state input.
    lines.push(`\t\t${word('protocol', t.protocol)} dport ${t.taggedPort} redirect to :${t.targetPort} comment ${comment(`entered ${t.node.name} on ${t.publicPort}`)}`);
  }
  lines.push('\t}', '}');
  const ports = [...new Set(tagged.map((t) => t.taggedPort))].sort((a, b) => a - b);
  lines.push(`# 2. keep the guest's own outgoing connections off the tagged ports:`);
  lines.push(`#    sysctl -w net.ipv4.ip_local_reserved_ports=${ports.join(',')}`);
  return lines.join('\n') + '\n';
}
