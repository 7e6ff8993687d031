// The status report a node commits to its status branch: status.json for machines, REPORT.md
// for people, and a one-line commit message. Built from the outcome of one cycle, and always
// through redact.ts: no secret the process knows, no invisible character and no over-long string
// reaches Git; state values in REPORT.md are escaped, so they cannot inject Markdown or HTML.
import type { SettingsReport } from './settings-phase.js';
import type { DriftItem } from './drift.js';
import type { HookResult } from './hooks.js';
import type { TableChangeJson, PlanCounts } from '../plan/format.js';
import { allSecrets } from '../git/remote.js';
import { cap, redactDeep, VALUE_LIMIT } from './redact.js';
import type { HealthReport, RollbackReport } from '../rollout/checkpoint.js';
import type { Suspension } from '../rollout/suspend.js';

export const STATUS_FORMAT = 'cgw-sync.status/v1';

export type Outcome = 'converged' | 'applied' | 'drift-reported' | 'vetoed' | 'rolled-back' | 'suspended' | 'error';
export type SourceState = 'ok' | 'refused' | 'unavailable' | 'invalid' | 'not-owned';

export interface GuestReport {
  name: string;
  /** What the node did or found: running, started, stopped, waiting, failed, ... */
  state: string;
  detail?: string;
  /** Live migration, destination side: a destination listens for the guest (src/reconcile/live-migration.ts). */
  incoming?: { uri: string; port: number; attempt: number; revision: string };
  /** Live migration, source side: the move to `to`, its failed attempts, and whether it was handed over. */
  migration?: { to: string; failures: number; handedOver?: boolean; error?: string };
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
  /** When this node first applied appliedRevision (the soak time of waves counts from it). */
  appliedAt?: string;
  plan: { changed: boolean; summary: PlanCounts; tables: TableChangeJson[] } | null;
  drift: { items: DriftItem[]; corrected: boolean };
  guests: GuestReport[];
  hooks: HookResult[];
  /** Node settings (sysctls, conntrackd health in ct-sync): src/agent/settings-phase.ts. */
  settings?: SettingsReport;
  /** The node's health checks after this cycle (src/health/). */
  health?: HealthReport;
  /** This cycle applied a revision, its checks failed, and the previous revision was restored. */
  rollback?: RollbackReport;
  /** The tracked revision is held: rolled back earlier, not tried again until the branch moves. */
  held?: { revision: string; at: string; reason: string };
  /** Waves: this node's wave (1-based) and why the tracked revision is not applied yet, or halted. */
  rollout?: { wave: number; revision: string; waiting?: string; halted?: string };
  /** Suspended: this cycle planned and reported, and applied nothing. */
  suspended?: Suspension;
  /** A change window holds new revisions back: why, and what it does with drift meanwhile. */
  window?: { waiting: string; drift: 'correct' | 'report' };
  errors: string[];
  /** Things worth knowing that are not errors (e.g. a stale lock taken over). */
  notes?: string[];
  /** Cycles since the last published report whose own reports were not published (oldest first). */
  earlier?: EarlierCycle[];
  /** A Git outage (fetch or push) that ended with this report. */
  outage?: Outage;
  /** Someone else's commit (or a deletion) found at the tip of this node's status branch; this report replaces it. */
  intrusion?: { branch: string; oid?: string; expected: string; reason: string; at: string };
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

/** The status as it may leave the node: every string redacted (redact.ts). Idempotent. */
export function redactStatus(s: NodeStatus, secrets: readonly string[] = allSecrets()): NodeStatus {
  return redactDeep(s, secrets);
}

/** The commit subject: one line, redacted, capped. */
export function commitMessage(status: NodeStatus, secrets: readonly string[] = allSecrets()): string {
  const s = redactStatus(status, secrets);
  const parts: string[] = [];
  if (s.outcome === 'applied') parts.push(`applied ${short(s.appliedRevision)}`);
  else if (s.outcome === 'converged') parts.push(`converged at ${short(s.appliedRevision)}`);
  else if (s.outcome === 'rolled-back' && s.rollback) parts.push(`rolled back ${short(s.rollback.revision)} to ${short(s.rollback.restored)}: ${s.rollback.failing.map((f) => f.name).join(', ')}`);
  else parts.push(`${s.outcome} at ${short(s.appliedRevision)}`);
  if (s.plan?.changed) {
    const n = s.plan.summary;
    parts.push(`rules +${n.rulesAdded}/-${n.rulesRemoved}, elements +${n.elementsAdded}/-${n.elementsRemoved}`);
  }
  if (s.drift.items.length) parts.push(`drift ${s.drift.corrected ? 'corrected' : 'found'}: ${[...new Set(s.drift.items.map((d) => d.kind))].join(', ')}`);
  if (s.window) parts.push('waiting for window');
  if (s.suspended) parts.push(`suspended by ${s.suspended.by}: ${s.suspended.reason}`);
  if (s.rollout?.halted) parts.push(`halted: ${s.rollout.halted}`);
  else if (s.rollout?.waiting) parts.push(`wave ${s.rollout.wave} waiting for ${short(s.rollout.revision)}`);
  if (s.source.state !== 'ok') parts.push(`source ${s.source.state}`);
  if (s.intrusion) parts.push(`restored ${s.intrusion.branch} over ${s.intrusion.oid ? `foreign commit ${short(s.intrusion.oid)}` : 'its deletion'}`);
  if (s.outage?.until) parts.push(`recovered from Git outage (${s.outage.failures} failures)`);
  if (s.errors.length) parts.push(`${s.errors.length} error(s)`);
  const earlierDrift = (s.earlier ?? []).filter((e) => e.drift.items.length);
  if (earlierDrift.length) parts.push(`earlier drift ${earlierDrift.some((e) => e.drift.corrected) ? 'corrected' : 'found'} in ${earlierDrift.length} unpublished cycle(s)`);
  return cap(`${s.node}: ${parts.join('; ')}`.replace(/\s+/g, ' '), VALUE_LIMIT);
}

// --- Markdown: every value from the state, a hook or an error is escaped -------------------------

/** Inline text: Markdown punctuation backslash-escaped, HTML made inert, one line. */
export function mdText(text: string): string {
  return text
    .replace(/\r?\n/g, ' ')
    // Only what is markup inside a line (line-start markup cannot occur: the line is ours).
    .replace(/[\\`*[\]|~]/g, '\\$&')
    // An underscore inside a word (cgw_nat) is never emphasis in CommonMark; at a word edge it may be.
    .replace(/(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])/g, '\\_')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;');
}

/**
 * An inline code span that no content can close early: the fence is longer than any run of
 * backticks inside. Pipes are escaped too (GitHub splits table cells on them even in code).
 */
export function mdCode(text: string): string {
  const inner = text.replace(/\r?\n/g, ' ').replace(/\|/g, '\\|');
  const longest = Math.max(0, ...(inner.match(/`+/g) ?? []).map((r) => r.length));
  const fence = '`'.repeat(longest + 1);
  const pad = inner.startsWith('`') || inner.endsWith('`') || inner.startsWith(' ') ? ' ' : '';
  return `${fence}${pad}${inner}${pad}${fence}`;
}

