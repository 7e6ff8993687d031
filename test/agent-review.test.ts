// Offline parts around the agent: `cgw-sync plan --all-nodes` on a clone of the state repository
// (served by the real git smart-HTTP server), and the shipped examples: hooks/pre-commit in a real
// git repository, hooks/pre-apply.example and hooks/post-apply.example on plans made by the real
// planner, systemd/agent.example.yaml through the real config loader.
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../src/agent/config.js';
import { main } from '../src/cli/main.js';
import type { FileMap } from '../src/git/tree.js';
import type { Ruleset } from '../src/nft/model.js';
import { run, runUnchecked } from '../src/netns/netns.js';
import { planJson, planNode } from '../src/plan/plan.js';
import { liveAsApplied } from '../src/plan/review.js';
import { resolveNode } from '../src/render/node-view.js';
import { renderNode } from '../src/render/render.js';
import type { ClusterState } from '../src/state/types.js';
import { loadStateOrThrow } from '../src/state/load.js';
import { commitFiles, gitCli, startGitFixture, writeTree, type GitFixture } from './helpers/git-server.js';
import { CLI_BIN, PROJECT_ROOT, capture, stateExampleFiles, withExtraForward } from './helpers/agent-fixture.js';

const BROKEN_YAML = 'apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n  - { name: x, port: 1\n';

