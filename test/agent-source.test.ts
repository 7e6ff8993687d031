// The agent against a real git smart-HTTP server, when the source is not simply good: signatures
// required, a force-push rollback, the server going down and coming back, and two agents
// reporting to the same server at once. Real nft in one network namespace per agent.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileMap } from '../src/git/tree.js';
import { startAgent } from '../src/agent/run.js';
import { waitUntil } from '../src/proc/process.js';
import { commitFiles, generateKey, resetBranch, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { mainTip, readPublished, startTestAgent, stateExampleFiles, withExtraForward, type TestAgent } from './helpers/agent-fixture.js';

const fwdTcp = (agent: TestAgent) => agent.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp']);

describe('agent: signed commits only', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  let files: FileMap;
  let trusted: Awaited<ReturnType<typeof generateKey>>;
  let stranger: Awaited<ReturnType<typeof generateKey>>;
  beforeAll(async () => {
    files = await stateExampleFiles();
    fx = await startGitFixture({ files });
    [trusted, stranger] = await Promise.all([generateKey('Trusted Admin'), generateKey('Stranger')]);
    const keyFile = path.join(await fx.tmp('keys'), 'trusted.asc');
    await writeFile(keyFile, trusted.publicKey);
    agent = await startTestAgent(fx, 'node1', { source: { trustedKeys: [keyFile] } });
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  it('refuses the unsigned seed: nothing applied, the report says why', async () => {
    const seed = await mainTip(fx);
    const status = await agent.cycle();
    expect(status.outcome).toBe('error');
    expect(status.appliedRevision).toBeUndefined();
    expect(status.source).toMatchObject({ state: 'refused', fetched: seed });
    expect(status.source.message).toContain(`revision ${seed} refused (unsigned)`);
    expect(await agent.tables()).toEqual([]);
    const published = await readPublished(fx, 'node1');
    expect(published?.json.source.state).toBe('refused');
    expect(published?.markdown).toContain('refused (unsigned)');
  });

  it('applies a commit signed by a trusted key', async () => {
    const signed = await commitFiles(fx.repo, files, { message: 'signed', sign: trusted.privateKey });
    expect(await agent.cycle()).toMatchObject({ outcome: 'applied', appliedRevision: signed, source: { state: 'ok' } });
    expect(await agent.tables()).toEqual(['ip cgw_nat', 'netdev cgw_arp']);
  });

  it('refuses unsigned, unknown-key and tampered commits; the node stays on the last verified revision', async () => {
    const verified = await mainTip(fx);
    const cases = [
      { opts: {}, refusal: 'unsigned' },
      { opts: { sign: stranger.privateKey }, refusal: 'untrusted-key' },
      { opts: { sign: trusted.privateKey, tamper: true }, refusal: 'bad-signature' },
    ];
    for (const [i, c] of cases.entries()) {
      const rev = await commitFiles(fx.repo, withExtraForward(files, 'extra', 2300 + i), { message: c.refusal, ...c.opts });
      const status = await agent.cycle();
      expect(status.outcome).toBe('converged');
      expect(status.appliedRevision).toBe(verified);
      expect(status.source).toMatchObject({ state: 'refused', fetched: rev });
      expect(status.source.message).toContain(`revision ${rev} refused (${c.refusal})`);
      expect(await fwdTcp(agent)).not.toContain(`${2300 + i} :`);
      const published = await readPublished(fx, 'node1');
      expect(published?.json.source.message).toContain(`(${c.refusal})`);
      expect(published?.json.appliedRevision).toBe(verified);
      expect(published?.subject).toContain('source refused');
    }
    // A trusted signature on top of them is applied (it descends from the verified revision).
    const good = await commitFiles(fx.repo, withExtraForward(files, 'extra', 2399), { message: 'signed again', sign: trusted.privateKey });
    expect(await agent.cycle()).toMatchObject({ outcome: 'applied', appliedRevision: good, source: { state: 'ok' } });
    expect(await fwdTcp(agent)).toContain('2399 : 10.5.5.201 . 22');
  });
});

describe('agent: force-push rollback', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  let files: FileMap;
  beforeAll(async () => {
    files = await stateExampleFiles();
    fx = await startGitFixture({ files });
    agent = await startTestAgent(fx, 'node1');
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  it('refuses a branch reset to an older or an unrelated commit unless allowNonDescendant', async () => {
    const seed = await mainTip(fx);
    expect((await agent.cycle()).appliedRevision).toBe(seed);
    const newer = await commitFiles(fx.repo, withExtraForward(files, 'extra', 2299));
    expect(await agent.cycle()).toMatchObject({ outcome: 'applied', appliedRevision: newer });

    // Rolled back to the seed by a force-push.
    await resetBranch(fx.repo, seed);
    let status = await agent.cycle();
    expect(status).toMatchObject({ outcome: 'converged', appliedRevision: newer, source: { state: 'refused', fetched: seed } });
    expect(status.source.message).toContain('refused (not-descendant)');
    expect(status.source.message).toContain(`does not descend from the last applied revision ${newer}`);
    expect(await fwdTcp(agent)).toContain('2299 :');
    expect((await readPublished(fx, 'node1'))?.json.source.state).toBe('refused');

    // Replaced by an unrelated history.
    const orphan = await commitFiles(fx.repo, withExtraForward(files, 'other', 2288), { parent: null, message: 'new history' });
    status = await agent.cycle();
    expect(status).toMatchObject({ appliedRevision: newer, source: { state: 'refused', fetched: orphan } });
    expect(await fwdTcp(agent)).not.toContain('2288 :');

    // Allowed: the orphan is applied (2299 goes, 2288 comes).
    status = await agent.cycle({ source: { ...agent.config.source, allowNonDescendant: true } });
    expect(status).toMatchObject({ outcome: 'applied', appliedRevision: orphan, source: { state: 'ok' } });
    const map = await fwdTcp(agent);
    expect(map).toContain('2288 : 10.5.5.201 . 22');
    expect(map).not.toContain('2299 :');
  });
});

describe('agent: Git server down, then back', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
    agent = await startTestAgent(fx, 'node1');
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  it('keeps enforcing the last good revision while down and reports the outage once back', async () => {
    const seed = await mainTip(fx);
    expect((await agent.cycle()).outcome).toBe('applied');
    const before = await readPublished(fx, 'node1');

    const stoppedAt = new Date().toISOString();
    await fx.server.stop();
    // Drift made during the outage is still corrected, from the last good copy.
    await agent.ns.raw(['delete', 'table', 'netdev', 'cgw_arp']);
    const down1 = await agent.cycle();
    // Enforced, but the node cannot report: an error outcome (the next report carries it as applied).
    expect(down1).toMatchObject({ outcome: 'error', appliedRevision: seed, source: { state: 'unavailable' } });
    expect(down1.errors.at(-1)).toMatch(/^the report could not be published: /);
    expect(down1.drift).toMatchObject({ corrected: true, items: [expect.objectContaining({ kind: 'table-deleted' })] });
    expect(await agent.tables()).toEqual(['ip cgw_nat', 'netdev cgw_arp']);
    expect(agent.logs.at(-1)?.published).toMatch(/^failed: /);
    const down2 = await agent.cycle();
    expect(down2).toMatchObject({ outcome: 'error', source: { state: 'unavailable' }, outage: { failures: 2 } });
    expect(down2.outage?.until).toBeUndefined();

    await fx.server.start();
    const back = await agent.cycle();
    expect(back).toMatchObject({ outcome: 'converged', appliedRevision: seed, source: { state: 'ok' } });
    // The outage began with the first failed fetch, during the first cycle after the stop.
    const since = back.outage?.since ?? '';
    expect(since >= stoppedAt && since <= down1.time).toBe(true);
    expect(back.outage).toMatchObject({ since: down2.outage?.since, until: back.time, failures: 2 });
    const published = await readPublished(fx, 'node1');
    expect(published?.oid).not.toBe(before?.oid);
    expect(published?.json.outage).toMatchObject({ since, until: back.time, failures: 2 });
    expect(published?.json.outage?.lastError).toBeTruthy();
    expect(published?.markdown).toContain(`Git was unreachable from ${since} until ${back.time}: 2 failed attempt(s)`);
    expect(published?.subject).toContain('recovered from Git outage (2 failures)');
    // The drift corrected while Git was down reaches Git with the recovery report.
    expect(published?.json.earlier).toEqual([expect.objectContaining({ time: down1.time, outcome: 'applied', drift: { corrected: true, items: [expect.objectContaining({ kind: 'table-deleted', table: 'netdev cgw_arp' })] } })]);
    expect(published?.markdown).toContain('drift corrected: table-deleted (netdev cgw_arp)');
    expect(published?.subject).toContain('earlier drift corrected in 1 unpublished cycle(s)');

    // The outage is on record: the next quiet cycle neither repeats it nor commits.
    const after = await agent.cycle();
    expect(after.outage).toBeUndefined();
    expect(after.earlier).toBeUndefined();
    expect((await readPublished(fx, 'node1'))?.oid).toBe(published?.oid);
  });
});

describe('agent: Git server down at start, `run` retries with backoff', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
    // A schedule that never fires during the test: every cycle after the first is a retry.
    agent = await startTestAgent(fx, 'node2', { schedule: { cron: '0 0 1 1 *', jitterSeconds: 0 } });
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  it('retries sooner than the schedule while Git is down, converges and reports the outage when it is back', async () => {
    await fx.server.stop();
    const logs: Record<string, unknown>[] = [];
    const running = startAgent(
      { config: agent.config, nft: agent.ns.nft, log: (l) => logs.push(l) },
      { backoff: { initialMs: 100, maxMs: 400, factor: 2, jitter: 0 } },
    );
    try {
      expect(await waitUntil(() => logs.filter((l) => l.source === 'unavailable').length >= 3, 15_000)).toBe(true);
      // Nothing was ever applied, so there is nothing to enforce yet.
      expect(logs[0]).toMatchObject({ outcome: 'error', source: 'unavailable', revision: null });
      expect(await agent.tables()).toEqual([]);
      await fx.server.start();
      expect(await waitUntil(() => logs.some((l) => l.outcome === 'applied'), 15_000)).toBe(true);
    } finally {
      await running.stop();
    }
    const failures = logs.filter((l) => l.source === 'unavailable').length;
    expect(await agent.tables()).toEqual(['ip cgw_nat', 'netdev cgw_arp']);
    const published = await readPublished(fx, 'node2');
    expect(published?.json).toMatchObject({ outcome: 'applied', outage: { failures } });
    expect(published?.subject).toContain(`recovered from Git outage (${failures} failures)`);
  });
});

describe('agent: credentials', () => {
  const TOKEN = 'tok-3f9a1c2e-secret';
  let fx: GitFixture;
  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles(), token: TOKEN });
  });
  afterAll(async () => fx?.cleanup());

  it('uses a token file; the token is in no report, log line or error', async () => {
    const tokenFile = path.join(await fx.tmp('secret'), 'token');
    await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const agent = await startTestAgent(fx, 'node1', { source: { tokenFile } });
    try {
      const status = await agent.cycle();
      expect(status).toMatchObject({ outcome: 'applied', source: { state: 'ok' } });
      const published = await readPublished(fx, 'node1');
      expect(published?.json.outcome).toBe('applied');
      // A rejected token: reported as a Git problem, still without the token.
      await writeFile(tokenFile, 'wrong-token-value\n');
      const refused = await agent.cycle();
      expect(refused.source.state).toBe('unavailable');
      expect(refused.source.message).toMatch(/401/);
      for (const text of [JSON.stringify(status), JSON.stringify(refused), published!.markdown, JSON.stringify(published!.json), JSON.stringify(agent.logs)]) {
        expect(text).not.toContain(TOKEN);
        expect(text).not.toContain('wrong-token-value');
      }
    } finally {
      await agent.destroy();
    }
  });

  it('accepts the token in the URL and keeps it out of the report', async () => {
    const url = fx.url.replace('http://', `http://cgw:${TOKEN}@`);
    const agent = await startTestAgent(fx, 'node2', { source: { url } });
    try {
      const status = await agent.cycle();
      expect(status).toMatchObject({ outcome: 'applied', source: { state: 'ok', url: fx.url } });
      const published = await readPublished(fx, 'node2');
      expect(published?.markdown).not.toContain(TOKEN);
      expect(JSON.stringify(published?.json)).not.toContain(TOKEN);
      expect(JSON.stringify(agent.logs)).not.toContain(TOKEN);
    } finally {
      await agent.destroy();
    }
  });
});

