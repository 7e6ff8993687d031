// The running agent plans against the ruleset it committed, learns of hand-made changes from
// nft monitor in its namespace, and corrects them at once. Real nft in a namespace, a real Git
// server, and the real backend wrapped only to count its calls. The cron never fires here: every
// cycle after the first is started by a trigger or an nft event.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type Agent } from '../src/agent/run.js';
import type { NodeStatus } from '../src/agent/report.js';
import { NftCli } from '../src/nft/backend.js';
import type { Ruleset } from '../src/nft/model.js';
import type { TableRef, Transaction } from '../src/nft/transaction.js';
import { processAlive, waitUntil } from '../src/proc/process.js';
import { commitFiles, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { startTestAgent, stateExampleFiles, withExtraForward, type TestAgent } from './helpers/agent-fixture.js';

/** The real backend, counting what it is asked to do. */
class CountingNft extends NftCli {
  readonly calls = { list: 0, listBaseChains: 0, run: 0 };
  override async list(tables: TableRef[]): Promise<Ruleset> {
    this.calls.list++;
    return super.list(tables);
  }
  override async listBaseChains() {
    this.calls.listBaseChains++;
    return super.listBaseChains();
  }
  override async run(tx: Transaction): Promise<void> {
    this.calls.run++;
    return super.run(tx);
  }
}

const DEADLINE_MS = 10_000;

describe('agent: committed ruleset in memory, drift by nft monitor events', () => {
  let fx: GitFixture;
  let node: TestAgent;
  let nft: CountingNft;
  let agent: Agent;
  const logs: { line: Record<string, unknown>; status?: NodeStatus }[] = [];
  const cycleLogs = () => logs.filter((l) => l.status);
  const lastCycle = () => cycleLogs().at(-1)!;

  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
    // 1 January at midnight: the schedule does not fire during the test.
    node = await startTestAgent(fx, 'node1', { schedule: { cron: '0 0 1 1 *', jitterSeconds: 0, fullReadSeconds: 3600 } });
    nft = new CountingNft({ prefix: ['ip', 'netns', 'exec', node.ns.ns] });
    agent = startAgent({ config: node.config, nft, log: (line, status) => logs.push({ line, ...(status && { status }) }) });
    expect(await waitUntil(() => cycleLogs().length === 1, DEADLINE_MS)).toBe(true);
    expect(lastCycle().status).toMatchObject({ outcome: 'applied' });
    // Our own transaction's event has arrived (the monitor is subscribed) and was recognised.
    expect(await waitUntil(() => agent.watch!.seen.own >= 1, DEADLINE_MS)).toBe(true);
  }, 60_000);
  afterAll(async () => {
    await agent?.stop();
    await node?.destroy();
    await fx?.cleanup();
  });

  it('a cycle with nothing new lists no nft table and no chain, and runs no transaction', async () => {
    const before = { ...nft.calls };
    await agent.trigger('test: nothing new');
    expect(lastCycle().status).toMatchObject({ outcome: 'converged' });
    expect(lastCycle().line).toMatchObject({ trigger: 'test: nothing new' });
    expect(nft.calls).toEqual(before);
  });

  it('its own apply is recognised in the monitor events and starts no extra cycle', async () => {
    const { own, ours } = agent.watch!.seen;
    const before = { ...nft.calls };
    await commitFiles(fx.repo, withExtraForward(await stateExampleFiles(), 'extra', 2299), { message: 'forward 2299' });
    await agent.trigger('test: new revision');
    expect(lastCycle().status).toMatchObject({ outcome: 'applied', drift: { items: [] } });
    const cycles = agent.cycles();
    expect(await waitUntil(() => agent.watch!.seen.own > own, DEADLINE_MS)).toBe(true);
    // Batches are judged as they arrive: ours was not taken for a foreign change.
    expect(agent.watch!.seen.ours).toBe(ours);
    expect(agent.cycles()).toBe(cycles);
    // One transaction, patched into memory: no listing of the table.
    expect(nft.calls).toEqual({ ...before, run: before.run + 1 });
    expect(await node.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp'])).toContain('2299 : 10.5.5.201 . 22');
  });

  it('an element added by hand is corrected promptly by an event-started cycle that reads the tables in full', async () => {
    const cycles = cycleLogs().length;
    const lists = nft.calls.list;
    const t0 = Date.now();
    await node.ns.raw(['add', 'element', 'ip', 'cgw_nat', 'fwd_tcp', '{ 2999 : 10.5.5.202 . 22 }']);
    const corrected = await waitUntil(() => cycleLogs().length > cycles && lastCycle().status!.outcome === 'applied', DEADLINE_MS);
    const ms = Date.now() - t0;
    expect(corrected).toBe(true);
    expect(ms).toBeLessThan(3_000);
    const c = lastCycle();
    expect(String(c.line.trigger)).toMatch(/^nft: changed by another process: ip cgw_nat/);
    expect(c.status!.drift).toMatchObject({ corrected: true, items: [{ kind: 'elements-changed', table: 'ip cgw_nat' }] });
    expect(c.status!.drift.items[0]!.detail).toContain('2999');
    expect(nft.calls.list).toBe(lists + 1);
    expect(await node.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp'])).not.toContain('2999');
  });

  it('a rule deleted by hand is put back', async () => {
    const cycles = cycleLogs().length;
    const listing = await node.ns.raw(['-a', 'list', 'chain', 'ip', 'cgw_nat', 'prerouting']);
    const handle = /dport map @fwd_tcp .*# handle (\d+)/.exec(listing)?.[1];
    expect(handle).toBeDefined();
    await node.ns.raw(['delete', 'rule', 'ip', 'cgw_nat', 'prerouting', 'handle', handle!]);
    expect(await waitUntil(() => cycleLogs().length > cycles && lastCycle().status!.outcome === 'applied', DEADLINE_MS)).toBe(true);
    expect(lastCycle().status!.drift).toMatchObject({ corrected: true, items: [{ kind: 'rules-changed', table: 'ip cgw_nat' }] });
    expect(await node.ns.raw(['list', 'chain', 'ip', 'cgw_nat', 'prerouting'])).toContain('dport map @fwd_tcp');
  });

  it('a change to a foreign table starts no cycle', async () => {
    const { elsewhere, ours } = agent.watch!.seen;
    const cycles = agent.cycles();
    await node.ns.raw(['add', 'table', 'ip', 'foreign_filter']);
    await node.ns.raw(['add', 'chain', 'ip', 'foreign_filter', 'input', '{ type filter hook input priority 0; }']);
    expect(await waitUntil(() => agent.watch!.seen.elsewhere >= elsewhere + 2, DEADLINE_MS)).toBe(true);
    expect(agent.watch!.seen.ours).toBe(ours);
    expect(agent.cycles()).toBe(cycles);
    // The new foreign base chain is read on the next cycle (shadowing report), the tables are not.
    const before = { ...nft.calls };
    await agent.trigger('test: after a foreign change');
    expect(nft.calls).toEqual({ ...before, listBaseChains: before.listBaseChains + 1 });
    await node.ns.raw(['delete', 'table', 'ip', 'foreign_filter']);
  });

  it('a killed monitor is restarted (and logged), and the tables are read in full', async () => {
    const pid = agent.watch!.monitorPid()!;
    expect(processAlive(pid)).toBe(true);
    const lists = nft.calls.list;
    process.kill(pid, 'SIGKILL');
    const restarted = () => logs.find((l) => l.line.outcome === 'nft-monitor' && l.line.event === 'restarted');
    expect(await waitUntil(() => !!restarted() && cycleLogs().at(-1)?.line.trigger === 'nft monitor restarted: full read', DEADLINE_MS)).toBe(true);
    expect(logs.find((l) => l.line.outcome === 'nft-monitor' && l.line.event === 'exited')?.line.reason).toMatch(/SIGKILL/);
    expect(agent.watch!.monitorPid()).not.toBe(pid);
    expect(nft.calls.list).toBe(lists + 1);
    expect(lastCycle().status).toMatchObject({ outcome: 'converged' });
  });

  it('stop() ends the monitor process with the agent', async () => {
    const pid = agent.watch!.monitorPid()!;
    await agent.stop();
    expect(processAlive(pid)).toBe(false);
  });
});
