// Live migration: a destination qemu listens on its node's guest-bridge IP (src/reconcile/
// live-migration.ts), which every guest on that L2 can reach. qemu trusts the migration stream it
// loads (device state, memory), so a guest that connects first could feed it a crafted one.
// `table bridge <migration>` keeps TCP to any node's guest-bridge IP on the migration ports
// between the trunks and the node itself, as the ct-sync guard does for conntrackd (syncguard.ts):
// a guest's port can neither send it (here, or through the trunk to another node: every node
// drops it at its own guests' ports) nor receive it. Rendered while any guest has
// `migration: live`. The bridge hooks run whether or not br_netfilter is on. Pure.
import type { ClusterState } from '../state/types.js';
import type { NftTable } from '../nft/model.js';
import type { NodeView } from './node-view.js';
import { match, oneOrSet, payload, range } from './expr.js';
import { bridgeGuardTable } from './syncguard.js';
import { MIGRATION_PORTS } from '../reconcile/live-migration.js';

export const DEFAULT_MIGRATION_TABLE = 'cgw_migration';

export function migrationTableName(state: ClusterState): string {
  return state.cluster.tables.migration ?? DEFAULT_MIGRATION_TABLE;
}

/** The guard's table, whether or not a guest migrates live. */
export function migrationTableRef(state: ClusterState): { family: 'bridge'; name: string } {
  return { family: 'bridge', name: migrationTableName(state) };
}

export function hasLiveGuests(state: ClusterState): boolean {
  return state.guests.some((g) => g.migration === 'live');
}

/** The guard's table, or undefined when no guest of the cluster migrates live. */
export function migrationGuardTable({ state, node }: NodeView): NftTable | undefined {
  if (!hasLiveGuests(state)) return undefined;
  const nodeIPs = [...new Set(state.nodes.map((n) => n.guestBridge.nodeIP))].sort();
  const stream = [match(payload('ip', 'daddr'), oneOrSet(nodeIPs)), match(payload('tcp', 'dport'), range(MIGRATION_PORTS.first, MIGRATION_PORTS.last))];
  return bridgeGuardTable(migrationTableName(state), node.trunks, stream, {
    prerouting: 'live migration: streams to a node are accepted from the trunks only, never from a guest port',
    forward: 'live migration: streams are bridged to the trunks only, never to a guest port',
    output: "live migration: this node's streams leave through the trunks only",
  });
}
