// Dual stack (cluster.yaml `ipv6`): what IPv6 adds to a node's ruleset. Pure; IPv4-only states get
// nothing from here, so their rulesets stay exactly as before.
//
// - `table ip6 <nat6>`: the same nat table as IPv4 (render.ts natTable), for the guests that have
//   an IPv6 address: forwards entering on the node's publicIPv6, full-nat's SNAT to its nodeIPv6,
//   casual outbound SNAT to its publicIPv6 (the guest subnet may be unique local).
// - On every trunk's egress chain (`table netdev <arp>`): the shared gateway's addresses (global
//   and link-local) are hidden from the other nodes as ARP hides the IPv4 one, and router
//   advertisements never leave a node. nft 1.0.6 has no `icmpv6 taddr` (1.0.9 has), so the
//   neighbour discovery target is matched as raw transport-header payload: ICMPv6 type, code,
//   checksum and 32 reserved bits, then the 128-bit target (RFC 4861 4.3/4.4) at @th,64,128;
//   nft lists a value wider than 64 bits as a "0x..." hex string.
import type { ClusterState } from '../state/types.js';
import type { Json, NftRule, NftTable, Ruleset } from '../nft/model.js';
import { canonicalIPv6, formatIPv6Subnet, parseIPv6, parseIPv6Cidr, type IPv6Subnet } from '../state/ipv6.js';
import type { NodeView } from './node-view.js';
import { match, payload, rule, setOf } from './expr.js';
import { natTable } from './render.js';

export const DEFAULT_NAT6_TABLE = 'cgw_nat6';

export function nat6TableName(state: ClusterState): string {
  return state.cluster.tables.nat6 ?? DEFAULT_NAT6_TABLE;
}

/** The ip6 nat table, whether or not the state is dual stack. */
export function nat6TableRef(state: ClusterState): { family: 'ip6'; name: string } {
  return { family: 'ip6', name: nat6TableName(state) };
}


/** Every guest's IPv6 address by name (canonical), for the guests that have one. */
export function guestIPv6s(state: ClusterState): Map<string, string> {
  return new Map(state.guests.filter((g) => g.ipv6 !== undefined).map((g) => [g.name, canonicalIPv6(g.ipv6 as string)]));
}

/** The shared gateway's IPv6 addresses (global, link-local) in canonical form; none for IPv4 only. */
export function gatewayIPv6Addresses(state: ClusterState): string[] {
  const v6 = state.cluster.ipv6;
  return v6 ? [v6.gatewayIP, v6.gatewayLinkLocal].map(canonicalIPv6) : [];
}

/** `table ip6 <nat6>`, or undefined for an IPv4-only state. Validation allows IPv6 in full-nat only. */
export function nat6Table(view: NodeView, previous?: Ruleset): NftTable | undefined {
  const { state, node } = view;
  const v6 = state.cluster.ipv6;
  const { publicIPv6 } = node.uplink;
  const { nodeIPv6 } = node.guestBridge;
  if (!v6 || state.cluster.nat.mode !== 'full-nat' || publicIPv6 === undefined || nodeIPv6 === undefined) return undefined;
  return natTable(view, {
    family: 'ip6',
    table: nat6TableName(state),
    targetType: 'ipv6_addr . inet_service',
    guestSubnet: formatIPv6Subnet(parseIPv6Cidr(v6.guestSubnet) as IPv6Subnet),
    publicIP: canonicalIPv6(publicIPv6),
    nodeIP: canonicalIPv6(nodeIPv6),
    guestIP: guestIPv6s(state),
  }, previous);
}

/** An IPv6 address as nft lists a 128-bit raw payload value: "0x" and lower-case hex without leading zeros. */
export function rawIPv6(address: string): string {
  return `0x${(parseIPv6(address) as bigint).toString(16)}`;
}

/** The ND target address of a neighbour solicitation or advertisement (nft 1.0.6 has no `icmpv6 taddr`). */
export const ndTarget: Json = { payload: { base: 'th', offset: 64, len: 128 } };

export const NEIGHBOUR_DISCOVERY: Json = setOf(['nd-neighbor-advert', 'nd-neighbor-solicit']);

/** The rules a dual-stack state adds to every trunk's egress chain (none for IPv4 only). */
export function trunkIPv6Rules(state: ClusterState): NftRule[] {
  const v6 = state.cluster.ipv6;
  if (!v6) return [];
  const gateways = gatewayIPv6Addresses(state);
  const ndType = match(payload('icmpv6', 'type'), NEIGHBOUR_DISCOVERY);
  return [
    rule('shared gateway: no NDP from it leaves to other nodes', match(payload('ip6', 'saddr'), setOf(gateways)), ndType, { drop: null }),
    rule('shared gateway: no NDP for it leaves to other nodes', ndType, match(ndTarget, setOf(gateways.map(rawIPv6))), { drop: null }),
    rule('router advertisements never leave this node', match(payload('icmpv6', 'type'), 'nd-router-advert'), { drop: null }),
  ];
}
