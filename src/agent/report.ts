// The status report a node commits to its status branch: status.json for machines, REPORT.md
// for people, and a one-line commit message. Pure: built from the outcome of one cycle.
import type { SettingsReport } from './settings-phase.js';
import type { DriftItem } from './drift.js';
import type { HookResult } from './hooks.js';
import type { TableChangeJson, PlanCounts } from '../plan/format.js';

export const STATUS_FORMAT = 'cgw-sync.status/v1';

export type Outcome = 'converged' | 'applied' | 'drift-reported' | 'vetoed' | 'error';
export type SourceState = 'ok' | 'refused' | 'unavailable' | 'invalid' | 'not-owned';

export interface GuestReport {
  name: string;
  /** What the node did or found: running, started, stopped, waiting, failed, ... */
  state: string;
  detail?: string;
}

export interface Outage {
  since: string;
  until?: string;
  failures: number;
  lastError: string;
}

/** A cycle whose report could not be published; carried by the next report that is. */
export interface EarlierCycle {
  time: string;
  outcome: Outcome;
  appliedRevision?: string;
  drift: { items: DriftItem[]; corrected: boolean };
  errors: string[];
}

export interface NodeStatus {
  format: typeof STATUS_FORMAT;
  node: string;
  time: string;
  outcome: Outcome;
  source: { url: string; branch: string; state: SourceState; fetched?: string; message?: string };
  /** The revision whose state the node enforces after this cycle. */
  appliedRevision?: string;
  plan: { changed: boolean; summary: PlanCounts; tables: TableChangeJson[] } | null;
  drift: { items: DriftItem[]; corrected: boolean };
  guests: GuestReport[];
  hooks: HookResult[];
  /** Node settings (sysctls, conntrackd health in ct-sync): src/agent/settings-phase.ts. */
  settings?: SettingsReport;
  errors: string[];
  /** Things worth knowing that are not errors (e.g. a stale lock taken over). */
  notes?: string[];
  /** Cycles since the last published report whose own reports were not published (oldest first). */
  earlier?: EarlierCycle[];
  /** A Git outage (fetch or push) that ended with this report. */
  outage?: Outage;
  timings: Record<string, number>;
}

/**
 * What makes a report worth a commit: everything but the clock and the outage bookkeeping (an
 * outage's end is committed on its own terms). A new revision, drift, an error or a guest change
 * alters it; a quiet converged cycle does not.
 * The key describes the node's resulting state, not the work done to reach it: "applied X" (with
 * its plan and hooks) and the next quiet "converged at X" leave the node in the same state, so
 * the cycle after an apply commits nothing and the branch keeps the report of the apply. Failed
 * hooks stay in the key (a post-apply failure is not in `errors`).
 */
export function significantKey(s: NodeStatus): string {
  // Earlier cycles and notes ride along with a report that is due anyway (an earlier cycle
  // exists only when a publish failed, so an outage's end follows); they do not make one due.
  const { time: _time, timings: _timings, outage: _outage, earlier: _earlier, notes: _notes, plan, hooks, outcome, settings, ...rest } = s;
  const settled = outcome === 'applied' || outcome === 'converged';
  return JSON.stringify({
    ...rest,
    outcome: settled ? 'converged' : outcome,
    plan: settled ? null : plan,
    // Like the plan: the settings changes of an apply are work done, not the resulting state.
    settings: settings && (settled ? { conntrackd: settings.conntrackd } : settings),
    hooks: hooks.filter((h) => !settled || !h.ok).map(({ durationMs: _d, ...h }) => h),
  });
}

const short = (rev?: string) => (rev ? rev.slice(0, 12) : 'none');

export function commitMessage(s: NodeStatus): string {
  const parts: string[] = [];
  if (s.outcome === 'applied') parts.push(`applied ${short(s.appliedRevision)}`);
  else if (s.outcome === 'converged') parts.push(`converged at ${short(s.appliedRevision)}`);
  else parts.push(`${s.outcome} at ${short(s.appliedRevision)}`);
  if (s.plan?.changed) {
    const n = s.plan.summary;
    parts.push(`rules +${n.rulesAdded}/-${n.rulesRemoved}, elements +${n.elementsAdded}/-${n.elementsRemoved}`);
  }
  if (s.drift.items.length) parts.push(`drift ${s.drift.corrected ? 'corrected' : 'found'}: ${[...new Set(s.drift.items.map((d) => d.kind))].join(', ')}`);
  if (s.source.state !== 'ok') parts.push(`source ${s.source.state}`);
  if (s.outage?.until) parts.push(`recovered from Git outage (${s.outage.failures} failures)`);
  if (s.errors.length) parts.push(`${s.errors.length} error(s)`);
  const earlierDrift = (s.earlier ?? []).filter((e) => e.drift.items.length);
  if (earlierDrift.length) parts.push(`earlier drift ${earlierDrift.some((e) => e.drift.corrected) ? 'corrected' : 'found'} in ${earlierDrift.length} unpublished cycle(s)`);
  return `${s.node}: ${parts.join('; ')}`;
}

