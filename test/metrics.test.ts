// The metrics registry and the exposition format (src/metrics/): pure, no I/O.
import { describe, expect, it } from 'vitest';
import type { CycleObservation } from '../src/agent/cycle.js';
import type { NodeStatus } from '../src/agent/report.js';
import { AgentMetrics, OUTCOMES } from '../src/metrics/agent.js';
import { escapeLabelValue, formatExposition, Histogram, parseExposition } from '../src/metrics/exposition.js';
import type { NodePlan } from '../src/plan/plan.js';

const REV = 'a'.repeat(40);

function status(over: Partial<NodeStatus> = {}): NodeStatus {
  return {
    format: 'cgw-sync.status/v1',
    node: 'node1',
    time: '2026-01-01T00:00:10Z',
    outcome: 'applied',
    source: { url: 'http://git/state.git', branch: 'main', state: 'ok', fetched: REV },
    appliedRevision: REV,
    appliedAt: '2026-01-01T00:00:10Z',
    plan: null,
    drift: { items: [], corrected: false },
    guests: [],
    hooks: [],
    errors: [],
    timings: { source: 120, load: 30, read: 40, plan: 5, apply: 25, report: 1, publish: 50, total: 271 },
    ...over,
  };
}

/** A plan whose desired ruleset has one table with two maps. */
const planned = (elements: number): CycleObservation['planned'] => ({
  forwards: elements,
  plan: {
    nft: {
      desired: {
        tables: [
          {
            family: 'ip',
            name: 'cgw_nat',
            chains: [],
            maps: [
              { name: 'fwd_tcp', keyType: 'inet_service', dataType: 'ipv4_addr . inet_service', elements: Array.from({ length: elements }, (_, i) => ({ key: i, value: i })) },
              { name: 'fwd_udp', keyType: 'inet_service', dataType: 'ipv4_addr . inet_service', elements: [] },
            ],
          },
        ],
      },
    },
  } as unknown as NodePlan,
});

const sample = (text: string, name: string, labels: Record<string, string> = {}) =>
  parseExposition(text).samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

describe('exposition format', () => {
  it('escapes label values so a value cannot end its quotes or start a line', () => {
    const hostile = 'x"} 1\nevil_metric 666\\';
    const text = formatExposition([{ name: 'm', help: 'help with \\ and\nnewline', type: 'gauge', samples: [{ labels: { v: hostile }, value: 1 }] }]);
    expect(text.split('\n').filter((l) => l.startsWith('evil_metric'))).toEqual([]);
    expect(text).toContain(`m{v="${escapeLabelValue(hostile)}"} 1`);
    expect(text).toContain('# HELP m help with \\\\ and\\nnewline');
    const parsed = parseExposition(text);
    expect(parsed.samples).toEqual([{ name: 'm', labels: { v: hostile }, value: 1 }]);
    expect(parsed.types).toEqual({ m: 'gauge' });
  });

  it('refuses invalid metric and label names instead of writing them', () => {
    expect(() => formatExposition([{ name: 'bad name', help: '', type: 'gauge', samples: [] }])).toThrow(/invalid metric name/);
    expect(() => formatExposition([{ name: 'm', help: '', type: 'gauge', samples: [{ labels: { 'a-b': 'x' }, value: 1 }] }])).toThrow(/invalid label name/);
  });

  it('writes special values as Prometheus spells them', () => {
    const text = formatExposition([{ name: 'm', help: 'h', type: 'gauge', samples: [{ labels: { a: '1' }, value: Infinity }, { labels: { a: '2' }, value: Number.NaN }] }]);
    expect(text).toContain('m{a="1"} +Inf');
    expect(text).toContain('m{a="2"} NaN');
  });

  it('histograms are cumulative, with +Inf equal to the count', () => {
    const h = new Histogram([0.1, 1]);
    for (const v of [0.05, 0.5, 0.7, 3]) h.observe(v);
    const text = formatExposition([{ name: 'd', help: 'h', type: 'histogram', samples: h.samples({ phase: 'x' }) }]);
    expect(sample(text, 'd_bucket', { le: '0.1' })).toBe(1);
    expect(sample(text, 'd_bucket', { le: '1' })).toBe(3);
    expect(sample(text, 'd_bucket', { le: '+Inf' })).toBe(4);
    expect(sample(text, 'd_count')).toBe(4);
    expect(sample(text, 'd_sum')).toBeCloseTo(4.25);
  });
});

