// Waves with real parts: two agents (node1 in wave 1, node2 in wave 2), each with real nft in its
// own namespace and guest1's service on its guest bridge, one real Git server for the state and
// both status branches. node2 applies a revision only after node1 reported it applied and
// healthy; node1's rollback halts node2 at that revision (node2's forwards are never touched);
// a fixed commit starts a new rollout that reaches both.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commitFiles, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { mainTip, readPublished, startTestAgent, stateExampleFiles, withExtraForward, type TestAgent } from './helpers/agent-fixture.js';
import { checkedState, serveGuestsIn, type ServedNode } from './helpers/health-node.js';
import type { NodeStatus } from '../src/agent/report.js';
import { syntheticState } from '../src/bench/synthetic.js';
import { earlierNodes, waveGate, waveOf } from '../src/rollout/waves.js';

const WAVES = 'rollout:\n  waves: [[node1], [node2]]\n';
const fwdMap = (a: TestAgent) => a.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp']);

describe('waves: node2 follows node1, and a rollback on node1 halts node2', () => {
  let fx: GitFixture;
  let base: Record<string, string>;
  const agents: TestAgent[] = [];
  const served: ServedNode[] = [];
  let node1: TestAgent;
  let node2: TestAgent;
  beforeAll(async () => {
    base = await stateExampleFiles();
    fx = await startGitFixture({ files: checkedState(base, 22, WAVES) });
    for (const [name, ip] of [['node1', '10.5.5.251'], ['node2', '10.5.5.252']] as const) {
      const a = await startTestAgent(fx, name);
      agents.push(a);
      served.push(await serveGuestsIn(a.ns, [ip, '10.5.5.254', '10.5.5.201']));
    }
    [node1, node2] = agents as [TestAgent, TestAgent];
  });
  afterAll(async () => {
    for (const s of served) await s.stop();
    for (const a of agents) await a.destroy();
    await fx?.cleanup();
  });

  it('a wave-2 node waits for wave 1, then applies the same revision', async () => {
    const r1 = await mainTip(fx);
    const early = await node2.cycle();
    expect(early.outcome).toBe('error');
    expect(early.rollout).toEqual({ wave: 2, revision: r1, waiting: 'waiting for node node1 (wave 1) has not reported' });
    expect(await node2.tables()).toEqual([]);
    expect(await node1.cycle()).toMatchObject({ outcome: 'applied', appliedRevision: r1, health: { state: 'healthy' } });
    const late = await node2.cycle();
    expect(late).toMatchObject({ outcome: 'applied', appliedRevision: r1 });
    expect(late.rollout).toBeUndefined();
  });

  it('node1 rolls back a bad revision; node2 never applies it and says it is halted', async () => {
    const r1 = await mainTip(fx);
    const bad = await commitFiles(fx.repo, checkedState(base, 2222, WAVES), { message: 'ssh-guest1 to a closed port' });
    const waiting = await node2.cycle();
    expect(waiting).toMatchObject({ outcome: 'converged', appliedRevision: r1, rollout: { wave: 2, revision: bad } });
    expect(waiting.rollout?.waiting).toMatch(/^waiting for node node1 \(wave 1\) to apply /);

    expect(await node1.cycle()).toMatchObject({ outcome: 'rolled-back', appliedRevision: r1 });
    const halted = await node2.cycle();
    expect(halted).toMatchObject({ outcome: 'converged', appliedRevision: r1, rollout: { wave: 2, revision: bad, halted: `node1 rolled back ${bad.slice(0, 12)}: forward ssh-guest1: ECONNREFUSED` } });
    expect(await fwdMap(node2)).toContain('2201 : 10.5.5.201 . 22');
    expect(await fwdMap(node2)).not.toContain('2222');
    const published = await readPublished(fx, 'node2');
    expect(published?.subject).toContain(`halted: node1 rolled back ${bad.slice(0, 12)}: forward ssh-guest1: ECONNREFUSED`);
    expect(published?.markdown).toContain('**Halted:** node1 rolled back');
  });

  it('a newer commit starts a new rollout that reaches both waves', async () => {
    const fixed = await commitFiles(fx.repo, withExtraForward(checkedState(base, 22, WAVES), 'extra', 2299), { message: 'fix' });
    expect((await node2.cycle()).rollout?.waiting).toMatch(/node node1 \(wave 1\) to apply/);
    expect(await node1.cycle()).toMatchObject({ outcome: 'applied', appliedRevision: fixed });
    const s2 = await node2.cycle();
    expect(s2).toMatchObject({ outcome: 'applied', appliedRevision: fixed });
    expect(s2.rollout).toBeUndefined();
    expect(await fwdMap(node2)).toContain('2299 : 10.5.5.201 . 22');
  });
});

describe('waveGate (pure)', () => {
  const state = syntheticState(3);
  state.cluster.rollout = { waves: [['node1']], soakSeconds: 60 };
  const R = 'a'.repeat(40);
  const report = (over: Partial<NodeStatus>): NodeStatus => ({ format: 'cgw-sync.status/v1', node: 'node1', time: '2026-01-01T00:00:00Z', outcome: 'applied', source: { url: '', branch: 'main', state: 'ok', fetched: R }, appliedRevision: R, appliedAt: '2026-01-01T00:00:00Z', plan: null, drift: { items: [], corrected: false }, guests: [], hooks: [], errors: [], timings: {}, ...over });
  const gate = (s: NodeStatus | null, now = '2026-01-01T00:10:00Z', node = 'node3') => waveGate({ state, node, revision: R, reports: new Map([['node1', s]]), now: new Date(now) });

  it('puts unlisted nodes in a last wave and opens it after the soak', () => {
    expect([waveOf(state, 'node1'), waveOf(state, 'node2'), waveOf(state, 'node3')]).toEqual([0, 1, 1]);
    expect(earlierNodes(state, 'node3')).toEqual(['node1']);
    expect(gate(report({}), '2026-01-01T00:00:30Z')).toEqual({ go: false, halted: false, reason: 'waiting for node node1 (wave 1) to soak until 2026-01-01T00:01:00.000Z' });
    expect(gate(report({}))).toEqual({ go: true });
    expect(gate(report({}), undefined, 'node1')).toEqual({ go: true });
  });

  it('waits for an unhealthy node; halts on a failed one', () => {
    expect(gate(report({ health: { state: 'unhealthy', checks: 3, failing: [] } }))).toMatchObject({ go: false, halted: false, reason: expect.stringContaining('to be healthy') });
    expect(gate(report({ outcome: 'error', appliedRevision: 'b'.repeat(40), errors: ['apply failed'] }))).toEqual({ go: false, halted: true, reason: `node1 failed at ${R.slice(0, 12)}: apply failed` });
    expect(gate(null)).toMatchObject({ go: false, halted: false });
  });
});