/** How much of a failing hook's output REPORT.md shows (status.json keeps all the hook runner kept). */
export const HOOK_TAIL = { lines: 20, bytes: 2000 } as const;

/**
 * The last lines of a hook's output, at most `limits.lines` lines and `limits.bytes` bytes of
 * UTF-8 (a single longer line keeps its end); `omitted` counts the lines left out before them.
 */
export function outputTail(output: string, limits: { lines: number; bytes: number } = HOOK_TAIL): { text: string; lines: number; omitted: number } {
  const all = output.replace(/\n+$/, '').split('\n');
  const kept: string[] = [];
  let bytes = 0;
  for (let i = all.length - 1; i >= 0 && kept.length < limits.lines; i--) {
    const line = all[i] as string;
    const size = Buffer.byteLength(line) + 1;
    if (bytes + size > limits.bytes) {
      if (kept.length === 0) kept.push(endOf(line, limits.bytes));
      break;
    }
    kept.unshift(line);
    bytes += size;
  }
  return { text: kept.join('\n'), lines: kept.length, omitted: all.length - kept.length };
}

const ELLIPSIS_BYTES = Buffer.byteLength('…');

/** The end of a line in at most `bytes` bytes of UTF-8 (with the ellipsis), never half a character. */
function endOf(line: string, bytes: number): string {
  const chars = Array.from(line);
  let size = 0;
  let start = chars.length;
  while (start > 0 && size + Buffer.byteLength(chars[start - 1] as string) <= bytes - ELLIPSIS_BYTES) size += Buffer.byteLength(chars[--start] as string);
  return `…${chars.slice(start).join('')}`;
}

