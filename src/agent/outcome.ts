// The cycle's outcome, decided in one place from what happened. Pure.
import { hasChanges, type NodePlan } from '../plan/plan.js';
import { applyFailed } from '../reconcile/apply.js';
import type { Executed } from './node.js';
import type { Outcome } from './report.js';

export interface CycleFacts {
  /** The plan of the state the node enforces; absent when no state could be loaded. */
  plan?: NodePlan;
  executed?: Executed;
  /** An unexpected failure while reconciling (nft not readable, a driver crash...). */
  failure?: string;
  /** The apply's health checks failed and the previous revision was restored. */
  rolledBack?: boolean;
  /** Suspended: nothing was applied on purpose. */
  suspended?: boolean;
}

export function cycleOutcome(f: CycleFacts): Outcome {
  if (!f.plan || f.failure) return 'error';
  if (f.executed?.vetoedBy) return 'vetoed';
  if (f.suspended && hasChanges(f.plan)) return 'suspended';
  const r = f.executed?.result;
  if (r && applyFailed(r)) return 'error';
  if (f.rolledBack) return 'rolled-back';
  if (f.plan.nftHeld && f.plan.nft.plan.changes.length > 0) return 'drift-reported';
  return r ? 'applied' : 'converged';
}

/**
 * The outcome once the report went out or not: a node that cannot report (a refused push, an
 * unreachable status remote) looks healthy to nobody, so its cycle is an error whatever it applied.
 */
export function reportedOutcome(o: Outcome, published: { kind: string }): Outcome {
  return published.kind === 'failed' ? 'error' : o;
}

/** The outcomes after which the node enforces the plan's revision. */
export function settled(o: Outcome): boolean {
  return o === 'applied' || o === 'converged';
}
