// The agent's metrics: what each cycle reports (src/agent/cycle.ts observe()) folded into
// counters and gauges, and the webhook receiver's request counts. Pure: the clock is passed in,
// the commit time of a revision is looked up by the caller (revision-time.ts).
import type { CycleObservation } from '../agent/cycle.js';
import type { NodeStatus } from '../agent/report.js';
import { Histogram, type MetricFamily, type Sample } from './exposition.js';

/** Every outcome, so each counter exists (at 0) from the start and rate() works on the first one. */
export const OUTCOMES: readonly CycleObservation['outcome'][] = ['applied', 'converged', 'drift-reported', 'vetoed', 'rolled-back', 'suspended', 'error', 'skipped'];
/** The cycle's phases as src/agent/cycle.ts times them. */
export const PHASES = ['source', 'load', 'read', 'plan', 'health', 'apply', 'report', 'publish'] as const;
/** Seconds: a no-op cycle takes milliseconds, a guest start or a slow Git server tens of seconds. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export type WebhookResult = 'triggered' | 'ignored' | 'ping' | 'unauthorized' | 'bad_request' | 'too_large' | 'not_found' | 'method_not_allowed' | 'unsupported_media_type';

export interface RevisionInfo {
  revision: string;
  /** When this node first applied it (unix seconds). */
  appliedAt?: number;
  /** The commit's committer time (unix seconds); absent for a folder source. */
  committedAt?: number;
}

const seconds = (iso: string | undefined) => (iso === undefined ? undefined : Date.parse(iso) / 1000);
const gauge = (name: string, help: string, samples: Sample[]): MetricFamily => ({ name, help, type: 'gauge', samples });
const counter = (name: string, help: string, samples: Sample[]): MetricFamily => ({ name, help, type: 'counter', samples });
const byLabel = (label: string, m: Map<string, number>): Sample[] => [...m].sort(([a], [b]) => (a < b ? -1 : 1)).map(([v, value]) => ({ labels: { [label]: v }, value }));

/** Sum of `n` per key. */
function countBy<T>(items: T[], key: (t: T) => string, into = new Map<string, number>(), n = 1): Map<string, number> {
  for (const it of items) into.set(key(it), (into.get(key(it)) ?? 0) + n);
  return into;
}

export class AgentMetrics {
  private readonly outcomes = new Map<string, number>(OUTCOMES.map((o) => [o, 0]));
  private readonly cycle = new Histogram(DURATION_BUCKETS);
  private readonly phases = new Map<string, Histogram>(PHASES.map((p) => [p, new Histogram(DURATION_BUCKETS)]));
  private readonly driftItems = new Map<string, number>();
  private driftCorrected = 0;
  private readonly webhook = new Map<string, number>();
  private lastCycle?: { at: number; phases: Record<string, number> };
  private lastSettled?: number;
  private revision?: RevisionInfo;
  private size?: { forwards: number; elements: Map<string, number> };
  private guests?: Map<string, number>;
  private source?: NodeStatus['source']['state'];