/** A fenced block no content can close (longer fence than any backtick run inside). */
export function mdBlock(text: string): string[] {
  const longest = Math.max(0, ...(text.match(/`+/g) ?? []).map((r) => r.length));
  const fence = '`'.repeat(Math.max(3, longest + 1));
  return [`${fence}text`, text, fence];
}

export function renderMarkdown(status: NodeStatus, secrets: readonly string[] = allSecrets()): string {
  const s = redactStatus(status, secrets);
  const t = mdText;
  const c = mdCode;
  const L: string[] = [];
  L.push(`# cgw-sync status: ${t(s.node)}`, '');
  L.push(`| | |`, `|---|---|`);
  L.push(`| outcome | **${t(s.outcome)}** |`);
  L.push(`| applied revision | ${c(s.appliedRevision ?? 'none')} |`);
  L.push(`| source | ${t(s.source.url)} (${t(s.source.branch)}): ${t(s.source.state)}${s.source.fetched ? `, fetched ${c(s.source.fetched)}` : ''} |`);
  L.push(`| report time | ${t(s.time)} |`, '');
  if (s.source.message) L.push('**Source:**', '', ...mdBlock(s.source.message), '');
  if (s.rollback) L.push('## Rolled back', '', `Revision ${c(s.rollback.revision)} was applied and rolled back to ${c(s.rollback.restored)} after ${s.rollback.checkedMs} ms of checks${s.rollback.liveMs === undefined ? '' : ` (its ruleset was live for ${s.rollback.liveMs} ms)`}${s.rollback.ok ? '' : ' (**the restore reported problems**)'}; it is held until the branch moves. Failing checks:`, '', ...s.rollback.failing.map((f) => `- ${t(f.name)}: ${t(f.detail)}`), '');
  if (s.rollout?.halted) L.push(`**Halted:** ${t(s.rollout.halted)} (wave ${s.rollout.wave}; revision ${c(s.rollout.revision)} is not applied here until a newer commit starts a new rollout)`, '');
  else if (s.rollout?.waiting) L.push(`**Wave ${s.rollout.wave}:** revision ${c(s.rollout.revision)} is ${t(s.rollout.waiting)}`, '');
  if (s.suspended) L.push(`**Suspended** by ${t(s.suspended.by)}${s.suspended.since ? ` since ${t(s.suspended.since)}` : ''}: ${t(s.suspended.reason)}. Nothing is applied; the plan below is what would change.`, '');
  if (s.window) L.push(`**Change window:** ${t(s.window.waiting)}; drift of the applied revision is ${s.window.drift === 'report' ? 'only reported' : 'corrected'} meanwhile.`, '');
  if (s.held) L.push(`**Held:** revision ${c(s.held.revision)} was rolled back at ${t(s.held.at)} (${t(s.held.reason)}); it is not applied again until the branch moves.`, '');
  if (s.health) L.push(`**Health:** ${t(s.health.state)} (${s.health.checks} checks)${s.health.failing.length ? `; failing: ${s.health.failing.map((f) => `${t(f.name)}: ${t(f.detail)}`).join('; ')}` : ''}`, '');
  if (s.errors.length) L.push('## Errors', '', ...s.errors.flatMap((e) => mdBlock(e)), '');
  if (s.notes?.length) L.push('## Notes', '', ...s.notes.map((n) => `- ${t(n)}`), '');
  if (s.earlier?.length) {
    L.push('## Since the last published report', '');
    for (const e of s.earlier) {
      L.push(`- ${t(e.time)}: **${t(e.outcome)}** at ${c(short(e.appliedRevision))}`);
      for (const d of e.drift.items) L.push(`  - drift ${e.drift.corrected ? 'corrected' : 'found'}: ${t(d.kind)} (${t(d.table)}): ${t(d.detail)}`);
      for (const x of e.errors) L.push(`  - error: ${c(x)}`);
    }
    L.push('');
  }
  if (s.outage) L.push('## Git outage', '', `Git was unreachable from ${t(s.outage.since)}${s.outage.until ? ` until ${t(s.outage.until)}` : ' (ongoing)'}: ${s.outage.failures} failed attempt(s); last error: ${c(s.outage.lastError)}`, '');
  L.push('## Plan', '');
  if (!s.plan || !s.plan.changed) L.push('No changes.', '');
  else {
    for (const tc of s.plan.tables) {
      L.push(`### ${t(tc.action)} table ${t(tc.table)}`, '');
      for (const r of tc.reasons) L.push(`- because: ${t(r)}`);
      for (const ch of tc.chains) {
        for (const r of ch.removed) L.push(`- chain ${t(ch.chain)}: ${c(`- ${r}`)}`);
        for (const r of ch.added) L.push(`- chain ${t(ch.chain)}: ${c(`+ ${r}`)}`);
      }
      for (const m of tc.maps) {
        for (const e of m.remove) L.push(`- map ${t(m.map)}: ${c(`- ${e}`)}`);
        for (const e of m.add) L.push(`- map ${t(m.map)}: ${c(`+ ${e}`)}`);
      }
      L.push('');
    }
  }
  L.push('## Drift', '');
  if (!s.drift.items.length) L.push('None.', '');
  else L.push(`${s.drift.corrected ? 'Corrected' : 'Not corrected (drift policy: report)'}:`, '', ...s.drift.items.map((d) => `- ${t(d.kind)} (${t(d.table)}): ${t(d.detail)}`), '');
  if (s.settings) {
    const ct = s.settings.conntrackd;
    L.push('## Node settings', '', ...(s.settings.changes.length ? s.settings.changes.map((x) => `- ${t(x)}${s.settings!.applied ? '' : ' (not applied)'}`) : ['No changes.']), '');
    if (ct) L.push(`conntrackd: ${ct.running ? `running (pid ${ct.pid})` : '**not running**'}, ${ct.answering ? 'answering on its socket' : `**not answering**${ct.error ? `: ${t(ct.error)}` : ''}`}`, '');
  }
  if (s.guests.length) L.push('## Guests', '', '| guest | state | detail |', '|---|---|---|', ...s.guests.map((g) => `| ${t(g.name)} | ${t(g.state)} | ${t(g.detail ?? '')} |`), '');
  if (s.hooks.length) {
    L.push('## Hooks', '', ...s.hooks.map((h) => `- ${t(h.phase)} ${c(h.hook)}: ${h.ok ? 'ok' : `FAILED (exit ${h.exitCode})`} in ${h.durationMs} ms`), '');
    for (const h of s.hooks.filter((x) => !x.ok && x.output.trim())) {
      const tail = outputTail(h.output);
      const shown = tail.omitted ? `its last ${tail.lines} of ${tail.lines + tail.omitted} lines` : 'its output';
      L.push(`${t(h.phase)} ${c(h.hook)} failed; ${shown}:`, '', ...mdBlock(tail.text), '');
    }
  }
  L.push('## Timings (ms)', '', ...Object.entries(s.timings).map(([k, v]) => `- ${t(k)}: ${v}`), '');
  return L.join('\n');
}

/** status.json and REPORT.md, both redacted. */
export function statusFiles(status: NodeStatus, secrets: readonly string[] = allSecrets()): Record<string, string> {
  const s = redactStatus(status, secrets);
  return { 'status.json': `${JSON.stringify(s, null, 2)}\n`, 'REPORT.md': renderMarkdown(s, secrets) };
}
