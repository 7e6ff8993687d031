// Reconciling the owned nftables tables of one node: plan (pure, on data read at the edge),
// then apply exactly that plan as one transaction, then read back and confirm convergence.
import type { ClusterState } from '../state/types.js';
import type { Ruleset } from '../nft/model.js';
import type { NftBackend } from '../nft/backend.js';
import type { TableRef } from '../nft/transaction.js';
import { ownedTables, renderNode } from '../render/render.js';
import { planNft, planToTransaction, type NftPlan } from '../plan/nft-plan.js';
import { summaryLine } from '../plan/format.js';

export interface NftPlanned {
  desired: Ruleset;
  live: Ruleset;
  owned: TableRef[];
  plan: NftPlan;
}

export class NotConverged extends Error {
  constructor(readonly remaining: NftPlan) {
    super(`nftables did not converge after apply; still pending: ${summaryLine(remaining)}`);
    this.name = 'NotConverged';
  }
}

/** Render the node's desired tables, read the live ones, and plan the difference. */
export async function planNodeNft(state: ClusterState, node: string, backend: NftBackend): Promise<NftPlanned> {
  const desired = renderNode(state, node);
  const owned = ownedTables(state);
  const live = await backend.list(owned);
  return { desired, live, owned, plan: planNft(desired, live, owned) };
}

/**
 * Apply a plan made by planNodeNft. The transaction is atomic: if nft refuses any part, the
 * previous ruleset stays as it was and the NftError propagates. A second, read-back plan
 * must be empty, or NotConverged is thrown (someone changed the tables in between, or the
 * renderer wrote something nft lists differently).
 */
export async function applyNodeNft(planned: NftPlanned, backend: NftBackend, diff: typeof planNft = planNft): Promise<void> {
  if (planned.plan.changes.length === 0) return;
  await backend.run(planToTransaction(planned.plan));
  const after = diff(planned.desired, await backend.list(planned.owned), planned.owned);
  if (after.changes.length > 0) throw new NotConverged(after);
}
