// The agent's cycle end to end: a real git smart-HTTP server on 127.0.0.1, real nft inside a
// network namespace per agent, status branches read back with the plain git CLI.
// Covered here: clone and converge, commit only on change, a new commit converges, drift
// (report-only, corrected, own table deleted, foreign chain shadowing), invalid YAML, hooks.
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileMap } from '../src/git/tree.js';
import { commitFiles, gitCli, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { mainTip, readPublished, startTestAgent, stateExampleFiles, withExtraForward, type TestAgent } from './helpers/agent-fixture.js';

/** Handle of the first rule in `chain` whose text contains `match` (from `nft -a list chain`). */
async function ruleHandle(agent: TestAgent, table: string, chain: string, match: string): Promise<string> {
  const listing = await agent.ns.raw(['-a', 'list', 'chain', ...table.split(' '), chain]);
  const line = listing.split('\n').find((l) => l.includes(match) && l.includes('# handle'));
  if (!line) throw new Error(`no rule with "${match}" in ${table} ${chain}:\n${listing}`);
  return line.split('# handle ')[1]!.trim();
}

const listChain = (agent: TestAgent, chain: string) => agent.ns.raw(['list', 'chain', 'ip', 'cgw_nat', chain]);

describe('agent: clone, converge, commit only on change', () => {
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

  it('converges on the first cycle and publishes status/node1, readable with plain git', async () => {
    const seed = await mainTip(fx);
    const status = await agent.cycle();
    expect(status).toMatchObject({ outcome: 'applied', appliedRevision: seed, source: { state: 'ok', fetched: seed }, errors: [] });
    expect(await agent.tables()).toEqual(['ip cgw_nat', 'netdev cgw_arp']);
    expect(await listChain(agent, 'prerouting')).toContain('dnat ip to tcp dport map @fwd_tcp');

    // A plain `git clone` of the status branch over HTTP.
    const clone = await fx.tmp('status-clone');
    await gitCli(['clone', '--quiet', '--branch', 'status/node1', fx.url, clone]);
    const json = JSON.parse(await readFile(path.join(clone, 'status.json'), 'utf8'));
    expect(json).toMatchObject({ format: 'cgw-sync.status/v1', node: 'node1', outcome: 'applied', appliedRevision: seed });
    expect(json.plan.summary).toMatchObject({ tablesCreated: 2, elementsAdded: 5 });
    const md = await readFile(path.join(clone, 'REPORT.md'), 'utf8');
    expect(md).toContain('| outcome | **applied** |');
    expect(md).toContain(`| applied revision | \`${seed}\` |`);
    expect(md).toContain('map fwd_tcp: `+ 2201 : 10.5.5.201 . 22`');
    expect(await gitCli(['-C', clone, 'log', '-1', '--format=%s'])).toBe(`node1: applied ${seed.slice(0, 12)}; rules +8/-0, elements +5/-0`);
    expect(agent.logs.at(-1)).toMatchObject({ node: 'node1', outcome: 'applied', revision: seed, published: 'committed' });
  });

  it('makes no new commit when nothing changed', async () => {
    const before = await readPublished(fx, 'node1');
    const status = await agent.cycle();
    expect(status.outcome).toBe('converged');
    expect(status.plan?.changed).toBe(false);
    expect(agent.logs.at(-1)).toMatchObject({ outcome: 'converged', published: 'unchanged' });
    const after = await readPublished(fx, 'node1');
    expect(after?.oid).toBe(before?.oid);
    expect(after?.commits).toBe(1);
  });

  it('converges on a new commit and records the new revision', async () => {
    const next = await commitFiles(fx.repo, withExtraForward(files, 'extra', 2299), { message: 'forward 2299 to guest1' });
    const status = await agent.cycle();
    expect(status).toMatchObject({ outcome: 'applied', appliedRevision: next });
    expect(status.plan?.summary).toMatchObject({ elementsAdded: 1, elementsRemoved: 0, rulesAdded: 0 });
    expect(await agent.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp'])).toContain('2299 : 10.5.5.201 . 22');

    const published = await readPublished(fx, 'node1');
    expect(published).toMatchObject({ commits: 2, subject: `node1: applied ${next.slice(0, 12)}; rules +0/-0, elements +1/-0` });
    expect(published?.json.appliedRevision).toBe(next);
    expect(published?.markdown).toContain('map fwd_tcp: `+ 2299 : 10.5.5.201 . 22`');
  });
  it('publishes on top of a status branch that moved meanwhile', async () => {
    // Someone else committed to status/node1 (say, an annotation): the agent's report goes on top.
    const foreign = await commitFiles(fx.repo, { 'status.json': '{}\n', 'NOTE.md': 'maintenance window\n' }, { branch: 'status/node1', message: 'note' });
    const next = await commitFiles(fx.repo, withExtraForward(withExtraForward(files, 'extra', 2299), 'more', 2298));
    expect(await agent.cycle()).toMatchObject({ outcome: 'applied', appliedRevision: next });
    const published = await readPublished(fx, 'node1');
    expect(published?.commits).toBe(4);
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', `${published!.oid}^`])).toBe(foreign);
    expect(published?.json.appliedRevision).toBe(next);
  });
});

describe('agent: drift', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
    agent = await startTestAgent(fx, 'node1', { drift: 'report' });
    expect((await agent.cycle()).outcome).toBe('applied');
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  it('report-only: a rule deleted by hand is reported, not corrected', async () => {
    const handle = await ruleHandle(agent, 'ip cgw_nat', 'prerouting', 'fwd_udp');
    await agent.ns.raw(['delete', 'rule', 'ip', 'cgw_nat', 'prerouting', 'handle', handle]);

    const status = await agent.cycle();
    expect(status.outcome).toBe('drift-reported');
    expect(status.drift.corrected).toBe(false);
    expect(status.drift.items).toEqual([expect.objectContaining({ kind: 'rules-changed', table: 'ip cgw_nat' })]);
    expect(status.drift.items[0]!.detail).toMatch(/chain prerouting: removed by hand: .*fwd_udp/);
    expect(await listChain(agent, 'prerouting')).not.toContain('fwd_udp');

    const published = await readPublished(fx, 'node1');
    expect(published?.json.outcome).toBe('drift-reported');
    expect(published?.markdown).toContain('Not corrected (drift policy: report)');
    expect(published?.markdown).toMatch(/- rules-changed \(ip cgw_nat\): chain prerouting: removed by hand/);
    expect(published?.subject).toContain('drift found: rules-changed');

    // Still held back on the next cycle, and the unchanged report is not committed again.
    expect((await agent.cycle()).outcome).toBe('drift-reported');
    expect(await listChain(agent, 'prerouting')).not.toContain('fwd_udp');
    expect((await readPublished(fx, 'node1'))?.oid).toBe(published?.oid);
  });

  it('correct (the default): the next cycle puts the rule back and says so', async () => {
    const status = await agent.cycle({ drift: 'correct' });
    expect(status.outcome).toBe('applied');
    expect(status.drift).toMatchObject({ corrected: true, items: [expect.objectContaining({ kind: 'rules-changed' })] });
    expect(await listChain(agent, 'prerouting')).toContain('dnat ip to udp dport map @fwd_udp');
    const published = await readPublished(fx, 'node1');
    expect(published?.markdown).toMatch(/Corrected:\n\n- rules-changed \(ip cgw_nat\)/);
    expect(published?.subject).toContain('drift corrected: rules-changed');
  });

  it('classifies a deleted own table and an element changed by hand', async () => {
    await agent.ns.raw(['delete', 'table', 'netdev', 'cgw_arp']);
    await agent.ns.raw(['delete', 'element', 'ip', 'cgw_nat', 'fwd_tcp', '{ 2201 }']);
    const status = await agent.cycle({ drift: 'correct' });
    expect(status.outcome).toBe('applied');
    expect(status.drift.corrected).toBe(true);
    expect(status.drift.items.map((d) => `${d.kind} ${d.table}`).sort()).toEqual(['elements-changed ip cgw_nat', 'table-deleted netdev cgw_arp']);
    expect(status.drift.items.find((d) => d.kind === 'elements-changed')?.detail).toContain('missing: 2201 : 10.5.5.201 . 22');
    expect(await agent.tables()).toEqual(['ip cgw_nat', 'netdev cgw_arp']);
    expect(await agent.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp'])).toContain('2201 : 10.5.5.201 . 22');
  });

  it('reports a foreign nat chain that runs before ours, and leaves it alone', async () => {
    await agent.ns.raw(['add', 'table', 'ip', 'foreign']);
    await agent.ns.raw(['add', 'chain', 'ip', 'foreign', 'early', '{ type nat hook prerouting priority -150 ; }']);
    try {
      const status = await agent.cycle({ drift: 'correct' });
      // Nothing of ours changed, so there is nothing to apply; the foreign table is not ours to touch.
      expect(status.outcome).toBe('converged');
      expect(status.drift.items).toEqual([expect.objectContaining({ kind: 'foreign-chain-shadows', table: 'ip foreign' })]);
      expect(status.drift.items[0]!.detail).toContain('runs before ip cgw_nat prerouting');
      expect(await agent.tables()).toContain('ip foreign');
      expect((await readPublished(fx, 'node1'))?.markdown).toContain('foreign-chain-shadows (ip foreign)');
    } finally {
      await agent.ns.raw(['delete', 'table', 'ip', 'foreign']);
    }
  });
});

describe('agent: invalid state', () => {
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

  it('does not apply a revision with broken YAML and names file:line; the ruleset stays intact', async () => {
    const good = await mainTip(fx);
    expect((await agent.cycle()).outcome).toBe('applied');
    const rulesetBefore = await agent.ns.raw(['list', 'ruleset']);

    // Line 4 opens a flow mapping that never closes, and the file also adds a forward.
    const broken = { ...withExtraForward(files, 'extra', 2299), 'forwards/broken.yaml': 'apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n  - { name: x, port: 1\n' };
    const bad = await commitFiles(fx.repo, broken, { message: 'broken yaml' });
    const status = await agent.cycle();
    expect(status.outcome).toBe('converged'); // still enforcing the last good revision
    expect(status.appliedRevision).toBe(good);
    expect(status.source).toMatchObject({ state: 'invalid', fetched: bad });
    expect(status.source.message).toMatch(/forwards\/broken\.yaml:\d+:\d+/);
    expect(await agent.ns.raw(['list', 'ruleset'])).toBe(rulesetBefore);

    const published = await readPublished(fx, 'node1');
    expect(published?.json.source.state).toBe('invalid');
    expect(published?.markdown).toMatch(/\*\*Source:\*\*\n\n```text\nrevision [0-9a-f]{40} is invalid; nothing of it was applied:\n.*forwards\/broken\.yaml:\d+/);
    expect(published?.subject).toContain('source invalid');

    // Fixed on top: applied.
    const fixed = await commitFiles(fx.repo, withExtraForward(files, 'extra', 2299), { message: 'fix' });
    expect(await agent.cycle()).toMatchObject({ outcome: 'applied', appliedRevision: fixed, source: { state: 'ok' } });
    expect(await agent.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp'])).toContain('2299 : 10.5.5.201 . 22');
  });
});

describe('agent: hooks', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  let hooksDir: string;
  let out: string;
  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
    const dir = await fx.tmp('hooks');
    hooksDir = path.join(dir, 'hooks');
    out = path.join(dir, 'out');
    await mkdir(hooksDir);
    await mkdir(out);
    agent = await startTestAgent(fx, 'node1', { hooksDir });
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  async function hook(name: string, body: string): Promise<void> {
    await writeFile(path.join(hooksDir, name), `#!/bin/sh\n${body}\n`);
    await chmod(path.join(hooksDir, name), 0o755);
  }

  it('a failing pre-apply hook vetoes: nothing applied, reported; it got the plan on stdin and the revision', async () => {
    const rev = await mainTip(fx);
    await hook('pre-apply', `cat > ${out}/plan.json\necho "$CGW_REVISION $CGW_NODE $CGW_PHASE" > ${out}/env\necho "no changes on Fridays" >&2\nexit 3`);
    await hook('post-apply', `touch ${out}/post-ran`);
    const status = await agent.cycle();
    expect(status.outcome).toBe('vetoed');
    expect(status.appliedRevision).toBeUndefined();
    expect(status.hooks).toEqual([expect.objectContaining({ phase: 'pre-apply', ok: false, exitCode: 3, output: expect.stringContaining('no changes on Fridays') })]);
    expect(status.errors.join('\n')).toContain('vetoed the apply; nothing was changed');
    expect(await agent.tables()).toEqual([]);
    await expect(readFile(path.join(out, 'post-ran'))).rejects.toThrow(/ENOENT/);

    expect(await readFile(path.join(out, 'env'), 'utf8')).toBe(`${rev} node1 pre-apply\n`);
    const plan = JSON.parse(await readFile(path.join(out, 'plan.json'), 'utf8'));
    expect(plan).toMatchObject({ node: 'node1', revision: rev });
    expect(JSON.stringify(plan)).toContain('cgw_nat');

    const published = await readPublished(fx, 'node1');
    expect(published?.json.outcome).toBe('vetoed');
    expect(published?.markdown).toMatch(/- pre-apply `.*pre-apply`: FAILED \(exit 3\)/);
  });

  it('once the pre-apply hook agrees, the plan is applied and post-apply runs after the apply', async () => {
    await hook('pre-apply', 'cat > /dev/null; exit 0');
    // The post-apply hook looks at the namespace's ruleset: it must already be in place.
    await hook('post-apply', `ip netns exec ${agent.ns.ns} nft list tables > ${out}/tables-seen-by-post-apply`);
    const status = await agent.cycle();
    expect(status.outcome).toBe('applied');
    expect(status.hooks.map((h) => `${h.phase}:${h.ok}`)).toEqual(['pre-apply:true', 'post-apply:true']);
    expect(await readFile(path.join(out, 'tables-seen-by-post-apply'), 'utf8')).toBe('table ip cgw_nat\ntable netdev cgw_arp\n');
    await rm(path.join(out, 'tables-seen-by-post-apply'));

    // Nothing to apply: no hooks run.
    const quiet = await agent.cycle();
    expect(quiet).toMatchObject({ outcome: 'converged', hooks: [] });
    await expect(readFile(path.join(out, 'tables-seen-by-post-apply'))).rejects.toThrow(/ENOENT/);
  });
});
