// The agent's files beside memory.json (src/agent/memory.ts): last-good/ must be a complete copy
// of the applied revision's tree after every save, also when a save died half-way (a crash in
// the copy, or between the two renames that put it in place), and the running agent's deferred
// state-cache.json must hold the state of the revision it applied last; memory.json reads back
// what was written, a ruleset planned from the applied one named by the plan's change (a few
// elements) against a snapshot under rulesets/. No root needed.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentPaths, DeferredStateCache, loadLastGood, loadStateCached, readMemory, recoverLastGood, rememberChange, saveLastGood, writeMemory, type AgentMemory } from '../src/agent/memory.js';
import { applyChange, changeOfPlan, replayChanges } from '../src/agent/ruleset-store.js';
import { tableId, type Ruleset } from '../src/nft/model.js';
import type { TableRef } from '../src/nft/transaction.js';
import { planNft } from '../src/plan/nft-plan.js';
import { syntheticState, writeSyntheticStateRepo } from '../src/bench/synthetic.js';
import { renderNode } from '../src/render/render.js';
import { forwardsDocument } from '../src/bench/state-repo.js';
import { commitDirectory, createBareRepo } from '../src/git/bare-repo.js';
import { loadState } from '../src/state/load.js';

const scratch = await mkdtemp(join(tmpdir(), 'cgw-memory-files-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

/** Every file under `dir` (relative path -> bytes as text), `.git` left out. */
async function treeOf(dir: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    if (e.name === '.git') continue;
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) Object.assign(out, await treeOf(dir, r));
    else out[r] = await readFile(join(dir, r), 'utf8');
  }
  return out;
}

/** The tree of commit `oid` as Git itself reads it (path -> content). */
function revisionTree(repo: string, oid: string): Record<string, string> {
  const git = (...args: string[]) => execFileSync('git', ['--git-dir', repo, ...args]).toString();
  const paths = git('ls-tree', '-r', '--name-only', '-z', oid).split('\0').filter(Boolean);
  return Object.fromEntries(paths.map((p) => [p, git('show', `${oid}:${p}`)]));
}

/** A state repository with a work folder (what the agent copies from) and a bare repository of its commits. */
async function stateRepo(name: string) {
  const root = join(scratch, name);
  const work = join(root, 'work');
  await writeSyntheticStateRepo(work, 200);
  await mkdir(join(root, 'srv'), { recursive: true });
  const repo = await createBareRepo(join(root, 'srv'), 'state.git', { seedDir: work });
  const stateDir = join(root, 'agent');
  await mkdir(stateDir);
  let n = 0;
  /** One more revision: a forward added in a new file, the big list rewritten (one forward dropped), a guest file removed on the first. */
  const next = async () => {
    n++;
    await writeFile(join(work, 'forwards', `extra-${n}.yaml`), forwardsDocument([{ name: `extra-${n}`, protocol: 'tcp', port: 40000 + n, target: { guest: 'guest1', port: 80 } }]));
    const list = await readFile(join(work, 'forwards', 'bench.yaml'), 'utf8');
    await writeFile(join(work, 'forwards', 'bench.yaml'), list.replace(/\n {2}- name: fwd-\d+\n(?: {4,}.*\n)+?(?= {2}- )/, '\n'));
    return commitDirectory(repo, work, { message: `revision ${n}` });
  };
  const seed = execFileSync('git', ['--git-dir', repo, 'rev-parse', 'main']).toString().trim();
  return { work, repo, stateDir, next, seed };
}

