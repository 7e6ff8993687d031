// Fleet status: one line per node from every node's latest report (its status branch): revision,
// outcome, health, age of the report, and why it waits, is halted, held or suspended. Pure;
// the reports are read at the edge (src/rollout/commands.ts).
import type { NodeStatus } from '../agent/report.js';

export interface FleetRow {
  node: string;
  outcome: string;
  revision: string;
  health: string;
  /** Seconds since the report; null: never reported. */
  ageSeconds: number | null;
  note: string;
}

/**
 * `trust.refused`: why a node's branch held no report to believe (a forged or unsigned commit);
 * `trust.unverified`: nodes whose reports are believed without a signature (no statusKey).
 */
export function fleetRows(nodes: string[], reports: ReadonlyMap<string, NodeStatus | null>, now: Date, trust: { refused?: ReadonlyMap<string, string>; unverified?: readonly string[] } = {}): FleetRow[] {
  return nodes.map((node) => {
    const s = reports.get(node) ?? null;
    if (!s) return { node, outcome: 'silent', revision: '-', health: '-', ageSeconds: null, note: trust.refused?.get(node) ?? 'never reported' };
    const row = fleetRow(node, s, now);
    return trust.unverified?.includes(node) ? { ...row, note: `unverified report${row.note ? `; ${row.note}` : ''}` } : row;
  });
}

function fleetRow(node: string, s: NodeStatus, now: Date): FleetRow {
  const note = s.suspended
    ? `suspended by ${s.suspended.by}: ${s.suspended.reason}`
    : s.rollback
      ? `rolled back ${s.rollback.revision.slice(0, 12)}: ${s.rollback.failing.map((f) => f.name).join(', ')}`
      : s.rollout?.halted
        ? `halted: ${s.rollout.halted}`
        : s.rollout?.waiting
          ? `wave ${s.rollout.wave}: ${s.rollout.waiting}`
          : s.window
            ? s.window.waiting
            : s.held
            ? `holding back ${s.held.revision.slice(0, 12)}: ${s.held.reason}`
            : (s.errors[0] ?? '');
  return {
    node,
    outcome: s.outcome,
    revision: s.appliedRevision?.slice(0, 12) ?? 'none',
    health: s.health ? (s.health.state === 'healthy' ? 'healthy' : `unhealthy (${s.health.failing.map((f) => f.name).join(', ')})`) : '-',
    ageSeconds: Math.max(0, Math.round((now.getTime() - Date.parse(s.time)) / 1000)),
    note: note.split('\n')[0] ?? '',
  };
}

function age(s: number | null): string {
  if (s === null) return '-';
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

/** Aligned columns, one line per node. */
export function formatFleet(rows: FleetRow[]): string {
  const table = [['NODE', 'REVISION', 'OUTCOME', 'HEALTH', 'AGE', 'NOTE'], ...rows.map((r) => [r.node, r.revision, r.outcome, r.health, age(r.ageSeconds), r.note])];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return `${table.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n')}\n`;
}

/** Nodes that need attention: failed, rolled back, or silent longer than maxAgeSeconds. */
export function fleetProblems(rows: FleetRow[], maxAgeSeconds: number): string[] {
  return rows
    .filter((r) => r.outcome === 'error' || r.outcome === 'rolled-back' || r.ageSeconds === null || r.ageSeconds > maxAgeSeconds)
    .map((r) => `${r.node}: ${r.ageSeconds === null ? r.note : r.ageSeconds > maxAgeSeconds ? `silent for ${age(r.ageSeconds)}` : r.outcome}`);
}
