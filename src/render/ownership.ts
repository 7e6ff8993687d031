// The agent's ownership check of a whole state: its tables carry the cgw_ mark, are distinct, and
// are on this node's `ownedTables` allow-list (agent config). Pure; the rules are in nft/ownership.ts.
import { tablesOwnershipProblem } from '../nft/ownership.js';
import type { ClusterState } from '../state/types.js';
import { stateTables } from './render.js';

/** Why this node must not apply the state's tables (undefined: it may). */
export function ownershipProblem(state: ClusterState, config: { ownedTables: readonly string[] }): string | undefined {
  return tablesOwnershipProblem(stateTables(state), config.ownedTables);
}
