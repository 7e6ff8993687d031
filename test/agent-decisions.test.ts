// The agent's decisions without root: the real cycle (runOnce) against the in-memory nft
// (FakeNft), in-memory node settings and guests, a folder source and a status folder shared by
// two nodes. Covered: converge and stay quiet, drift corrected or held (report-only), the veto
// (a settings-only plan too), the outcome table, and a guest moving between nodes with its
// migration wait. The namespace tests (agent-converge, agent-process, ...) keep what needs the kernel.
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runOnce, type MemoryCarry } from '../src/agent/cycle.js';
import { cycleOutcome } from '../src/agent/outcome.js';
import { folderSource } from '../src/agent/source.js';
import { holdNft, planNode, type NodePlan } from '../src/plan/plan.js';
import type { ApplyResult } from '../src/reconcile/apply.js';
import { resolveNode } from '../src/render/node-view.js';
import { syntheticState } from '../src/bench/synthetic.js';
import { fakeCluster, fakeNode } from './helpers/fake-node.js';

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-decisions-'));
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('agent decisions on fakes', () => {
  it('converges tables and settings in one cycle, then a quiet cycle publishes nothing new', async () => {
    const c = await fakeCluster(scratch, 'converge');
    const n = fakeNode(c, 'node1');
    const first = await n.cycle();
    expect(first).toMatchObject({ outcome: 'applied', errors: [], drift: { items: [], corrected: false } });
    expect((await n.nft.list([{ family: 'ip', name: 'cgw_nat' }])).tables).toHaveLength(1);
    expect(n.settings.sysctls['net.ipv4.ip_forward']).toBe('1');
    expect(first.settings?.changes).toEqual(['~ sysctl net.ipv4.ip_forward: 0 -> 1']);
    expect((await n.published())?.time).toBe(first.time);
    // A fresh node knows no earlier placement, and a folder source has no Git history to ask:
    // its guest waits for every other node's word, and says why.
    expect(first.guests).toEqual([{ name: 'guest1', state: 'waiting', detail: expect.stringMatching(/^wait: is not running; waiting for node node2: it has not reported .*every other node must confirm: .*a folder without Git history/) }]);
    expect(n.guests.history).toEqual([]);

    const second = await n.cycle();
    expect(second).toMatchObject({ outcome: 'converged', errors: [] });
    expect(n.nft.history).toHaveLength(1);
    expect((await n.published())?.time).toBe(first.time);

    await fakeNode(c, 'node2').cycle();
    const third = await n.cycle();
    expect(third.guests).toEqual([{ name: 'guest1', state: 'running', detail: 'started' }]);
    expect(n.guests.history).toEqual(['start guest1']);
  });

  it('drift: corrected by default; held under report-only (the guests still follow the state)', async () => {
    const c = await fakeCluster(scratch, 'drift');
    const n = fakeNode(c, 'node1');
    await fakeNode(c, 'node2').cycle();
    await n.cycle();
    n.nft.edit((t) => t.delete('netdev cgw_arp'));
    const corrected = await n.cycle();
    expect(corrected).toMatchObject({ outcome: 'applied', drift: { corrected: true, items: [{ kind: 'table-deleted', table: 'netdev cgw_arp' }] } });
    expect(n.nft.history).toHaveLength(2);

    n.nft.edit((t) => t.delete('netdev cgw_arp'));
    await n.guests.stop('guest1');
    const held = await n.cycle({ drift: 'report' });
    expect(held).toMatchObject({ outcome: 'drift-reported', drift: { corrected: false, items: [{ kind: 'table-deleted' }] } });
    expect(n.nft.history).toHaveLength(2);
    expect(n.guests.history.at(-1)).toBe('start guest1');
    expect((await n.published())?.outcome).toBe('drift-reported');
  });

  it('a pre-apply hook vetoes any non-empty plan, a settings-only one too; nothing changes', async () => {
    const c = await fakeCluster(scratch, 'veto');
    const hooksDir = path.join(c.root, 'hooks');
    await mkdir(hooksDir, { recursive: true });
    const seen = path.join(c.root, 'seen-plan.json');
    await writeFile(path.join(hooksDir, 'pre-apply'), `#!/bin/sh\ncat > ${seen}\nexit 1\n`);
    await chmod(path.join(hooksDir, 'pre-apply'), 0o755);
    const n = fakeNode(c, 'node1');
    await n.cycle();
    n.settings.sysctls['net.ipv4.ip_forward'] = '0';
    const vetoed = await n.cycle({ hooksDir });
    expect(vetoed).toMatchObject({ outcome: 'vetoed', settings: { applied: false } });
    expect(vetoed.errors.join('\n')).toContain('vetoed the apply; nothing was changed');
    expect(n.settings.sysctls['net.ipv4.ip_forward']).toBe('0');
    const plan = JSON.parse(await readFile(seen, 'utf8'));
    expect(plan).toMatchObject({ changed: true, nft: { changed: false }, settings: { changed: true, changes: [{ kind: 'sysctl', key: 'net.ipv4.ip_forward', from: '0', to: '1' }] } });
    expect(n.nft.history).toHaveLength(1);
  });

  it('a guest moving to another node starts there only after the old node reports it stopped', async () => {
    const c = await fakeCluster(scratch, 'move');
    const n1 = fakeNode(c, 'node1');
    const n2 = fakeNode(c, 'node2');
    await n1.cycle();
    await n2.cycle();
    expect([...n2.guests.guests.keys()]).toEqual(['guest2']);
    const file = path.join(c.state, 'guests', 'guest2.yaml');
    await writeFile(file, (await readFile(file, 'utf8')).replace('node: node2', 'node: node1'));

    const waiting = await n1.cycle();
    expect(waiting.guests.find((g) => g.name === 'guest2')).toMatchObject({ state: 'waiting', detail: expect.stringMatching(/waiting for node node2 to apply revision/) });
    expect(n1.guests.guests.has('guest2')).toBe(false);

    const stopped = await n2.cycle();
    expect(stopped.guests.find((g) => g.name === 'guest2')).toMatchObject({ state: 'stopped' });
    expect(n2.guests.history.at(-1)).toBe('stop guest2');

    const started = await n1.cycle();
    expect(started.guests.find((g) => g.name === 'guest2')).toMatchObject({ state: 'running', detail: 'started' });
    expect(n1.guests.history).toEqual(['start guest1', 'start guest2']);
  });

  it('memory.json cannot be saved: the node is still enforced, says so, and carries its memory to the next cycle', async () => {
    const c = await fakeCluster(scratch, 'nosave');
    const n = fakeNode(c, 'node1');
    const carry: MemoryCarry = { unsaved: false };
    const cycle = () => runOnce({ config: n.config, nft: n.nft, settings: n.settings, source: folderSource(c.state), guestDriver: () => n.guests, carry });
    expect((await cycle()).outcome).toBe('applied');
    // memory.json replaced by a directory: it can be neither read nor replaced.
    const file = path.join(n.config.stateDir, 'memory.json');
    await rm(file);
    await mkdir(file);
    n.nft.edit((t) => t.delete('netdev cgw_arp'));
    const unsaved = await cycle();
    expect(unsaved).toMatchObject({ outcome: 'applied', drift: { corrected: true, items: [{ kind: 'table-deleted' }] } });
    expect(unsaved.errors.join('\n')).toMatch(/could not save .*memory\.json/);
    expect(carry.unsaved).toBe(true);
    // Drift is still measured against what was applied: the carried memory knows it.
    n.nft.edit((t) => t.delete('netdev cgw_arp'));
    const next = await cycle();
    expect(next.drift.items).toEqual([expect.objectContaining({ kind: 'table-deleted', table: 'netdev cgw_arp' })]);
  });

  it('without a status source, an arriving guest waits and the report says why', async () => {
    const c = await fakeCluster(scratch, 'nostatus');
    const n1 = fakeNode(c, 'node1', { status: { branch: 'status/{node}' } });
    const file = path.join(c.state, 'guests', 'guest2.yaml');
    await writeFile(file, (await readFile(file, 'utf8')).replace('node: node2', 'node: node1'));
    const s = await n1.cycle();
    // A fresh node knows no previous placement: every other node must confirm.
    expect(s.guests.find((g) => g.name === 'guest2')?.detail).toMatch(/no status source is configured/);
    expect(n1.guests.guests.has('guest2')).toBe(false);
  });
});

