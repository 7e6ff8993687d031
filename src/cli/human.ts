// What `once` and `run` print for people: one line per cycle that says what happened and, when
// something went wrong, why (the reason is otherwise only in the status branch or --log json).
// Pure.
import type { NodeStatus } from '../agent/report.js';

const short = (rev: string | undefined) => (rev ? rev.slice(0, 12) : 'no revision yet');

/** Multi-line messages (diagnostics) folded into one line. */
const oneLine = (s: string) => s.split('\n').map((l) => l.trim()).filter(Boolean).join('; ');

/** `node1: error: <why>`, `node1: applied <rev>`, `node1: converged at <rev>; source refused: ...`. */
export function cycleLine(s: NodeStatus): string {
  const at = short(s.appliedRevision);
  const drift = s.drift.items.length ? `${s.drift.corrected ? 'corrected' : 'found'} drift: ${s.drift.items.map((d) => `${d.table} ${d.kind}`).join(', ')}` : '';
  // The source's problem is already the cycle's error when nothing could be loaded.
  const source = s.source.state !== 'ok' && s.source.message && !s.errors.includes(s.source.message) ? `source ${s.source.state}: ${s.source.message}` : '';
  const what: Record<NodeStatus['outcome'], string> = {
    error: `error: ${s.errors.join('; ') || source || 'unknown'}${s.appliedRevision ? ` (enforcing ${at})` : ''}`,
    vetoed: `vetoed: ${s.errors.join('; ')}`,
    applied: `applied ${at}`,
    converged: `converged at ${at}`,
    'drift-reported': `drift reported at ${at}, left in place (drift: report)`,
    'rolled-back': s.rollback ? `rolled back ${short(s.rollback.revision)} to ${short(s.rollback.restored)}: failing ${s.rollback.failing.map((f) => `${f.name}: ${f.detail}`).join(', ')}` : `rolled back to ${at}`,
    suspended: `suspended at ${at}${s.suspended ? ` by ${s.suspended.by}: ${s.suspended.reason}` : ''}; nothing applied`,
  };
  // Why a new revision waits: a change window or an earlier wave.
  const rollout = [s.window ? `waiting for window: ${s.window.waiting}` : '', s.rollout?.halted ? `halted: ${s.rollout.halted}` : s.rollout?.waiting ? `wave ${s.rollout.wave} waiting for ${s.rollout.waiting}` : ''];
  const extra = [drift, ...rollout, s.outcome === 'error' ? '' : source, s.outcome === 'error' || s.outcome === 'vetoed' ? '' : s.errors.join('; ')].filter(Boolean);
  return oneLine(`${s.node}: ${what[s.outcome]}${extra.length ? `; ${extra.join('; ')}` : ''}`);
}

/** The agent's own lines without a report (skipped cycle, crash, stop). */
export function logLine(line: Record<string, unknown>): string {
  const why = line.reason ?? line.error;
  const count = line.cycles === undefined ? '' : ` after ${String(line.cycles)} cycle(s)`;
  return oneLine(`${String(line.node)}: ${String(line.outcome)}${count}${why ? `: ${String(why)}` : ''}`);
}