describe('last-good/', () => {
  it('equals the tree of each applied revision, and never shares a file with the work tree it was copied from', async () => {
    const r = await stateRepo('plain');
    await saveLastGood(r.stateDir, r.work);
    const lastGood = agentPaths(r.stateDir).lastGood;
    expect(await treeOf(lastGood)).toEqual(revisionTree(r.repo, r.seed));
    for (let i = 0; i < 3; i++) {
      const oid = await r.next();
      await saveLastGood(r.stateDir, r.work);
      expect(await treeOf(lastGood)).toEqual(revisionTree(r.repo, oid));
    }
    // The checkout rewrites its files in place: the copy must not change with them.
    const saved = await treeOf(lastGood);
    await writeFile(join(r.work, 'cluster.yaml'), '# rewritten in place\n');
    await writeFile(join(r.work, 'forwards', 'bench.yaml'), '# rewritten in place\n');
    expect(await treeOf(lastGood)).toEqual(saved);
    expect((await loadLastGood(r.stateDir)).state?.forwards.length).toBe(200 - 3 + 3);
  });

  it('takes a source file rewritten with the same size, also after its unchanged bytes were linked by their stamps', async () => {
    const r = await stateRepo('stamps');
    const lastGood = agentPaths(r.stateDir).lastGood;
    const cluster = join(r.work, 'cluster.yaml');
    // Stamps are trusted only for files unchanged for two seconds (a same-size rewrite in the same
    // timestamp tick would look unchanged): let the work tree age past that.
    await new Promise((resolve) => setTimeout(resolve, 2100));
    await saveLastGood(r.stateDir, r.work);
    const oid = await r.next();
    // Linked by their stamps now; the new revision's files compared by bytes.
    await saveLastGood(r.stateDir, r.work);
    expect(await treeOf(lastGood)).toEqual(revisionTree(r.repo, oid));
    const text = await readFile(cluster, 'utf8');
    const rewritten = text.replace(/name: (\w)/, (_, c: string) => `name: ${c === 'x' ? 'y' : 'x'}`);
    expect(rewritten.length).toBe(text.length);
    expect(rewritten).not.toBe(text);
    await writeFile(cluster, rewritten);
    await saveLastGood(r.stateDir, r.work);
    expect(await readFile(join(lastGood, 'cluster.yaml'), 'utf8')).toBe(rewritten);
    expect(await treeOf(lastGood)).toEqual(await treeOf(r.work));
  });

  it('stays the applied revision after a save died in the copy, between its renames, or before removing the old copy', async () => {
    const r = await stateRepo('crash');
    const lastGood = agentPaths(r.stateDir).lastGood;
    const first = await r.next();
    await saveLastGood(r.stateDir, r.work);
    const applied = revisionTree(r.repo, first);

    // Died in the copy: a half-written `.tmp` beside an intact last-good/.
    await mkdir(`${lastGood}.tmp/forwards`, { recursive: true });
    await writeFile(`${lastGood}.tmp/forwards/bench.yaml`, 'apiVersion: cgw-sync/v1\nkind: Forw');
    expect(await treeOf(lastGood)).toEqual(applied);
    const second = await r.next();
    await saveLastGood(r.stateDir, r.work);
    expect(await treeOf(lastGood)).toEqual(revisionTree(r.repo, second));
    await expect(stat(`${lastGood}.tmp`)).rejects.toThrow();

    // Died between the renames: last-good/ gone, the applied copy in `.old`, the new one complete in `.tmp`.
    // (The removal of the replaced copy runs after the save returns: waited for as the agent's next save would.)
    await recoverLastGood(r.stateDir);
    await expect(stat(`${lastGood}.old`)).rejects.toThrow();
    const atSecond = await treeOf(lastGood);
    await r.next();
    await rename(lastGood, `${lastGood}.old`);
    await mkdir(`${lastGood}.tmp`);
    await writeFile(`${lastGood}.tmp/cluster.yaml`, 'not the applied revision\n');
    const loaded = await loadLastGood(r.stateDir);
    expect(loaded.diagnostics).toEqual([]);
    expect(await treeOf(lastGood)).toEqual(atSecond);
    expect(loaded.state).toEqual((await loadState(lastGood)).state);

    // Died after the swap, before removing `.old`: last-good/ is the new copy and stays so.
    await mkdir(`${lastGood}.old`, { recursive: true });
    await writeFile(`${lastGood}.old/cluster.yaml`, 'an older copy\n');
    await recoverLastGood(r.stateDir);
    expect(await treeOf(lastGood)).toEqual(atSecond);
    const third = await r.next();
    await saveLastGood(r.stateDir, r.work);
    expect(await treeOf(lastGood)).toEqual(revisionTree(r.repo, third));
    await recoverLastGood(r.stateDir);
    await expect(stat(`${lastGood}.old`)).rejects.toThrow();
  });
});