describe('agent: two nodes at once', () => {
  let fx: GitFixture;
  const agents: TestAgent[] = [];
  let files: FileMap;
  beforeAll(async () => {
    files = await stateExampleFiles();
    fx = await startGitFixture({ files });
    for (const node of ['node1', 'node2']) agents.push(await startTestAgent(fx, node));
  });
  afterAll(async () => {
    await Promise.all(agents.map((a) => a.destroy()));
    await fx?.cleanup();
  });

  it('both converge their own ruleset and both status branches are pushed', async () => {
    const seed = await mainTip(fx);
    const first = await Promise.all(agents.map((a) => a.cycle()));
    expect(first.map((s) => [s.node, s.outcome, s.appliedRevision])).toEqual([
      ['node1', 'applied', seed],
      ['node2', 'applied', seed],
    ]);
    // Each node renders its own public address.
    expect(await agents[0]!.ns.raw(['list', 'chain', 'ip', 'cgw_nat', 'prerouting'])).toContain('ip daddr 192.168.122.11');
    expect(await agents[1]!.ns.raw(['list', 'chain', 'ip', 'cgw_nat', 'prerouting'])).toContain('ip daddr 192.168.122.12');

    const next = await commitFiles(fx.repo, withExtraForward(files, 'extra', 2299));
    const second = await Promise.all(agents.map((a) => a.cycle()));
    expect(second.map((s) => s.appliedRevision)).toEqual([next, next]);
    for (const node of ['node1', 'node2']) {
      const published = await readPublished(fx, node);
      expect(published).toMatchObject({ commits: 2, subject: `${node}: applied ${next.slice(0, 12)}; rules +0/-0, elements +1/-0` });
      expect(published?.json.node).toBe(node);
    }
  });
});
