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

/** The comment of each guard chain's one rule: what it keeps where. */
export interface GuardComments {
  prerouting: string;
  forward: string;
  output: string;
}

/**
 * A `table bridge` that keeps one kind of node-to-node traffic (`traffic`: the matches that
 * select it) between the trunks and the node itself: dropped when it enters from any other
 * bridge port (prerouting), is bridged towards one (forward), or this node sends it out of one
 * (output). Without trunks nothing of it may cross any port.
 */
export function bridgeGuardTable(name: string, trunks: readonly string[], traffic: Json[], comments: GuardComments): NftTable {
  const notTrunk = (port: 'iifname' | 'oifname') => (trunks.length > 0 ? [match(meta(port), oneOrSet([...trunks]), '!=')] : []);
  const chain = (hook: 'prerouting' | 'forward' | 'output', port: 'iifname' | 'oifname'): NftChain => ({
    name: hook,
    base: { type: 'filter', hook, priority: -200, policy: 'accept' },
    rules: [rule(comments[hook], ...notTrunk(port), ...traffic, { drop: null })],
  });
  return { family: 'bridge', name, maps: [], chains: [chain('prerouting', 'iifname'), chain('forward', 'oifname'), chain('output', 'oifname')].sort(byName) };
}

/** The guard's table, or undefined when the node runs no conntrackd (other modes, one node, no trunk). */
export function syncGuardTable({ state, node, settings }: NodeView): NftTable | undefined {
  if (!settings.conntrackd || node.trunks.length === 0) return undefined;
  const sync = [match(payload('ip', 'daddr'), oneOrSet(syncDestinations(state))), match(payload('udp', 'dport'), state.cluster.nat.ctSync?.port ?? DEFAULT_SYNC_PORT)];
  return bridgeGuardTable(syncTableName(state), node.trunks, sync, {
    prerouting: 'ct-sync: sync traffic is accepted from the trunks only, never from a guest port',
    forward: 'ct-sync: sync traffic is bridged to the trunks only, never to a guest port',
    output: "ct-sync: this node's sync traffic leaves through the trunks only",
  });
}
