// ct-sync: conntrackd's sync traffic crosses the guest bridge (UDP between the nodes' guest-bridge
// IPs, or a multicast group), so without a guard any guest on that L2 could inject or overwrite
// connection state on every node, or read it. `table bridge <sync>` keeps that traffic between the
// trunks and the node itself: sync packets (to a node's guest-bridge IP or the group, on the sync
// port) are dropped when they come from, or would go to, any other bridge port. The bridge hooks
// run whether or not br_netfilter is on. Pure.
import type { ClusterState } from '../state/types.js';
import type { Json, NftChain, NftTable } from '../nft/model.js';
import { byName } from '../nft/model.js';
import { DEFAULT_SYNC_PORT } from '../settings/conntrackd.js';
import type { NodeView } from './node-view.js';
import { match, meta, oneOrSet, payload, rule } from './expr.js';

export const DEFAULT_SYNC_TABLE = 'cgw_sync';

export function syncTableName(state: ClusterState): string {
  return state.cluster.tables.sync ?? DEFAULT_SYNC_TABLE;
}

/** Where sync packets go: every node's guest-bridge IP, and the multicast group when there is one. */
function syncDestinations(state: ClusterState): Json[] {
  const group = state.cluster.nat.ctSync?.multicastGroup;
  return [...new Set([...state.nodes.map((n) => n.guestBridge.nodeIP), ...(group ? [group] : [])])];
}

/** The guard's table, or undefined when the node runs no conntrackd (other modes, one node, no trunk). */
export function syncGuardTable({ state, node, settings }: NodeView): NftTable | undefined {
  if (!settings.conntrackd || node.trunks.length === 0) return undefined;
  const trunks = oneOrSet([...node.trunks]);
  const sync = [match(payload('ip', 'daddr'), oneOrSet(syncDestinations(state))), match(payload('udp', 'dport'), state.cluster.nat.ctSync?.port ?? DEFAULT_SYNC_PORT)];
  const chain = (name: 'prerouting' | 'forward' | 'output', port: 'iifname' | 'oifname', comment: string): NftChain => ({
    name,
    base: { type: 'filter', hook: name, priority: -200, policy: 'accept' },
    rules: [rule(comment, match(meta(port), trunks, '!='), ...sync, { drop: null })],
  });
  return {
    family: 'bridge',
    name: syncTableName(state),
    maps: [],
    chains: [
      chain('prerouting', 'iifname', 'ct-sync: sync traffic is accepted from the trunks only, never from a guest port'),
      chain('forward', 'oifname', 'ct-sync: sync traffic is bridged to the trunks only, never to a guest port'),
      chain('output', 'oifname', "ct-sync: this node's sync traffic leaves through the trunks only"),
    ].sort(byName),
  };
}
