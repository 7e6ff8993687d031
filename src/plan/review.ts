// Review before merge: `cgw-sync plan --all-nodes --rev <rev> [--base <rev>]`. Offline (no live
// state): for every node, the nftables change that moving the state from `base` to `rev` would
// cause, as Markdown a CI job can post on the pull request. An invalid `rev` fails the review.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { checkoutRevision } from '../git/source.js';
import { loadState } from '../state/load.js';
import { formatDiagnostics } from '../state/diagnostics.js';
import type { ClusterState, Diagnostic } from '../state/types.js';
import type { Ruleset } from '../nft/model.js';
import { ownedTables, renderNode } from '../render/render.js';
import { planNft } from './nft-plan.js';
import { formatNftPlanText, summaryLine } from './format.js';

export interface Review {
  markdown: string;
  /** Some node's ruleset changes. */
  changed: boolean;
  /** Problems in `rev`; non-empty means the review failed. */
  diagnostics: Diagnostic[];
}

async function stateAt(repoDir: string, rev: string, subPath: string): Promise<{ oid: string; state?: ClusterState; diagnostics: Diagnostic[] }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cgw-review-'));
  try {
    const oid = await checkoutRevision(repoDir, rev, path.join(dir, 'tree'));
    return { oid, ...(await loadState(path.join(dir, 'tree', subPath))) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function reviewRevisions(repoDir: string, baseRev: string, headRev: string, subPath = '.'): Promise<Review> {
  const head = await stateAt(repoDir, headRev, subPath);
  const base = await stateAt(repoDir, baseRev, subPath);
  const short = (oid: string) => oid.slice(0, 12);
  const L: string[] = [`## cgw-sync plan: \`${headRev}\` (${short(head.oid)}) against \`${baseRev}\` (${short(base.oid)})`, ''];
  if (!head.state) {
    L.push(`**Invalid state: ${head.diagnostics.length} problem(s). Nothing of this revision would be applied.**`, '', '```', formatDiagnostics(head.diagnostics), '```');
    return { markdown: L.join('\n') + '\n', changed: false, diagnostics: head.diagnostics };
  }
  if (!base.state) L.push(`_The base revision is itself invalid, so every node is compared with an empty ruleset._`, '');

  let changed = false;
  const nodes = [...new Set([...head.state.nodes.map((n) => n.name), ...(base.state?.nodes.map((n) => n.name) ?? [])])].sort();
  for (const node of nodes) {
    const owned = ownedTables(head.state);
    const before: Ruleset = base.state?.nodes.some((n) => n.name === node) ? renderNode(base.state, node) : { tables: [] };
    const inHead = head.state.nodes.some((n) => n.name === node);
    const after: Ruleset = inHead ? renderNode(head.state, node) : { tables: [] };
    // Tables the base owned but the head renamed must show as deleted, too.
    const allOwned = base.state ? [...owned, ...ownedTables(base.state).filter((t) => !owned.some((o) => o.family === t.family && o.name === t.name))] : owned;
    const plan = planNft(after, before, allOwned);
    if (plan.changes.length === 0) {
      L.push(`### ${node}: no changes`, '');
      continue;
    }
    changed = true;
    L.push(`### ${node}${inHead ? '' : ' (removed from the cluster)'}: ${summaryLine(plan).replace(/^Plan: /, '')}`, '', '```diff', formatNftPlanText(plan).trimEnd(), '```', '');
  }
  return { markdown: L.join('\n') + '\n', changed, diagnostics: [] };
}