export function renderMarkdown(s: NodeStatus): string {
  const L: string[] = [];
  L.push(`# cgw-sync status: ${s.node}`, '');
  L.push(`| | |`, `|---|---|`);
  L.push(`| outcome | **${s.outcome}** |`);
  L.push(`| applied revision | \`${s.appliedRevision ?? 'none'}\` |`);
  L.push(`| source | ${s.source.url} (${s.source.branch}): ${s.source.state}${s.source.fetched ? `, fetched \`${s.source.fetched}\`` : ''} |`);
  L.push(`| report time | ${s.time} |`, '');
  if (s.source.message) L.push(`**Source:** ${s.source.message}`, '');
  if (s.errors.length) L.push('## Errors', '', ...s.errors.map((e) => `- ${e.replace(/\n/g, '\n  ')}`), '');
  if (s.notes?.length) L.push('## Notes', '', ...s.notes.map((n) => `- ${n}`), '');
  if (s.earlier?.length) {
    L.push('## Since the last published report', '');
    for (const e of s.earlier) {
      L.push(`- ${e.time}: **${e.outcome}** at \`${short(e.appliedRevision)}\``);
      for (const d of e.drift.items) L.push(`  - drift ${e.drift.corrected ? 'corrected' : 'found'}: ${d.kind} (${d.table}): ${d.detail}`);
      for (const x of e.errors) L.push(`  - error: ${x.replace(/\n/g, ' ')}`);
    }
    L.push('');
  }
  if (s.outage) L.push('## Git outage', '', `Git was unreachable from ${s.outage.since}${s.outage.until ? ` until ${s.outage.until}` : ' (ongoing)'}: ${s.outage.failures} failed attempt(s); last error: ${s.outage.lastError}`, '');
  L.push('## Plan', '');
  if (!s.plan || !s.plan.changed) L.push('No changes.', '');
  else {
    for (const t of s.plan.tables) {
      L.push(`### ${t.action} table ${t.table}`, '');
      for (const r of t.reasons) L.push(`- because: ${r}`);
      for (const c of t.chains) {
        for (const r of c.removed) L.push(`- chain ${c.chain}: \`- ${r}\``);
        for (const r of c.added) L.push(`- chain ${c.chain}: \`+ ${r}\``);
      }
      for (const m of t.maps) {
        for (const e of m.remove) L.push(`- map ${m.map}: \`- ${e}\``);
        for (const e of m.add) L.push(`- map ${m.map}: \`+ ${e}\``);
      }
      L.push('');
    }
  }
  L.push('## Drift', '');
  if (!s.drift.items.length) L.push('None.', '');
  else L.push(`${s.drift.corrected ? 'Corrected' : 'Not corrected (drift policy: report)'}:`, '', ...s.drift.items.map((d) => `- ${d.kind} (${d.table}): ${d.detail}`), '');
  if (s.settings) {
    const ct = s.settings.conntrackd;
    L.push('## Node settings', '', ...(s.settings.changes.length ? s.settings.changes.map((c) => `- ${c}${s.settings!.applied ? '' : ' (not applied)'}`) : ['No changes.']), '');
    if (ct) L.push(`conntrackd: ${ct.running ? `running (pid ${ct.pid})` : '**not running**'}, ${ct.answering ? 'answering on its socket' : `**not answering**${ct.error ? `: ${ct.error}` : ''}`}`, '');
  }
  if (s.guests.length) L.push('## Guests', '', '| guest | state | detail |', '|---|---|---|', ...s.guests.map((g) => `| ${g.name} | ${g.state} | ${g.detail ?? ''} |`), '');
  if (s.hooks.length) L.push('## Hooks', '', ...s.hooks.map((h) => `- ${h.phase} \`${h.hook}\`: ${h.ok ? 'ok' : `FAILED (exit ${h.exitCode})`} in ${h.durationMs} ms`), '');
  L.push('## Timings (ms)', '', ...Object.entries(s.timings).map(([k, v]) => `- ${k}: ${v}`), '');
  return L.join('\n');
}

export function statusFiles(s: NodeStatus): Record<string, string> {
  return { 'status.json': `${JSON.stringify(s, null, 2)}\n`, 'REPORT.md': renderMarkdown(s) };
}
