// The fleet table's renderings, pure: what each column says for each kind of report, and that
// text from the nodes (errors, reasons) cannot break a Markdown table.
import { describe, expect, it } from 'vitest';
import type { NodeStatus } from '../src/agent/report.js';
import { nodeStatus } from './helpers/node-status.js';
import { fleetProblems, fleetRows, formatFleetMarkdown, mdCell } from '../src/rollout/fleet.js';

const NOW = new Date('2026-11-30T12:00:00Z');
const MAIN = 'a'.repeat(40);
const OLD = 'b'.repeat(40);

const report = (over: Partial<NodeStatus>) => nodeStatus({ time: '2026-11-30T11:59:30Z', appliedRevision: MAIN, ...over });

describe('fleet rows and Markdown', () => {
  const reports = new Map<string, NodeStatus | null>([
    ['node1', report({ health: { state: 'healthy', checks: 3, failing: [] } })],
    ['node2', report({ node: 'node2', outcome: 'error', appliedRevision: OLD, time: '2026-11-30T10:00:00Z', errors: ['nft: syntax error | near "x"\nline 2'], drift: { items: [{ kind: 'elements-changed', table: 'ip cgw_nat', detail: 'x' }], corrected: true } })],
    ['node3', report({ node: 'node3', outcome: 'applied', appliedRevision: OLD, rollout: { wave: 2, revision: MAIN, halted: 'node1 rolled back aaaa: forward web: ECONNREFUSED' } })],
    ['node4', null],
  ]);
  const rows = fleetRows(['node1', 'node2', 'node3', 'node4'], reports, NOW, { main: MAIN });

  it('says per node: revision against main, age, drift, health and why', () => {
    expect(rows.map((r) => [r.node, r.outcome, r.main, r.ageSeconds, r.drift, r.health, r.note])).toEqual([
      ['node1', 'converged', 'main', 30, 'none', 'healthy', ''],
      ['node2', 'error', 'behind main', 7200, 'corrected: elements-changed', '-', 'nft: syntax error | near "x"'],
      ['node3', 'applied', 'behind main', 30, 'none', '-', 'halted: node1 rolled back aaaa: forward web: ECONNREFUSED'],
      ['node4', 'silent', '-', null, '-', '-', 'never reported'],
    ]);
    expect(fleetProblems(rows, 3600)).toEqual(['node2: silent for 2h', 'node4: never reported']);
    expect(fleetRows(['node1'], reports, NOW)[0]!.main).toBe('?');
  });

  it('renders a Markdown table whose cells cannot break it', () => {
    const md = formatFleetMarkdown(rows, 3600, MAIN).split('\n');
    expect(md[0]).toBe('| node | outcome | applied revision (main `aaaaaaaaaaaa`) | age of report | drift | health | waiting / halted / suspended |');
    expect(md[3]).toBe('| node2 | error | `bbbbbbbbbbbb` behind main | 2h | corrected: elements-changed | - | nft: syntax error \\| near "x" |');
    expect(md[5]).toBe('| node4 | silent | - | - | - | - | never reported |');
    expect(md[7]).toBe('**2 node(s) need attention:** node2: silent for 2h; node4: never reported');
    // Every table row has exactly the header's 7 cells (unescaped pipes).
    for (const line of md.slice(0, 6)) expect(line.split(/(?<!\\)\|/).length - 2).toBe(7);
    expect(mdCell('a`b\nc\\|')).toBe("a'b c\\\\\\|");
    expect(mdCell('')).toBe(' ');
  });
});