let scratch: string;
let files: FileMap;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-agent-review-'));
  files = await stateExampleFiles();
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('plan --all-nodes on a clone', () => {
  let fx: GitFixture;
  let clone: string;
  beforeAll(async () => {
    fx = await startGitFixture({ files });
    clone = path.join(scratch, 'clone');
    await gitCli(['clone', '--quiet', fx.url, clone]);
    const main = await gitCli(['-C', clone, 'rev-parse', 'main']);
    // A pull request's branch: one more forward, entering on node2 only.
    const node2Only = withExtraForward(files, 'extra', 2299);
    node2Only['forwards/extra.yaml'] = (node2Only['forwards/extra.yaml'] as string).replace('    protocol: tcp\n', '    protocol: tcp\n    nodes: [node2]\n');
    await commitFiles(path.join(clone, '.git'), node2Only, { branch: 'feature', parent: main, message: 'forward 2299 on node2' });
    await commitFiles(path.join(clone, '.git'), { ...files, 'forwards/broken.yaml': BROKEN_YAML }, { branch: 'broken', parent: main, message: 'broken' });
    // guest2 moves from node2 to node1.
    const moved = { ...files, 'guests/guest2.yaml': (files['guests/guest2.yaml'] as string).replace('node: node2', 'node: node1') };
    await commitFiles(path.join(clone, '.git'), moved, { branch: 'move', parent: main, message: 'guest2 to node1' });
  });
  afterAll(async () => fx?.cleanup());

  it('renders every node as Markdown, the new element under node2 only; exit 2', async () => {
    const io = capture();
    expect(await main(['plan', '--all-nodes', '--rev', 'feature', '--base', 'main', '--state', clone], io)).toBe(2);
    const md = io.outText;
    expect(md).toMatch(/^## cgw-sync plan: `feature` \([0-9a-f]{12}\) against `main` \([0-9a-f]{12}\)/);
    expect(md).toContain('### node1: no changes');
    const node2 = md.slice(md.indexOf('### node2'));
    expect(node2).toMatch(/^### node2: .*map elements \+1\/-0/);
    expect(node2).toContain('```diff');
    expect(node2).toMatch(/\n\+.*2299 : 10\.5\.5\.201 \. 22/);
    expect(md.slice(0, md.indexOf('### node2'))).not.toContain('2299');
    expect(io.errText).toBe('');
  });

  it('a moved guest: stopped on the old node, started on the new one once the old one reports; base/head labels', async () => {
    const io = capture();
    expect(await main(['plan', '--all-nodes', '--rev', 'move', '--base', 'main', '--state', clone], io)).toBe(2);
    const md = io.outText;
    const node1 = md.slice(md.indexOf('### node1'), md.indexOf('### node2'));
    const node2 = md.slice(md.indexOf('### node2'));
    expect(node1).toContain("… start guest2, not yet: is not running; waits for node2's report that it stopped guest2");
    expect(node2).toContain('- guest2: stop (placed on node1; running here)');
    expect(node2).not.toContain('start guest2');
    expect(node1).not.toContain('guest1: stop');
    expect(md).not.toMatch(/\blive\//);
    // The conntrackd filter and forwards do not change with a move in full-nat, the guests section does.
    expect(node1).toContain('guests:');
  });

  it('labels the diff base and head, never live', async () => {
    const io = capture();
    await main(['plan', '--all-nodes', '--rev', 'feature', '--base', 'main', '--state', clone], io);
    expect(io.outText).toMatch(/^--- base\/ip cgw_nat$/m);
    expect(io.outText).toMatch(/^\+\+\+ head\/ip cgw_nat$/m);
    expect(io.outText).not.toContain('live/');
  });

  it('fails on an invalid revision with file:line in the Markdown; exit 1', async () => {
    const io = capture();
    expect(await main(['plan', '--all-nodes', '--rev', 'broken', '--state', clone], io)).toBe(1);
    expect(io.outText).toContain('**Invalid state:');
    expect(io.outText).toMatch(/forwards\/broken\.yaml:\d+:\d+: /);
    expect(io.outText).not.toContain('### node1');
  });

  it('compares a revision with itself: no changes, exit 0', async () => {
    const io = capture();
    expect(await main(['plan', '--all-nodes', '--rev', 'main', '--state', clone], io)).toBe(0);
    expect(io.outText).toContain('### node1: no changes');
    expect(io.outText).toContain('### node2: no changes');
  });
});

describe('hooks/pre-commit in a state repository', () => {
  it('refuses a commit whose staged state is broken and accepts a valid one', async () => {
    if (!existsSync(CLI_BIN)) throw new Error(`${CLI_BIN} is missing: build first (npm run build, or scripts/install.sh)`);
    const repo = path.join(scratch, 'state-repo');
    await writeTree(repo, files);
    const env = { GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', CGW_SYNC: `${process.execPath} ${CLI_BIN}` };
    const git = (args: string[]) =>
      runUnchecked('git', ['-c', `core.hooksPath=${path.join(PROJECT_ROOT, 'hooks')}`, '-c', 'user.name=T', '-c', 'user.email=t@example.org', ...args], { cwd: repo, env });
    await run('git', ['init', '--quiet', '-b', 'main'], { cwd: repo, env });

    await git(['add', '-A']);
    const ok = await git(['commit', '--quiet', '-m', 'valid state']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    // git passes a hook's stdout on as stderr.
    expect(ok.stderr).toContain('valid (2 nodes, 2 guests, 6 forwards)');

    await writeFile(path.join(repo, 'forwards/broken.yaml'), BROKEN_YAML);
    await git(['add', 'forwards/broken.yaml']);
    const refused = await git(['commit', '--quiet', '-m', 'broken']);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stdout + refused.stderr).toMatch(/forwards\/broken\.yaml:\d+:\d+: /);
    expect(refused.stderr).toContain('pre-commit: the staged state does not validate; commit refused');

    // What counts is the index: fixing the file without staging the fix is still refused.
    await writeFile(path.join(repo, 'forwards/broken.yaml'), 'apiVersion: cgw-sync/v1\nkind: Forwards\nforwards: []\n');
    expect((await git(['commit', '--quiet', '-m', 'still broken'])).exitCode).not.toBe(0);
    await rm(path.join(repo, 'forwards/broken.yaml'));
    await git(['add', '-A']);
    const none = await git(['status', '--porcelain']);
    expect(none.stdout.trim()).toBe('');
    expect((await git(['rev-list', '--count', 'HEAD'])).stdout.trim()).toBe('1');
  });
});

describe('hooks/pre-apply.example and hooks/post-apply.example', () => {
  const preApply = path.join(PROJECT_ROOT, 'hooks/pre-apply.example');
  const postApply = path.join(PROJECT_ROOT, 'hooks/post-apply.example');
  let state: Awaited<ReturnType<typeof loadStateOrThrow>>;
  let withExtras: typeof state;
  beforeAll(async () => {
    const dir = path.join(scratch, 'state');
    await writeTree(dir, files);
    state = await loadStateOrThrow(dir);
    const dir2 = path.join(scratch, 'state-extras');
    await writeTree(dir2, withExtraForward(withExtraForward(files, 'extra1', 2291), 'extra2', 2292));
    withExtras = await loadStateOrThrow(dir2);
  });

  /** The plan JSON the agent hands its hooks, for node1 going from `live` tables to the state `to` (settings in place). */
  const planDoc = (to: ClusterState, live: Ruleset) => {
    const view = resolveNode(to, 'node1');
    return JSON.stringify(planJson(planNode(view, { ...liveAsApplied(view, view), nft: live }, undefined, { revision: 'a'.repeat(40) })));
  };
  const runHook = (hook: string, input: string, env: Record<string, string> = {}) =>
    execa(hook, [], { input, reject: false, env: { CGW_NODE: 'node1', CGW_REVISION: 'a'.repeat(40), CGW_ALLOW_FILE: path.join(scratch, 'no-such-file'), ...env } });

  it('lets a plan that only adds through', async () => {
    const r = await runHook(preApply, planDoc(state, { tables: [] }));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('pre-apply: ok (8+/0- rules, 5+/0- elements)');
  });

  it('vetoes a plan that deletes a table (plan on stdin, or in CGW_PLAN_FILE)', async () => {
    // The state stops listing trunks on node1: its ARP table goes.
    const noTrunks = { ...state, nodes: state.nodes.map((n) => (n.name === 'node1' ? { ...n, trunks: [] } : n)) };
    const doc = planDoc(noTrunks, renderNode(state, 'node1'));
    const r = await runHook(preApply, doc);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`pre-apply: refusing revision ${'a'.repeat(40)} on node1: deletes table netdev cgw_arp`);

    const planFile = path.join(scratch, 'plan.json');
    await writeFile(planFile, doc);
    expect((await runHook(preApply, '', { CGW_PLAN_FILE: planFile })).exitCode).toBe(1);

    // Allowed on purpose for this one revision.
    const allow = path.join(scratch, 'allow-revisions');
    await writeFile(allow, `${'b'.repeat(40)}\n${'a'.repeat(40)}\n`);
    const allowed = await runHook(preApply, doc, { CGW_ALLOW_FILE: allow });
    expect(allowed.exitCode).toBe(0);
    expect(allowed.stdout).toContain('is allowed explicitly');
  });

  it('vetoes a plan removing more elements than CGW_MAX_REMOVED', async () => {
    const doc = planDoc(state, renderNode(withExtras, 'node1'));
    expect((await runHook(preApply, doc)).exitCode).toBe(0); // 2 removed, default limit 10
    const r = await runHook(preApply, doc, { CGW_MAX_REMOVED: '1' });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('removes 0 rule(s) and 2 map element(s), more than 1');
  });

  it('post-apply.example logs one summary line', async () => {
    const r = await runHook(postApply, planDoc(state, { tables: [] }));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe(`node node1 applied revision ${'a'.repeat(40)}: rules +8/-0, elements +5/-0, guest actions 0`);
  });
});

describe('systemd/agent.example.yaml', () => {
  it('is a valid agent configuration', async () => {
    // It names no file a fresh node lacks (token, keys, deploy key are commented out until the
    // README's install steps create them), so it loads with every file check on.
    const c = await loadAgentConfig(path.join(PROJECT_ROOT, 'systemd/agent.example.yaml'));
    expect(c).toMatchObject({ node: 'node1', drift: 'correct', stateDir: '/var/lib/cgw-sync', ownedTables: ['ip cgw_nat', 'netdev cgw_arp', 'ip cgw_raw', 'bridge cgw_sync', 'bridge cgw_gwmac', 'ip6 cgw_nat6', 'bridge cgw_migration'] });
    expect(c.source).toMatchObject({ branch: 'main', allowNonDescendant: false, trustedKeys: [] });
    expect(c.source.tokenFile).toBeUndefined();
  });
});
