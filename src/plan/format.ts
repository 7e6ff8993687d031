// How a plan is shown: a unified diff of nft text for people, a documented JSON document for
// machines (docs/plan-format.md). Both are derived from the same NftPlan.
import { createTwoFilesPatch } from 'diff';
import { describeRule, printElement, printTable } from '../nft/text.js';
import type { NftTable } from '../nft/model.js';
import type { NftPlan, TableChange } from './nft-plan.js';
import { planToTransaction } from './nft-plan.js';

const EMPTY = '';

function tableName(c: TableChange): string {
  return `${c.table.family} ${c.table.name}`;
}

function before(c: TableChange): NftTable | undefined {
  return c.action === 'create' ? undefined : c.live;
}

function after(c: TableChange): NftTable | undefined {
  return c.action === 'delete' ? undefined : c.desired;
}

const SYMBOL: Record<TableChange['action'], string> = { create: '+', delete: '-', update: '~', replace: '-/+' };

/** What the two sides of a diff are called: the node's live tables and the desired ones, or base and head in a review. */
export interface DiffLabels {
  from: string;
  to: string;
}

export const LIVE_DESIRED: DiffLabels = { from: 'live', to: 'desired' };

/** Human plan: one section per changed table, with a unified diff of `nft list table` text. */
export function formatNftPlanText(plan: NftPlan, labels: DiffLabels = LIVE_DESIRED): string {
  if (plan.changes.length === 0) return 'nftables: no changes; the owned tables match the desired state.\n';
  const out: string[] = [];
  for (const c of plan.changes) {
    out.push(`${SYMBOL[c.action]} table ${tableName(c)} will be ${c.action === 'update' ? 'updated in place' : `${c.action}d`}`);
    if (c.action === 'replace') out.push(...c.reasons.map((r) => `    because: ${r}`));
    const b = before(c);
    const a = after(c);
    const patch = createTwoFilesPatch(`${labels.from}/${tableName(c)}`, `${labels.to}/${tableName(c)}`, b ? printTable(b) : EMPTY, a ? printTable(a) : EMPTY, '', '', { context: 2 });
    // Drop the "Index:/=====" preamble; keep ---/+++ and hunks.
    out.push(patch.split('\n').filter((l) => !l.startsWith('Index:') && !l.startsWith('====')).join('\n').trimEnd());
    out.push('');
  }
  out.push(summaryLine(plan));
  return out.join('\n') + '\n';
}

export interface PlanCounts {
  tablesCreated: number;
  tablesReplaced: number;
  tablesUpdated: number;
  tablesDeleted: number;
  rulesAdded: number;
  rulesRemoved: number;
  elementsAdded: number;
  elementsRemoved: number;
}

export function countPlan(plan: NftPlan): PlanCounts {
  const n: PlanCounts = { tablesCreated: 0, tablesReplaced: 0, tablesUpdated: 0, tablesDeleted: 0, rulesAdded: 0, rulesRemoved: 0, elementsAdded: 0, elementsRemoved: 0 };
  for (const t of tableChangesJson(plan)) {
    if (t.action === 'create') n.tablesCreated++;
    if (t.action === 'replace') n.tablesReplaced++;
    if (t.action === 'update') n.tablesUpdated++;
    if (t.action === 'delete') n.tablesDeleted++;
    for (const c of t.chains) {
      n.rulesAdded += c.added.length;
      n.rulesRemoved += c.removed.length;
    }
    for (const m of t.maps) {
      n.elementsAdded += m.add.length;
      n.elementsRemoved += m.remove.length;
    }
  }
  return n;
}

export function summaryLine(plan: NftPlan): string {
  const n = countPlan(plan);
  return `Plan: ${n.tablesCreated} table(s) to create, ${n.tablesReplaced} to replace, ${n.tablesUpdated} to update, ${n.tablesDeleted} to delete; rules +${n.rulesAdded}/-${n.rulesRemoved}; map elements +${n.elementsAdded}/-${n.elementsRemoved}.`;
}

export interface TableChangeJson {
  table: string;
  action: TableChange['action'];
  reasons: string[];
  chains: { chain: string; added: string[]; removed: string[] }[];
  maps: { map: string; add: string[]; remove: string[] }[];
}

/**
 * Per-table changes as text lines. For create/replace/delete every rule and element of the
 * table is listed as added or removed, so a consumer never needs to know the depths.
 */
export function tableChangesJson(plan: NftPlan): TableChangeJson[] {
  return plan.changes.map((c) => {
    const j: TableChangeJson = { table: tableName(c), action: c.action, reasons: c.action === 'replace' ? c.reasons : [], chains: [], maps: [] };
    if (c.action === 'update') {
      j.chains = c.chains.map((ch) => ({ chain: ch.chain, added: ch.added.map(describeRule), removed: ch.removed.map(describeRule) }));
      j.maps = c.maps.map((m) => ({ map: m.map, add: m.add.map(printElement), remove: m.remove.map(printElement) }));
      return j;
    }
    const b = before(c);
    const a = after(c);
    const chainNames = [...new Set([...(b?.chains ?? []), ...(a?.chains ?? [])].map((x) => x.name))];
    j.chains = chainNames.map((name) => ({
      chain: name,
      added: (a?.chains.find((x) => x.name === name)?.rules ?? []).map(describeRule),
      removed: (b?.chains.find((x) => x.name === name)?.rules ?? []).map(describeRule),
    }));
    const mapNames = [...new Set([...(b?.maps ?? []), ...(a?.maps ?? [])].map((x) => x.name))];
    j.maps = mapNames.map((name) => ({
      map: name,
      add: (a?.maps.find((x) => x.name === name)?.elements ?? []).map(printElement),
      remove: (b?.maps.find((x) => x.name === name)?.elements ?? []).map(printElement),
    }));
    return j;
  });
}

/** The machine-readable nft part of a plan (see docs/plan-format.md). */
export function nftPlanJson(plan: NftPlan) {
  return {
    changed: plan.changes.length > 0,
    summary: countPlan(plan),
    tables: tableChangesJson(plan),
    /** The exact batch `apply` would load with `nft -f`. */
    batch: planToTransaction(plan).toText(),
  };
}
