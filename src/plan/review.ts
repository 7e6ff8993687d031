// Review before merge: `cgw-sync plan --all-nodes --rev <rev> [--base <rev>]`. Offline: every
// node is planned with the same planNode as on the node itself, with the base revision standing
// in for the live node (its rendered tables, its settings in place, its guests running where the
// base places them). A guest that moves waits, as on the node, for the old node's report. The
// result is Markdown a CI job can post on the pull request. An invalid `rev` fails the review.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { checkoutRevision, resolveRevision } from '../git/source.js';
import { loadState } from '../state/load.js';
import { formatDiagnostics, StateError } from '../state/diagnostics.js';
import type { ClusterState, Diagnostic } from '../state/types.js';
import { desiredFingerprint, type RunningGuest } from '../guests/driver.js';
import { resolveNode, type NodeView } from '../render/node-view.js';
import { ownedTables, renderView } from '../render/render.js';
import { configHash, type LiveSettings } from '../settings/plan.js';
import type { TableRef } from '../nft/transaction.js';
import { planNft } from './nft-plan.js';
import { formatNftPlanText, summaryLine, type DiffLabels } from './format.js';
import { formatPlanBody, hasChanges, planNode, type Gates, type NodeLive, type NodePlan } from './plan.js';
import { migrationPort, NO_LIVE_GATES } from '../reconcile/live-migration.js';

export interface Review {
  markdown: string;
  /** Some node changes. */
  changed: boolean;
  /** Problems in `rev`; non-empty means the review failed. */
  diagnostics: Diagnostic[];
}

const BASE_HEAD: DiffLabels = { from: 'base', to: 'head' };

/** The state of `rev` (a checkout of its tree in a temporary folder, removed again), or why it is invalid. */
export async function stateAt(repoDir: string, rev: string, subPath: string): Promise<{ oid: string; state?: ClusterState; diagnostics: Diagnostic[] }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cgw-review-'));
  try {
    const oid = await resolveRevision(repoDir, rev);
    // A revision holding a symlink or submodule is refused before anything is written: invalid.
    const checkedOut = await checkoutRevision(repoDir, oid, path.join(dir, 'tree')).catch((e) => (e instanceof StateError ? e : Promise.reject(e)));
    if (checkedOut instanceof StateError) return { oid, diagnostics: checkedOut.diagnostics };
    return { oid, ...(await loadState(path.join(dir, 'tree', subPath))) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The node as `base` would have left it, read where planNode would read the live node. */
export function liveAsApplied(base: NodeView | undefined, head: NodeView): NodeLive {
  const keys = [...Object.keys(head.settings.sysctls), ...Object.keys(head.settings.resets)];
  // A key the base does not manage is taken to be at the kernel default the head resets it to.
  const value = (k: string) => base?.settings.sysctls[k] ?? base?.settings.resets[k] ?? head.settings.resets[k];
  const ct = base?.settings.conntrackd;
  const settings: LiveSettings = {
    sysctls: Object.fromEntries(keys.map((k) => [k, value(k)])),
    conntrackd: ct ? { config: ct.config, running: { pid: 0, startTime: '', configHash: configHash(ct.config), netns: 0 } } : {},
  };
  const guests: RunningGuest[] = (base?.guests ?? []).map((g) => ({ name: g.name, state: 'running', managed: true, fingerprint: desiredFingerprint(g, base!.node) }));
  return { nft: base ? renderView(base) : { tables: [] }, baseChains: [], settings, guests };
}

/**
 * Guests the head moves onto this node wait for their old node's report, as the node itself would.
 * A live move shows as it will go: the destination listens, the source migrates to it.
 */
export function reviewGates(base: ClusterState | undefined, head: NodeView): Gates {
  const gates: Gates = { arrivals: {}, waits: {} };
  const live: NonNullable<Gates['live']> = { ...NO_LIVE_GATES, arriving: {}, leaving: {}, arrived: [] };
  const qemu = (n: string | undefined) => head.state.nodes.find((x) => x.name === n)?.hypervisor === 'qemu';
  for (const g of head.guests) {
    const from = base?.guests.find((b) => b.name === g.name)?.node;
    if (!from || from === head.node.name) continue;
    gates.arrivals[g.name] = { from, since: 'head' };
    gates.waits[g.name] = `waits for ${from}'s report that it stopped ${g.name}`;
    if (g.migration === 'live' && qemu(from)) live.arriving[g.name] = { node: from, failures: 0, handedOver: false };
  }
  for (const g of base?.guests.filter((b) => b.node === head.node.name) ?? []) {
    const to = head.state.guests.find((x) => x.name === g.name);
    const dest = to && to.node !== head.node.name && to.migration === 'live' && head.state.nodes.find((n) => n.name === to.node && n.hypervisor === 'qemu');
    if (dest) live.leaving[g.name] = { node: dest.name, target: { host: dest.guestBridge.nodeIP, port: migrationPort(g.name, new Set()) }, attempt: 0 };
  }
  return Object.keys(live.arriving).length + Object.keys(live.leaving).length > 0 ? { ...gates, live } : gates;
}

/** Anything the review must show: a change, or a guest that would wait. */
function noteworthy(p: NodePlan): boolean {
  return hasChanges(p) || (p.guests?.actions.some((a) => a.action === 'wait') ?? false);
}

function nodeSection(node: string, p: NodePlan): string[] {
  if (!noteworthy(p)) return [`### ${node}: no changes`, ''];
  return [`### ${node}: ${summaryLine(p.nft.plan).replace(/^Plan: /, '')}`, '', '```diff', formatPlanBody(p, BASE_HEAD).trimEnd(), '```', ''];
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
  if (!base.state) L.push(`_The base revision is itself invalid, so every node is compared with an empty node._`, '');

  const owned = ownedTables(head.state);
  // Tables the base owned but the head renamed must show as deleted, too.
  const allOwned: TableRef[] = base.state ? [...owned, ...ownedTables(base.state).filter((t) => !owned.some((o) => o.family === t.family && o.name === t.name))] : owned;
  let changed = false;
  const nodes = [...new Set([...head.state.nodes.map((n) => n.name), ...(base.state?.nodes.map((n) => n.name) ?? [])])].sort();
  for (const node of nodes) {
    const baseView = base.state?.nodes.some((n) => n.name === node) ? resolveNode(base.state, node) : undefined;
    if (!head.state.nodes.some((n) => n.name === node)) {
      // Removed from the cluster: nothing plans it any more; show what its tables lose.
      const plan = planNft({ tables: [] }, baseView ? renderView(baseView) : { tables: [] }, allOwned);
      changed ||= plan.changes.length > 0;
      L.push(`### ${node} (removed from the cluster): ${summaryLine(plan).replace(/^Plan: /, '')}`, '', '```diff', formatNftPlanText(plan, BASE_HEAD).trimEnd(), '```', '');
      continue;
    }
    const headView = resolveNode(head.state, node);
    const plan = planNode(headView, liveAsApplied(baseView, headView), reviewGates(base.state, headView), { revision: head.oid, owned: allOwned });
    changed ||= noteworthy(plan);
    L.push(...nodeSection(node, plan));
  }
  return { markdown: L.join('\n') + '\n', changed, diagnostics: [] };
}
