// Waves: a node of wave k applies a revision only after every node of the earlier waves reported
// it applied (or converged) and healthy at that revision, for soakSeconds; a node of an earlier
// wave that rolled the revision back (or failed on it) halts the later waves at that revision.
// Read from the other nodes' status branches, like the migration gate. Pure.
import type { ClusterState } from '../state/types.js';
import type { NodeStatus } from '../agent/report.js';

/** The node's wave (0-based); nodes not listed form the last wave. */
export function waveOf(state: ClusterState, node: string): number {
  const waves = state.cluster.rollout?.waves ?? [];
  const i = waves.findIndex((w) => w.includes(node));
  return i >= 0 ? i : waves.length;
}

/** The nodes of the waves before `node`'s. */
export function earlierNodes(state: ClusterState, node: string): string[] {
  const mine = waveOf(state, node);
  return state.nodes.map((n) => n.name).filter((n) => n !== node && waveOf(state, n) < mine);
}

export type WaveGate = { go: true } | { go: false; halted: boolean; reason: string };

const short = (rev: string) => rev.slice(0, 12);

/**
 * Whether `node` may apply `revision` now, from the earlier waves' latest reports (null: never
 * reported; `refused`: why what their branch holds was not believed).
 */
export function waveGate(inp: { state: ClusterState; node: string; revision: string; reports: ReadonlyMap<string, NodeStatus | null>; refused?: ReadonlyMap<string, string>; now: Date }): WaveGate {
  const soakMs = (inp.state.cluster.rollout?.soakSeconds ?? 0) * 1000;
  const R = inp.revision;
  const waits: string[] = [];
  for (const other of earlierNodes(inp.state, inp.node)) {
    const s = inp.reports.get(other) ?? null;
    const wave = waveOf(inp.state, other) + 1;
    if (!s) {
      const refused = inp.refused?.get(other);
      waits.push(`node ${other} (wave ${wave}) has not reported${refused ? ` (${refused})` : ''}`);
      continue;
    }
    const rolledBack = s.rollback?.revision === R ? s.rollback.failing.map((f) => `${f.name}: ${f.detail}`).join('; ') : s.held?.revision === R ? s.held.reason : undefined;
    if (rolledBack !== undefined) return { go: false, halted: true, reason: `${other} rolled back ${short(R)}: ${rolledBack}` };
    if (s.source.fetched === R && s.outcome === 'error' && s.rollout?.revision !== R) return { go: false, halted: true, reason: `${other} failed at ${short(R)}: ${s.errors[0] ?? 'error'}` };
    if (s.appliedRevision !== R || (s.outcome !== 'applied' && s.outcome !== 'converged')) waits.push(`node ${other} (wave ${wave}) to apply ${short(R)} (it reports ${s.outcome} at ${s.appliedRevision ? short(s.appliedRevision) : 'none'})`);
    else if (s.health?.state === 'unhealthy') waits.push(`node ${other} (wave ${wave}) to be healthy at ${short(R)}`);
    else if (soakMs > 0) {
      const since = Date.parse(s.appliedAt ?? s.time);
      if (inp.now.getTime() - since < soakMs) waits.push(`node ${other} (wave ${wave}) to soak until ${new Date(since + soakMs).toISOString()}`);
    }
  }
  return waits.length ? { go: false, halted: false, reason: `waiting for ${waits.join(', ')}` } : { go: true };
}
