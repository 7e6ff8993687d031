// Drift: how the live owned tables differ from what this node applied last, classified for the
// status report; and foreign base chains that run before ours on the same hook (they can NAT or
// drop a packet before cgw-sync's rules see it). Pure functions of data read at the edge.
import type { Family, Ruleset } from '../nft/model.js';
import type { BaseChainInfo } from '../nft/backend.js';
import type { TableRef } from '../nft/transaction.js';
import { planNft } from '../plan/nft-plan.js';
import { describeRule, printElement } from '../nft/text.js';

export type DriftKind = 'table-deleted' | 'table-added' | 'table-structure-changed' | 'rules-changed' | 'elements-changed' | 'foreign-chain-shadows';

export interface DriftItem {
  kind: DriftKind;
  /** "ip cgw_nat", or the foreign table for foreign-chain-shadows. */
  table: string;
  detail: string;
}


/** What changed by hand since `applied` was put in place. */
export function classifyDrift(applied: Ruleset, live: Ruleset, owned: TableRef[], diff: typeof planNft = planNft): DriftItem[] {
  const items: DriftItem[] = [];
  for (const c of diff(applied, live, owned).changes) {
    const table = `${c.table.family} ${c.table.name}`;
    // The plan goes from live back to applied: "create" means live lacks the table.
    if (c.action === 'create') items.push({ kind: 'table-deleted', table, detail: `table ${table} was deleted` });
    else if (c.action === 'delete') items.push({ kind: 'table-added', table, detail: `table ${table} was created outside cgw-sync` });
    else if (c.action === 'replace') items.push({ kind: 'table-structure-changed', table, detail: c.reasons.join('; ') });
    else {
      for (const ch of c.chains) {
        const parts = [...ch.removed.map((r) => `added by hand: ${describeRule(r)}`), ...ch.added.map((r) => `removed by hand: ${describeRule(r)}`)];
        items.push({ kind: 'rules-changed', table, detail: `chain ${ch.chain}: ${parts.join('; ') || 'rules reordered'}` });
      }
      for (const m of c.maps) {
        const parts = [...m.remove.map((e) => `added/changed by hand: ${printElement(e)}`), ...m.add.map((e) => `missing: ${printElement(e)}`)];
        items.push({ kind: 'elements-changed', table, detail: `map ${m.map}: ${parts.join('; ')}` });
      }
    }
  }
  return items;
}

/** Families whose hooks see the same packets as a chain of `family`. */
function overlaps(ours: Family, theirs: Family): boolean {
  if (ours === theirs) return true;
  return (ours === 'ip' || ours === 'ip6') && theirs === 'inet';
}

/** Foreign base chains on our hooks with a priority that runs before (or ties with) ours. */
export function shadowingChains(desired: Ruleset, chains: BaseChainInfo[], owned: TableRef[]): DriftItem[] {
  const ownedIds = new Set(owned.map((t) => `${t.family} ${t.name}`));
  const items: DriftItem[] = [];
  for (const t of desired.tables) {
    for (const c of t.chains) {
      // A foreign netdev chain cannot undo our ARP drop (a drop is final in any base chain), and
      // nft 1.0.6 does not list its device anyway: only our nat hooks can be shadowed.
      if (!c.base || t.family === 'netdev') continue;
      const base = c.base;
      for (const f of chains) {
        if (ownedIds.has(`${f.family} ${f.table}`)) continue;
        if (f.hook !== base.hook || !overlaps(t.family, f.family) || f.priority > base.priority) continue;
        const tie = f.priority === base.priority ? ' (same priority: order undefined)' : '';
        items.push({
          kind: 'foreign-chain-shadows',
          table: `${f.family} ${f.table}`,
          detail: `chain ${f.name} (${f.type} hook ${f.hook} priority ${f.priority}) runs before ${t.family} ${t.name} ${c.name} (priority ${base.priority})${tie}`,
        });
      }
    }
  }
  return items;
}

export interface DriftDecision {
  items: DriftItem[];
  /** Something in our own tables was changed by hand (not just a foreign chain). */
  byHand: boolean;
  /** Report-only drift: the nft correction is held back (guests still follow the state). */
  hold: boolean;
}

/**
 * Drift is measured against what this node put in place last (`baseline`); a new revision is
 * always applied, report-only drift holds back only a correction of the same revision.
 */
export function decideDrift(inp: {
  baseline: Ruleset | undefined;
  live: Ruleset;
  desired: Ruleset;
  owned: TableRef[];
  baseChains: BaseChainInfo[];
  policy: 'correct' | 'report';
  newRevision: boolean;
  nftChanges: boolean;
  /** planNft, or the agent's remembered one. */
  diff?: typeof planNft;
}): DriftDecision {
  const items = inp.baseline ? classifyDrift(inp.baseline, inp.live, inp.owned, inp.diff) : [];
  items.push(...shadowingChains(inp.desired, inp.baseChains, inp.owned));
  const byHand = items.some((d) => d.kind !== 'foreign-chain-shadows');
  return { items, byHand, hold: inp.nftChanges && !inp.newRevision && inp.policy === 'report' && byHand };
}
