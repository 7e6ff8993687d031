// Fleet status: one line per node from every node's latest report (its status branch): applied
// revision against main's tip, outcome, health, age of the report, drift, and why it waits, is
// halted, held or suspended. Pure; the reports are read at the edge (src/rollout/commands.ts,
// src/lab/lab.ts). Three renderings: aligned text, JSON (the rows), Markdown (a table for a pull
// request or a chat).
import type { NodeStatus } from '../agent/report.js';

export interface FleetRow {
  node: string;
  outcome: string;
  revision: string;
  /** The applied revision against main's tip: `main`, `behind main`, `-` (no report), `?` (main unknown). */
  main: string;
  health: string;
  /** Seconds since the report; null: never reported. */
  ageSeconds: number | null;
  /** `none`, or `corrected: <kinds>` / `found: <kinds>`. */
  drift: string;
  note: string;
}

const short = (rev: string) => rev.slice(0, 12);

/** Why the node is not simply enforcing main: suspended, rolled back, halted, waiting, held, or its first error. */
function noteOf(s: NodeStatus): string {
  if (s.suspended) return `suspended by ${s.suspended.by}: ${s.suspended.reason}`;
  if (s.rollback) return `rolled back ${short(s.rollback.revision)}: ${s.rollback.failing.map((f) => f.name).join(', ')}`;
  if (s.rollout?.halted) return `halted: ${s.rollout.halted}`;
  if (s.rollout?.waiting) return `wave ${s.rollout.wave}: ${s.rollout.waiting}`;
  if (s.window) return s.window.waiting;
  if (s.held) return `holding back ${short(s.held.revision)}: ${s.held.reason}`;
  return s.errors[0] ?? '';
}

function driftOf(s: NodeStatus): string {
  if (!s.drift.items.length) return 'none';
  return `${s.drift.corrected ? 'corrected' : 'found'}: ${[...new Set(s.drift.items.map((d) => d.kind))].join(', ')}`;
}

function againstMain(applied: string | undefined, main: string | undefined): string {
  if (main === undefined) return '?';
  return applied === main ? 'main' : 'behind main';
}

export interface FleetContext {
  /** The tracked branch's tip, when known: the rows then say whether each node enforces it. */
  main?: string;
  /** Why a node's branch held no report to believe (a forged or unsigned commit). */
  refused?: ReadonlyMap<string, string>;
  /** Nodes whose reports are believed without a signature (no statusKey). */
  unverified?: readonly string[];
}

export function fleetRows(nodes: string[], reports: ReadonlyMap<string, NodeStatus | null>, now: Date, ctx: FleetContext = {}): FleetRow[] {
  return nodes.map((node) => {
    const s = reports.get(node) ?? null;
    if (!s) return { node, outcome: 'silent', revision: '-', main: '-', health: '-', ageSeconds: null, drift: '-', note: ctx.refused?.get(node) ?? 'never reported' };
    const row = fleetRow(node, s, now, ctx.main);
    return ctx.unverified?.includes(node) ? { ...row, note: `unverified report${row.note ? `; ${row.note}` : ''}` } : row;
  });
}

function fleetRow(node: string, s: NodeStatus, now: Date, main: string | undefined): FleetRow {
  return {
    node,
    outcome: s.outcome,
    revision: s.appliedRevision ? short(s.appliedRevision) : 'none',
    main: againstMain(s.appliedRevision, main),
    health: s.health ? (s.health.state === 'healthy' ? 'healthy' : `unhealthy (${s.health.failing.map((f) => f.name).join(', ')})`) : '-',
    ageSeconds: Math.max(0, Math.round((now.getTime() - Date.parse(s.time)) / 1000)),
    drift: driftOf(s),
    note: noteOf(s).split('\n')[0] ?? '',
  };
}

function age(s: number | null): string {
  if (s === null) return '-';
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

const HEADER = ['NODE', 'REVISION', 'OUTCOME', 'HEALTH', 'AGE', 'MAIN', 'DRIFT', 'NOTE'];
const cells = (r: FleetRow) => [r.node, r.revision, r.outcome, r.health, age(r.ageSeconds), r.main, r.drift, r.note];

/** Aligned columns, one line per node. */
export function formatFleet(rows: FleetRow[]): string {
  const table = [HEADER, ...rows.map(cells)];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return `${table.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n')}\n`;
}

/** A Markdown table cell: one line, pipes escaped, never empty (reports carry text from the nodes). */
export function mdCell(text: string): string {
  const one = text.replace(/[\r\n]+/g, ' ').replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/`/g, "'").trim();
  return one || ' ';
}

/** The fleet as a Markdown table, then the nodes that need attention. `main`: the tip the rows were compared with. */
export function formatFleetMarkdown(rows: FleetRow[], maxAgeSeconds: number, main?: string): string {
  const head = ['node', 'outcome', `applied revision${main ? ` (main \`${short(main)}\`)` : ''}`, 'age of report', 'drift', 'health', 'waiting / halted / suspended'];
  const lines = [
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...rows.map((r) => {
      const revision = r.revision === '-' ? '-' : `\`${r.revision}\` ${mdCell(r.main)}`; // a hex id or "none": safe in a code span
      return `| ${[mdCell(r.node), mdCell(r.outcome), revision, ...[age(r.ageSeconds), r.drift, r.health, r.note].map(mdCell)].join(' | ')} |`;
    }),
  ];
  const problems = fleetProblems(rows, maxAgeSeconds);
  const verdict = problems.length ? `**${problems.length} node(s) need attention:** ${problems.map(mdCell).join('; ')}` : `**All ${rows.length} node(s) reported and none failed.**`;
  return `${lines.join('\n')}\n\n${verdict}\n`;
}

/** Nodes that need attention: failed, rolled back, or silent longer than maxAgeSeconds. */
export function fleetProblems(rows: FleetRow[], maxAgeSeconds: number): string[] {
  return rows
    .filter((r) => r.outcome === 'error' || r.outcome === 'rolled-back' || r.ageSeconds === null || r.ageSeconds > maxAgeSeconds)
    .map((r) => `${r.node}: ${r.ageSeconds === null ? r.note : r.ageSeconds > maxAgeSeconds ? `silent for ${age(r.ageSeconds)}` : r.outcome}`);
}