  /** Fold one cycle in; `now` is when it ended. */
  observe(o: CycleObservation, now: Date): void {
    this.outcomes.set(o.outcome, (this.outcomes.get(o.outcome) ?? 0) + 1);
    const s = o.status;
    if (!s) return;
    const t = o.timings ?? s.timings;
    if (t.total !== undefined) this.cycle.observe(t.total / 1000);
    for (const [phase, ms] of Object.entries(t)) if (phase !== 'total') this.phaseHistogram(phase).observe(ms / 1000);
    this.lastCycle = { at: now.getTime() / 1000, phases: Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v / 1000])) };
    countBy(s.drift.items, (d) => d.kind, this.driftItems);
    if (s.drift.corrected) this.driftCorrected++;
    if (s.outcome === 'applied' || s.outcome === 'converged') this.lastSettled = now.getTime() / 1000;
    this.source = s.source.state;
    if (s.appliedRevision && s.appliedRevision !== this.revision?.revision) this.revision = { revision: s.appliedRevision };
    if (this.revision) this.revision.appliedAt = seconds(s.appliedAt);
    if (o.planned) {
      const elements = new Map<string, number>();
      for (const t of o.planned.plan.nft.desired.tables) for (const m of t.maps) elements.set(`${t.family} ${t.name}\0${m.name}`, m.elements.length);
      this.size = { forwards: o.planned.forwards, elements };
    }
    // Guests are reported only by cycles that got to plan them; others leave the last count.
    if (o.planned) this.guests = countBy(s.guests, (g) => g.state);
  }

  /** The applied revision's commit time, once looked up (it is the same for every cycle). */
  setCommitTime(revision: string, committedAt: number): void {
    if (this.revision?.revision === revision) this.revision.committedAt = committedAt;
  }

  appliedRevision(): string | undefined {
    return this.revision?.revision;
  }

  countWebhook(forge: string, result: WebhookResult): void {
    const key = `${forge}\0${result}`;
    this.webhook.set(key, (this.webhook.get(key) ?? 0) + 1);
  }

  private phaseHistogram(phase: string): Histogram {
    const h = this.phases.get(phase) ?? new Histogram(DURATION_BUCKETS);
    this.phases.set(phase, h);
    return h;
  }

  /** Every family, as of `now` (ages are computed from it). */
  families(now: Date): MetricFamily[] {
    const t = now.getTime() / 1000;
    const rev = this.revision;
    const out: MetricFamily[] = [
      counter('cgw_sync_cycles_total', 'Reconcile cycles by outcome (skipped: another cycle held the lock).', byLabel('outcome', this.outcomes)),
      { name: 'cgw_sync_cycle_duration_seconds', help: 'Duration of whole reconcile cycles.', type: 'histogram', samples: this.cycle.samples() },
      { name: 'cgw_sync_cycle_phase_duration_seconds', help: 'Duration of each phase of the reconcile cycles.', type: 'histogram', samples: [...this.phases].flatMap(([phase, h]) => h.samples({ phase })) },
      gauge('cgw_sync_last_cycle_phase_seconds', 'Duration of each phase of the last cycle (total: the whole cycle).', Object.entries(this.lastCycle?.phases ?? {}).map(([phase, value]) => ({ labels: { phase }, value }))),
      gauge('cgw_sync_last_cycle_timestamp_seconds', 'When the last cycle ended (unix time).', this.lastCycle ? [{ value: this.lastCycle.at }] : []),
      gauge('cgw_sync_last_success_timestamp_seconds', 'When a cycle last ended applied or converged: the node enforced its desired state then (unix time).', this.lastSettled === undefined ? [] : [{ value: this.lastSettled }]),
      counter('cgw_sync_drift_items_total', 'Drift found in the owned tables, by kind (hand-made changes since the last apply).', byLabel('kind', this.driftItems)),
      counter('cgw_sync_drift_corrections_total', 'Cycles that put hand-made changes back.', [{ value: this.driftCorrected }]),
      gauge('cgw_sync_source_state', 'State of the tracked revision in the last cycle (1 for the current state).', this.source ? [{ labels: { state: this.source }, value: 1 }] : []),
      gauge('cgw_sync_applied_revision_info', 'The revision this node enforces (always 1).', rev ? [{ labels: { revision: rev.revision }, value: 1 }] : []),
      gauge('cgw_sync_applied_revision_applied_timestamp_seconds', 'When this node first applied the revision it enforces (unix time).', rev?.appliedAt === undefined ? [] : [{ value: rev.appliedAt }]),
      gauge('cgw_sync_applied_revision_commit_timestamp_seconds', 'Committer time of the revision this node enforces (unix time).', rev?.committedAt === undefined ? [] : [{ value: rev.committedAt }]),
      gauge('cgw_sync_applied_revision_age_seconds', 'Age of the enforced revision\'s commit when these metrics were produced.', rev?.committedAt === undefined ? [] : [{ value: Math.max(0, t - rev.committedAt) }]),
      gauge('cgw_sync_forwards', 'Forwards of the enforced state that enter this node.', this.size ? [{ value: this.size.forwards }] : []),
      gauge('cgw_sync_map_elements', 'Elements of each nftables map the enforced state renders.', this.size ? [...this.size.elements].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, value]) => ({ labels: { table: k.split('\0')[0], map: k.split('\0')[1] }, value })) : []),
      gauge('cgw_sync_guests', 'Guests placed on or found on this node, by state.', this.guests ? byLabel('state', this.guests) : []),
      counter('cgw_sync_webhook_requests_total', 'Requests to the webhook receiver, by forge and result.', [...this.webhook].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, value]) => ({ labels: { forge: k.split('\0')[0], result: k.split('\0')[1] }, value }))),
    ];
    return out;
  }
}
