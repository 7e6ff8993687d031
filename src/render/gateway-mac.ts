// The shared gateway MAC (cluster.yaml gatewayMAC), as EVPN distributed anycast gateways have it:
// the same gateway IP and the same MAC on every node, so a guest that moves to another node keeps
// a valid neighbour entry for its gateway. cgw-sync owns no links, so it is carried entirely in
// its own `table bridge <gwmac>` (the bridge hooks run whether or not br_netfilter is on):
//   output      ARP the node sends from the gateway IP (replies and requests) names the shared MAC,
//               in the Ethernet source and the ARP sender hardware address, on the guest ports;
//               nothing with the shared MAC as source leaves through a trunk.
//   prerouting  a frame from a guest port to the shared MAC is rewritten to the bridge's own MAC
//               and marked for this host, so the bridge delivers it to the node (no fdb entry for
//               the shared MAC, never flooded); a frame to it from a trunk (a peer that did not
//               take it) is dropped rather than taken twice; a frame with the shared MAC as source
//               is dropped on every port, so no bridge ever learns it on a port.
// The ARP for the gateway IP is also dropped on the trunks by the netdev table (render.ts).
// Dual stack: the neighbour solicitations and advertisements the node sends from the gateway's
// IPv6 addresses name the shared MAC too (output), in the Ethernet source and in the link-layer
// address option right after the target (RFC 4861 4.3/4.4: @th,208,48 when the option that
// follows the target is one 8-byte link-layer address, as Linux sends it). nft updates no
// checksum for a raw payload write, so the rule keeps the ICMPv6 checksum valid the way NPTv6
// does (RFC 6296): the 16 reserved bits at @th,48,16 (zero from the sender, ignored by the
// receiver) take the ones'-complement difference of the two MACs, so the sum is unchanged.
// Frames to the shared MAC are delivered whatever they carry (prerouting). Pure.
import type { ClusterState } from '../state/types.js';
import type { Json, NftChain, NftRule, NftTable } from '../nft/model.js';
import { byName } from '../nft/model.js';
import type { NodeView } from './node-view.js';
import { mangle, match, meta, oneOrSet, payload, rule, setOf } from './expr.js';
import { gatewayIPv6Addresses, NEIGHBOUR_DISCOVERY } from './ipv6.js';

export const DEFAULT_GWMAC_TABLE = 'cgw_gwmac';

export function gatewayMacTableName(state: ClusterState): string {
  return state.cluster.tables.gwmac ?? DEFAULT_GWMAC_TABLE;
}

/** The shared gateway MAC's table, whether or not the state has one. */
export function gatewayMacTableRef(state: ClusterState): { family: 'bridge'; name: string } {
  return { family: 'bridge', name: gatewayMacTableName(state) };
}


/** `meta iifname`/`oifname` is (or is not) one of the trunks; nothing when the node has none. */
function trunkMatch(trunks: string[], key: 'iifname' | 'oifname', op: '==' | '!='): Json[] {
  return trunks.length === 0 ? [] : [match(meta(key), oneOrSet([...trunks]), op)];
}

function chain(name: 'prerouting' | 'output', rules: NftRule[]): NftChain {
  return { name, base: { type: 'filter', hook: name, priority: -200, policy: 'accept' }, rules };
}

/** A 16-bit ones'-complement sum (RFC 1071), carries folded back in. */
function onesSum(words: number[]): number {
  let sum = words.reduce((a, w) => a + w, 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** A MAC as a number (what nft takes and lists for a 48-bit raw payload). */
export function macNumber(mac: string): number {
  return Number.parseInt(mac.replaceAll(':', ''), 16);
}

function macWords(mac: string): number[] {
  const hex = mac.replaceAll(':', '');
  return [0, 4, 8].map((i) => Number.parseInt(hex.slice(i, i + 4), 16));
}

/** The 16-bit value that, added where a zero was, keeps a ones'-complement checksum when `from` is replaced by `to`. */
export function checksumNeutralWord(from: string, to: string): number {
  return onesSum([onesSum(macWords(from)), ~onesSum(macWords(to)) & 0xffff]);
}

const th = (offset: number, len: number): Json => ({ payload: { base: 'th', offset, len } });
/** NS/NA: the reserved bits used for the checksum; the option's link-layer address. */
const ND_SPARE = th(48, 16);
const ND_OPTION_MAC = th(208, 48);
/** The option's length (1: 8 bytes) and its link-layer address, matched as one: nft merges adjacent raw matches so and lists them so. */
const ND_OPTION_LENGTH_AND_MAC = th(200, 56);
const ND_ONE_ADDRESS_OPTION = 2 ** 48;

/** NDP from the gateway's IPv6 addresses names the shared MAC (none for IPv4 only). */
function ndpRule(state: ClusterState, trunks: string[], shared: string, own: string): NftRule[] {
  const gateways = gatewayIPv6Addresses(state);
  if (gateways.length === 0) return [];
  return [
    rule(
      'shared gateway MAC: NDP from the gateway addresses names it (checksum kept in the reserved bits)',
      ...trunkMatch(trunks, 'oifname', '!='),
      match(payload('ip6', 'saddr'), setOf(gateways)),
      match(payload('icmpv6', 'type'), NEIGHBOUR_DISCOVERY),
      match(ND_SPARE, 0),
      match(ND_OPTION_LENGTH_AND_MAC, ND_ONE_ADDRESS_OPTION + macNumber(own)),
      mangle(payload('ether', 'saddr'), shared),
      mangle(ND_OPTION_MAC, macNumber(shared)),
      mangle(ND_SPARE, checksumNeutralWord(own, shared)),
    ),
  ];
}

/** The table, or undefined when the cluster has no shared gateway MAC (or this node no bridge MAC: refused by validation). */
export function gatewayMacTable({ state, node }: NodeView): NftTable | undefined {
  const shared = state.cluster.gatewayMAC;
  const own = node.guestBridge.mac;
  if (shared === undefined || own === undefined) return undefined;
  const trunks = node.trunks;
  const output = [
    ...(trunks.length > 0 ? [rule('shared gateway MAC: never leaves through a trunk', ...trunkMatch(trunks, 'oifname', '=='), match(payload('ether', 'saddr'), shared), { drop: null })] : []),
    rule(
      'shared gateway MAC: ARP from the gateway IP names it',
      ...trunkMatch(trunks, 'oifname', '!='),
      match(payload('arp', 'saddr ip'), state.cluster.gatewayIP),
      mangle(payload('ether', 'saddr'), shared),
      mangle(payload('arp', 'saddr ether'), shared),
    ),
    ...ndpRule(state, trunks, shared, own),
  ];
  const prerouting = [
    rule('shared gateway MAC: only this node sends from it, no port is ever learnt for it', match(payload('ether', 'saddr'), shared), { drop: null }),
    rule(
      'shared gateway MAC: frames to it are this node own, delivered and never flooded',
      ...trunkMatch(trunks, 'iifname', '!='),
      match(payload('ether', 'daddr'), shared),
      mangle(payload('ether', 'daddr'), own),
      mangle(meta('pkttype'), 'host'),
    ),
    ...(trunks.length > 0 ? [rule('shared gateway MAC: a frame to it from a trunk was not taken by its node, and is not taken twice', match(payload('ether', 'daddr'), shared), { drop: null })] : []),
  ];
  return { family: 'bridge', name: gatewayMacTableName(state), maps: [], chains: [chain('output', output), chain('prerouting', prerouting)].sort(byName) };
}