describe('cycleOutcome', () => {
  const state = syntheticState(2);
  const view = resolveNode(state, 'node1');
  const live = { nft: { tables: [] }, baseChains: [], settings: { sysctls: {}, conntrackd: {} }, guests: [] };
  const plan: NodePlan = planNode(view, live);
  const step = (status: 'done' | 'skipped' | 'failed') => (status === 'failed' ? { status, error: 'x' } : { status });
  const result = (over: Partial<ApplyResult> = {}): ApplyResult => ({ precheck: step('skipped'), guestStops: [], nft: step('done'), settings: step('done'), rollback: step('skipped'), guestStarts: [], ...over }) as ApplyResult;

  it('derives the outcome from what happened, in this order: failure, veto, failed apply, held drift, applied, converged', () => {
    expect(cycleOutcome({})).toBe('error');
    expect(cycleOutcome({ plan, failure: 'nft not readable' })).toBe('error');
    expect(cycleOutcome({ plan, executed: { hooks: [], vetoedBy: 'pre-apply' } })).toBe('vetoed');
    expect(cycleOutcome({ plan, executed: { hooks: [], result: result({ settings: step('failed'), rollback: step('done') }) } })).toBe('error');
    expect(cycleOutcome({ plan, executed: { hooks: [], result: result({ precheck: step('failed'), nft: step('skipped') }) } })).toBe('error');
    expect(cycleOutcome({ plan: holdNft(plan), executed: { hooks: [], result: result({ nft: step('skipped') }) } })).toBe('drift-reported');
    expect(cycleOutcome({ plan, executed: { hooks: [], result: result() } })).toBe('applied');
    expect(cycleOutcome({ plan, executed: { hooks: [] } })).toBe('converged');
  });
});