describe('the running agent\'s state-cache.json', () => {
  it('is written once the agent is idle, holds the revision set last, and is not written while a cycle runs', async () => {
    const r = await stateRepo('cache');
    const file = agentPaths(r.stateDir).stateCache;
    const state = (await loadState(r.work)).state;
    if (!state) throw new Error('the generated state is invalid');
    const cache = new DeferredStateCache(r.stateDir, 20);
    cache.set('rev-a', r.work, state);
    cache.set('rev-b', r.work, state);
    cache.pause();
    // A cycle running (paused) for longer than the idle time: nothing is written.
    await new Promise((resolve) => setTimeout(resolve, 60));
    await expect(stat(file)).rejects.toThrow();
    cache.idle();
    const deadline = Date.now() + 5000;
    while (!(await stat(file).catch(() => undefined)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    await cache.flush();
    expect((await loadStateCached(r.stateDir, 'rev-b', r.work)).state).toEqual(state);
    // Another revision's cache is not taken for this one: rev-a was replaced before it was written.
    const other = await loadStateCached(r.stateDir, 'rev-a', join(scratch, 'missing'));
    expect(other.state).toBeUndefined();
    expect(cache.takeFailure()).toBeUndefined();
  });

  it('reports a write that failed, once', async () => {
    const r = await stateRepo('cache-fail');
    const state = (await loadState(r.work)).state;
    if (!state) throw new Error('the generated state is invalid');
    // The cache file's place is a folder: the rename over it fails.
    await mkdir(agentPaths(r.stateDir).stateCache);
    const cache = new DeferredStateCache(r.stateDir);
    cache.set('rev-a', r.work, state);
    await cache.flush();
    expect(cache.takeFailure()).toMatch(/state-cache\.json|EISDIR|directory/i);
    expect(cache.takeFailure()).toBeUndefined();
  });
});

/** The refs of every table in these rulesets (what planNft may touch). */
function ownedOf(...rs: Ruleset[]): TableRef[] {
  return [...new Map(rs.flatMap((r) => r.tables).map((t) => [tableId(t), { family: t.family, name: t.name }])).values()];
}

/** `r` with the first chain holding rules cut to its first rule (a rules change). */
function withFewerRules(r: Ruleset): Ruleset {
  const i = r.tables.findIndex((t) => t.chains.some((c) => c.rules.length > 1));
  if (i < 0) throw new Error('no chain with two rules to cut');
  const t = r.tables[i]!;
  const j = t.chains.findIndex((c) => c.rules.length > 1);
  const chains = t.chains.map((c, k) => (k === j ? { ...c, rules: c.rules.slice(0, 1) } : c));
  return { tables: r.tables.map((x, k) => (k === i ? { ...t, chains } : x)) };
}

describe('a ruleset as the change of a plan', () => {
  const base = renderNode(syntheticState(50), 'node1');
  const cases: Array<[string, Ruleset]> = [
    ['a forward more', renderNode(syntheticState(51), 'node1')],
    ['forwards fewer', renderNode(syntheticState(40), 'node1')],
    ['a rule less', withFewerRules(base)],
    ['a table gone', { tables: base.tables.slice(1) }],
    ['nothing changed', base],
  ];
  it.each(cases)('%s: the change replayed on the base is the desired ruleset', (_, desired) => {
    const owned = ownedOf(base, desired);
    const plan = planNft(desired, base, owned);
    const after = applyChange(base, changeOfPlan(plan));
    expect(after && planNft(desired, after, owned).changes).toEqual([]);
    expect(after && planNft(after, desired, owned).changes).toEqual([]);
  });

  it('a table created is put in whole; elements of a table the base lacks do not fit', () => {
    const desired = renderNode(syntheticState(51), 'node1');
    const empty: Ruleset = { tables: [] };
    const created = applyChange(empty, changeOfPlan(planNft(desired, empty, ownedOf(desired))));
    expect(created).toEqual(desired);
    const elementsOnly = changeOfPlan(planNft(desired, base, ownedOf(desired)));
    expect(elementsOnly.tables).toEqual([]);
    expect(elementsOnly.elements.length).toBeGreaterThan(0);
    expect(applyChange(empty, elementsOnly)).toBeUndefined();
    expect(replayChanges(base, [elementsOnly, elementsOnly])).toEqual(applyChange(base, elementsOnly));
  });
});

describe('memory.json', () => {
  it('reads back what was written, rulesets and hostile strings alike', async () => {
    const desired = renderNode(syntheticState(50), 'node1');
    const other = renderNode(syntheticState(51), 'node1');
    // Strings from the state and the network land in the memory.
    const hostile = '\u0000ruleset-0000000000000000 "desired" \\u0000ruleset- ../../etc';
    const memory: AgentMemory = {
      applying: { revision: 'b', desired: other },
      applied: { revision: 'a', at: '2026-01-01T00:00:00.000Z', desired },
      lastReportKey: hostile,
      outage: { since: 'x', failures: 1, lastError: hostile },
      held: { revision: 'c', at: 'y', reason: '{"desired":null}' },
    };
    const dir = join(scratch, 'memory-roundtrip');
    await writeMemory(dir, memory);
    expect(await readMemory(dir)).toEqual(JSON.parse(JSON.stringify(memory)));
    await writeMemory(dir, {});
    expect(await readMemory(dir)).toEqual({});
    // Nothing names a snapshot any more: none is left.
    expect(await readdir(join(dir, 'rulesets'))).toEqual([]);
  });

  it('names a ruleset planned from the applied one by the change, and replays it when read', async () => {
    const dir = join(scratch, 'memory-changes');
    const base = renderNode(syntheticState(2000), 'node1');
    await writeMemory(dir, { applied: { revision: 'a', at: 't', desired: base } });
    const whole = (await stat(agentPaths(dir).memory)).size;
    const snapshots = await readdir(join(dir, 'rulesets'));
    expect(snapshots).toHaveLength(1);
    let applied = base;
    for (const n of [2001, 2002, 1999]) {
      const next = renderNode(syntheticState(n), 'node1');
      const owned = ownedOf(applied, next);
      rememberChange(dir, applied, next, planNft(next, applied, owned));
      // Before the transaction (applying) and after it (applied): a few elements each time.
      await writeMemory(dir, { applied: { revision: 'a', at: 't', desired: applied }, applying: { revision: `r${n}`, desired: next } });
      await writeMemory(dir, { applied: { revision: `r${n}`, at: 't', desired: next } });
      expect((await stat(agentPaths(dir).memory)).size).toBeLessThan(whole + 4000);
      expect(await readdir(join(dir, 'rulesets'))).toEqual(snapshots);
      applied = next;
    }
    const read = await readMemory(dir);
    expect(planNft(applied, read.applied!.desired, ownedOf(applied)).changes).toEqual([]);
    expect(read.applied!.desired).toEqual(JSON.parse(JSON.stringify(applied)));
    // What was read is named by its form again: written back without a new snapshot.
    await writeMemory(dir, read);
    expect(await readdir(join(dir, 'rulesets'))).toEqual(snapshots);
  });

  it('changes that add up are written as a snapshot of the new ruleset instead', async () => {
    const dir = join(scratch, 'memory-compact');
    const base = renderNode(syntheticState(10), 'node1');
    await writeMemory(dir, { applied: { revision: 'a', at: 't', desired: base } });
    const [first] = await readdir(join(dir, 'rulesets'));
    // Thousands of forwards more: more elements than memory.json carries as changes.
    const next = renderNode(syntheticState(6000), 'node1');
    rememberChange(dir, base, next, planNft(next, base, ownedOf(base, next)));
    await writeMemory(dir, { applied: { revision: 'b', at: 't', desired: next } });
    const after = await readdir(join(dir, 'rulesets'));
    expect(after).toHaveLength(1);
    expect(after).not.toEqual([first]);
    const memory = JSON.parse(await readFile(agentPaths(dir).memory, 'utf8')) as { applied: { ruleset: { changes: unknown[] } } };
    expect(memory.applied.ruleset.changes).toEqual([]);
    expect((await readMemory(dir)).applied?.desired).toEqual(JSON.parse(JSON.stringify(next)));
  });

  it('a ruleset not known by a change gets a snapshot of its own; the old one goes', async () => {
    const dir = join(scratch, 'memory-snapshots');
    const a = renderNode(syntheticState(30), 'node1');
    const b = renderNode(syntheticState(31), 'node1');
    await writeMemory(dir, { applied: { revision: 'a', at: 't', desired: a } });
    const first = await readdir(join(dir, 'rulesets'));
    await writeMemory(dir, { applied: { revision: 'a', at: 't', desired: a }, applying: { revision: 'b', desired: b } });
    expect(await readdir(join(dir, 'rulesets'))).toHaveLength(2);
    await writeMemory(dir, { applied: { revision: 'b', at: 't', desired: b } });
    const last = await readdir(join(dir, 'rulesets'));
    expect(last).toHaveLength(1);
    expect(last).not.toEqual(first);
    expect((await readMemory(dir)).applied?.desired).toEqual(JSON.parse(JSON.stringify(b)));
  });

  it('reads a memory.json that holds its rulesets itself (written by an older version)', async () => {
    const dir = join(scratch, 'memory-older');
    const desired = renderNode(syntheticState(20), 'node1');
    const memory: AgentMemory = { applied: { revision: 'a', at: 't', desired }, applying: { revision: 'b', desired }, lastReportKey: 'k' };
    await mkdir(dir, { recursive: true });
    await writeFile(agentPaths(dir).memory, JSON.stringify(memory));
    expect(await readMemory(dir)).toEqual(JSON.parse(JSON.stringify(memory)));
  });

  it('a snapshot gone or forged: the read fails and names memory.json', async () => {
    const dir = join(scratch, 'memory-broken');
    await writeMemory(dir, { applied: { revision: 'a', at: 't', desired: renderNode(syntheticState(10), 'node1') } });
    const text = await readFile(agentPaths(dir).memory, 'utf8');
    await rm(join(dir, 'rulesets'), { recursive: true });
    await expect(readMemory(dir)).rejects.toThrow(/memory\.json: .*ENOENT/);
    await writeFile(agentPaths(dir).memory, text.replace(/"snapshot":"[0-9a-f]+"/, '"snapshot":"../../x"'));
    await expect(readMemory(dir)).rejects.toThrow(/memory\.json: invalid ruleset snapshot id/);
  });
});
