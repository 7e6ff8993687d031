// The smallest complete report (status.json) of a converged node, for pure tests of what reads reports.
import type { NodeStatus } from '../../src/agent/report.js';

export function nodeStatus(over: Partial<NodeStatus> = {}): NodeStatus {
  return {
    format: 'cgw-sync.status/v1',
    node: 'node1',
    time: '2026-01-01T00:00:00.000Z',
    outcome: 'converged',
    source: { url: 'http://127.0.0.1/state.git', branch: 'main', state: 'ok' },
    appliedRevision: 'a'.repeat(40),
    plan: null,
    drift: { items: [], corrected: false },
    guests: [],
    hooks: [],
    errors: [],
    timings: {},
    ...over,
  };
}