describe('agent metrics', () => {
  it('every outcome counter exists from the start, at 0', () => {
    const text = formatExposition(new AgentMetrics().families(new Date()));
    for (const o of OUTCOMES) expect(sample(text, 'cgw_sync_cycles_total', { outcome: o })).toBe(0);
    // Nothing is claimed before a cycle said it.
    expect(sample(text, 'cgw_sync_applied_revision_info')).toBeUndefined();
    expect(sample(text, 'cgw_sync_last_success_timestamp_seconds')).toBeUndefined();
  });

  it('folds cycles into outcome counts, phase durations, drift, revision, sizes and guests', () => {
    const m = new AgentMetrics();
    const t1 = new Date('2026-01-01T00:00:10Z');
    m.observe({ outcome: 'applied', status: status({ guests: [{ name: 'g1', state: 'running' }, { name: 'g2', state: 'running' }, { name: 'g3', state: 'waiting' }] }), planned: planned(3) }, t1);
    m.setCommitTime(REV, t1.getTime() / 1000 - 100);
    const t2 = new Date('2026-01-01T00:01:10Z');
    const drift = { items: [{ kind: 'elements-changed' as const, table: 'ip cgw_nat', detail: 'x' }, { kind: 'rules-changed' as const, table: 'ip cgw_nat', detail: 'y' }], corrected: true };
    m.observe({ outcome: 'converged', status: status({ outcome: 'converged', drift, timings: { source: 10, total: 20 } }) }, t2);
    m.observe({ outcome: 'skipped' }, t2);
    const text = formatExposition(m.families(new Date('2026-01-01T00:02:00Z')));
    expect(sample(text, 'cgw_sync_cycles_total', { outcome: 'applied' })).toBe(1);
    expect(sample(text, 'cgw_sync_cycles_total', { outcome: 'converged' })).toBe(1);
    expect(sample(text, 'cgw_sync_cycles_total', { outcome: 'skipped' })).toBe(1);
    expect(sample(text, 'cgw_sync_cycle_duration_seconds_count')).toBe(2);
    expect(sample(text, 'cgw_sync_cycle_duration_seconds_sum')).toBeCloseTo(0.291);
    expect(sample(text, 'cgw_sync_cycle_phase_duration_seconds_count', { phase: 'source' })).toBe(2);
    expect(sample(text, 'cgw_sync_cycle_phase_duration_seconds_sum', { phase: 'read' })).toBeCloseTo(0.04);
    expect(sample(text, 'cgw_sync_last_cycle_phase_seconds', { phase: 'total' })).toBeCloseTo(0.02);
    expect(sample(text, 'cgw_sync_drift_items_total', { kind: 'elements-changed' })).toBe(1);
    expect(sample(text, 'cgw_sync_drift_corrections_total')).toBe(1);
    expect(sample(text, 'cgw_sync_applied_revision_info', { revision: REV })).toBe(1);
    expect(sample(text, 'cgw_sync_applied_revision_commit_timestamp_seconds')).toBe(t1.getTime() / 1000 - 100);
    expect(sample(text, 'cgw_sync_applied_revision_age_seconds')).toBe(210);
    expect(sample(text, 'cgw_sync_last_success_timestamp_seconds')).toBe(t2.getTime() / 1000);
    // Sizes and guests stay those of the last cycle that planned.
    expect(sample(text, 'cgw_sync_forwards')).toBe(3);
    expect(sample(text, 'cgw_sync_map_elements', { table: 'ip cgw_nat', map: 'fwd_tcp' })).toBe(3);
    expect(sample(text, 'cgw_sync_map_elements', { table: 'ip cgw_nat', map: 'fwd_udp' })).toBe(0);
    expect(sample(text, 'cgw_sync_guests', { state: 'running' })).toBe(2);
    expect(sample(text, 'cgw_sync_guests', { state: 'waiting' })).toBe(1);
  });

  it('a new revision forgets the old one\'s commit time; an error does not move the last success', () => {
    const m = new AgentMetrics();
    m.observe({ outcome: 'applied', status: status() }, new Date('2026-01-01T00:00:10Z'));
    m.setCommitTime(REV, 1000);
    const other = 'b'.repeat(40);
    m.observe({ outcome: 'error', status: status({ outcome: 'error', appliedRevision: other }) }, new Date('2026-01-01T00:05:00Z'));
    m.setCommitTime(REV, 2000); // late answer for the old revision: ignored
    const text = formatExposition(m.families(new Date('2026-01-01T00:06:00Z')));
    expect(sample(text, 'cgw_sync_applied_revision_info', { revision: other })).toBe(1);
    expect(sample(text, 'cgw_sync_applied_revision_info', { revision: REV })).toBeUndefined();
    expect(sample(text, 'cgw_sync_applied_revision_commit_timestamp_seconds')).toBeUndefined();
    expect(sample(text, 'cgw_sync_last_success_timestamp_seconds')).toBe(Date.parse('2026-01-01T00:00:10Z') / 1000);
  });

  it('counts webhook requests by forge and result', () => {
    const m = new AgentMetrics();
    m.countWebhook('github', 'triggered');
    m.countWebhook('github', 'triggered');
    m.countWebhook('unknown', 'not_found');
    const text = formatExposition(m.families(new Date()));
    expect(sample(text, 'cgw_sync_webhook_requests_total', { forge: 'github', result: 'triggered' })).toBe(2);
    expect(sample(text, 'cgw_sync_webhook_requests_total', { forge: 'unknown', result: 'not_found' })).toBe(1);
  });
});
