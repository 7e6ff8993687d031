// Checkpoint and automatic rollback with real parts: the agent's cycle against a real Git server,
// real nft in the node's namespace, the guest's service (the lab responder) on the node's guest
// bridge. A commit that retargets a forward to a dead port is applied, fails its check within
// the window, is rolled back (the ruleset of the previous revision is back), reported and held;
// the next cycle does not try it again; a new commit is tried and kept.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileMap } from '../src/git/tree.js';
import { commitFiles, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { mainTip, readPublished, startTestAgent, stateExampleFiles, withExtraForward, type TestAgent } from './helpers/agent-fixture.js';
import { checkedState, serveGuestsIn, WINDOW_S, type ServedNode } from './helpers/health-node.js';

const fwdMap = (a: TestAgent) => a.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp']);

describe('checkpoint: a commit that breaks a forward is rolled back and held', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  let served: ServedNode;
  let files: FileMap;
  beforeAll(async () => {
    files = checkedState(await stateExampleFiles());
    fx = await startGitFixture({ files });
    agent = await startTestAgent(fx, 'node1');
    // node1's guest bridge: its own IP, the shared gateway, and guest1's service.
    served = await serveGuestsIn(agent.ns, ['10.5.5.251', '10.5.5.254', '10.5.5.201']);
  });
  afterAll(async () => {
    await served?.stop();
    await agent?.destroy();
    await fx?.cleanup();
  });

  it('applies a healthy revision and reports every check healthy', async () => {
    const status = await agent.cycle();
    expect(status).toMatchObject({ outcome: 'applied', appliedRevision: await mainTip(fx), errors: [] });
    expect(status.health).toEqual({ state: 'healthy', checks: 4, failing: [] });
  });

  let good: string;
  let bad: string;
  it('rolls back a revision whose forward check fails, within the window, and says why', async () => {
    good = await mainTip(fx);
    bad = await commitFiles(fx.repo, checkedState(await stateExampleFiles(), 2222), { message: 'ssh-guest1 to a closed port' });
    const t0 = Date.now();
    const status = await agent.cycle();
    const ms = Date.now() - t0;
    expect(status.outcome).toBe('rolled-back');
    expect(status.appliedRevision).toBe(good);
    expect(status.rollback).toMatchObject({ revision: bad, restored: good, ok: true, failing: [{ name: 'forward ssh-guest1', ok: false, detail: 'ECONNREFUSED' }] });
    // No round starts after the window: decided within it plus one round (a probe's 2 s timeout
    // and its 2 s kill grace at worst); the whole cycle has the restore and report on top.
    expect(status.rollback!.checkedMs).toBeLessThan((WINDOW_S + 4) * 1000);
    // The bad ruleset was live for the checks plus the restore, and no longer than the cycle.
    expect(status.rollback!.liveMs).toBeGreaterThanOrEqual(status.rollback!.checkedMs);
    expect(status.rollback!.liveMs).toBeLessThanOrEqual(ms);
    console.info(`canary: the bad revision's ruleset was live for ${status.rollback!.liveMs} ms (checks ${status.rollback!.checkedMs} ms, window ${WINDOW_S} s, whole cycle ${ms} ms)`);
    expect(ms).toBeLessThan((WINDOW_S + 15) * 1000);
    expect(status.health?.state).toBe('healthy');
    // The previous revision's ruleset is back.
    expect(await fwdMap(agent)).toContain('2201 : 10.5.5.201 . 22');
    expect(await fwdMap(agent)).not.toContain('2222');

    const published = await readPublished(fx, 'node1');
    expect(published?.json.outcome).toBe('rolled-back');
    expect(published?.subject).toBe(`node1: rolled back ${bad.slice(0, 12)} to ${good.slice(0, 12)}: forward ssh-guest1; rules +0/-0, elements +1/-1; 1 error(s)`);
    expect(published?.markdown).toContain('## Rolled back');
    expect(published?.markdown).toContain('- forward ssh-guest1: ECONNREFUSED');
  });

  it('does not try the held revision again while the branch stays there', async () => {
    const status = await agent.cycle();
    expect(status).toMatchObject({ outcome: 'converged', appliedRevision: good, held: { revision: bad, reason: 'forward ssh-guest1: ECONNREFUSED' } });
    expect(status.source.fetched).toBe(bad);
    expect(status.plan?.changed).toBe(false);
    expect(await fwdMap(agent)).not.toContain('2222');
    expect((await readPublished(fx, 'node1'))?.markdown).toContain(`**Held:** revision \`${bad}\``);
  });

  it('tries a new commit and keeps it when its checks pass', async () => {
    const fixed = await commitFiles(fx.repo, withExtraForward(files, 'extra', 2299), { message: 'fix' });
    const status = await agent.cycle();
    expect(status).toMatchObject({ outcome: 'applied', appliedRevision: fixed, errors: [], health: { state: 'healthy' } });
    expect(status.held).toBeUndefined();
    expect(await fwdMap(agent)).toContain('2299 : 10.5.5.201 . 22');
  });
});
