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
// The ARP for the gateway IP is also dropped on the trunks by the netdev table (render.ts). Pure.
import type { ClusterState } from '../state/types.js';
import type { Json, NftChain, NftRule, NftTable } from '../nft/model.js';
import { byName } from '../nft/model.js';
import type { NodeView } from './node-view.js';
import { mangle, match, meta, oneOrSet, payload, rule } from './expr.js';

export const DEFAULT_GWMAC_TABLE = 'cgw_gwmac';

export function gatewayMacTableName(state: ClusterState): string {
  return state.cluster.tables.gwmac ?? DEFAULT_GWMAC_TABLE;
}

/** `meta iifname`/`oifname` is (or is not) one of the trunks; nothing when the node has none. */
function trunkMatch(trunks: string[], key: 'iifname' | 'oifname', op: '==' | '!='): Json[] {
  return trunks.length === 0 ? [] : [match(meta(key), oneOrSet([...trunks]), op)];
}

function chain(name: 'prerouting' | 'output', rules: NftRule[]): NftChain {
  return { name, base: { type: 'filter', hook: name, priority: -200, policy: 'accept' }, rules };
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
