// Where the state's history placed each guest (src/git/placement-history.ts), read from a source
// cache fetched over a real git smart-HTTP server on 127.0.0.1: placements across commits, walks
// that read only new commits, a long history read across walks, and a hostile history (huge
// trees, oversized and broken guest files, an alias bomb, a symlink) that stays within the budget.
import fs from 'node:fs';
import path from 'node:path';
import git from 'isomorphic-git';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HISTORY_LIMITS, PlacementHistoryReader } from '../src/git/placement-history.js';
import { fetchSource } from '../src/git/source.js';
import { writeFilesTree } from '../src/git/tree.js';
import { STATE_LIMITS } from '../src/state/files.js';
import { stateExampleFiles } from './helpers/agent-fixture.js';
import { commitFiles, commitHugeGuestTrees, commitTree, startGitFixture, type GitFixture } from './helpers/git-server.js';

let fx: GitFixture;
let files: Record<string, string>;

/** guests/<name>.yaml of state-example, placed on `node`. */
function guestOn(name: string, node: string): string {
  const text = files[`guests/${name}.yaml`] ?? (files['guests/guest1.yaml'] as string).replace(/guest1/g, name);
  return text.replace(/^node: .*$/m, `node: ${node}`);
}

/** The server's main branch fetched into a fresh cache (the agent's source path); its revision. */
async function fetchInto(cacheDir: string): Promise<string> {
  const r = await fetchSource({ url: fx.url, cacheDir });
  if (!r.accepted) throw new Error(`refused: ${r.reason}`);
  return r.revision;
}

beforeAll(async () => {
  files = await stateExampleFiles();
  fx = await startGitFixture({ files });
});
afterAll(async () => fx?.cleanup());

describe('placement history', () => {
  it('names every node a guest was placed on; a later walk reads only the new commits', async () => {
    const cache = path.join(await fx.tmp('cache'), 'state');
    await commitFiles(fx.repo, { ...files, 'guests/guest2.yaml': guestOn('guest2', 'node1') }, { message: 'move guest2 to node1' });
    const reader = new PlacementHistoryReader({ dir: cache }, '.');
    const first = await reader.read(await fetchInto(cache));
    expect(first.incomplete).toBeUndefined();
    expect(first.nodesOf('guest1')).toEqual(['node1']);
    expect(first.nodesOf('guest2')).toEqual(['node1', 'node2']);
    expect(first.nodesOf('guest9')).toEqual([]);
    expect(reader.lastWalk).toMatchObject({ commits: 2, blobs: 3 });

    // A forwards-only change: one new commit, the same guests tree, nothing parsed.
    await commitFiles(fx.repo, { ...files, 'guests/guest2.yaml': guestOn('guest2', 'node1'), 'forwards/extra.yaml': 'apiVersion: cgw-sync/v1\nkind: Forwards\nforwards: []\n' });
    const second = await reader.read(await fetchInto(cache));
    expect(reader.lastWalk).toMatchObject({ commits: 1, blobs: 0 });
    expect(second.nodesOf('guest2')).toEqual(['node1', 'node2']);

    // Same revision again, twice at once (walks of one reader take turns): nothing to walk.
    const tip = await fetchInto(cache);
    const both = await Promise.all([reader.read(tip), reader.read(tip)]);
    expect(reader.lastWalk.commits).toBe(0);
    expect(both.map((h) => h.nodesOf('guest2'))).toEqual([['node1', 'node2'], ['node1', 'node2']]);
  });

  it('a state in a folder of the repository: its guests folder is the one read', async () => {
    const repo = await fx.tmp('nested');
    const inFolder = Object.fromEntries(Object.entries(files).map(([p, t]) => [`clusters/lab/${p}`, t]));
    await git.init({ fs, dir: repo, defaultBranch: 'main' });
    const root = await writeFilesTree({ dir: repo }, { ...inFolder, 'guests/decoy.yaml': guestOn('guest1', 'node2') });
    const tip = await commitTree(path.join(repo, '.git'), root, { parent: null });
    const history = await new PlacementHistoryReader({ dir: repo }, './clusters/lab/').read(tip);
    expect(history.nodesOf('guest1')).toEqual(['node1']);
  });

  it('a long history is read across walks, each within its budget', async () => {
    const cache = path.join(await fx.tmp('cache'), 'state');
    // 40 commits; the guest wandered to node3 in the oldest of them only.
    let tip = await commitFiles(fx.repo, { ...files, 'guests/wanderer.yaml': guestOn('wanderer', 'node3') });
    for (let i = 0; i < 39; i++) tip = await commitFiles(fx.repo, { ...files, 'guests/wanderer.yaml': guestOn('wanderer', 'node1'), 'cluster.yaml': `${files['cluster.yaml']}# ${i}\n` });
    expect(await fetchInto(cache)).toBe(tip);
    const reader = new PlacementHistoryReader({ dir: cache }, '.', { ...HISTORY_LIMITS, commitsPerWalk: 20 });
    const first = await reader.read(tip);
    expect(reader.lastWalk.commits).toBe(20);
    expect(first.incomplete).toMatch(/read only in part \(20 commits so far; .*the next cycle reads on/);
    const second = await reader.read(tip);
    expect(second.incomplete).toMatch(/read only in part \(40 commits so far/);
    const third = await reader.read(tip);
    expect(third.incomplete).toBeUndefined();
    expect(third.nodesOf('wanderer')).toEqual(['node1', 'node3']);
  });

  it('a hostile history: huge trees and bad guest files are skipped, and each walk stays within its budget', async () => {
    const cache = path.join(await fx.tmp('cache'), 'state');
    const gitdir = fx.repo;
    // 12 commits whose guests folder holds 20,000 files naming guest1 on node2.
    await commitHugeGuestTrees(gitdir, { commits: 12, entries: 20_000, guestText: guestOn('guest1', 'node2') });
    const base = await git.readTree({ fs, gitdir, oid: (await git.readCommit({ fs, gitdir, oid: await git.resolveRef({ fs, gitdir, ref: 'main' }) })).commit.tree });
    const withGuests = (guests: string) => git.writeTree({ fs, gitdir, tree: [...base.tree.filter((e) => e.path !== 'guests'), { mode: '040000', path: 'guests', type: 'tree', oid: guests }] });
    // Guest files a loader refuses, each naming a node: too large, not UTF-8, an alias bomb, a symlink.
    const blob = (text: string | Uint8Array) => git.writeBlob({ fs, gitdir, blob: typeof text === 'string' ? new TextEncoder().encode(text) : text });
    const bomb = `a: &a ["x","x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nname: guest1\nnode: node4\n`;
    const bad = await git.writeTree({
      fs,
      gitdir,
      tree: [
        { mode: '100644', path: 'big.yaml', type: 'blob', oid: await blob(`${guestOn('guest1', 'node5')}#${'x'.repeat(STATE_LIMITS.fileBytes)}\n`) },
        { mode: '100644', path: 'binary.yaml', type: 'blob', oid: await blob(Uint8Array.from([0x6e, 0x61, 0x6d, 0x65, 0x3a, 0xff, 0xfe])) },
        { mode: '100644', path: 'bomb.yaml', type: 'blob', oid: await blob(bomb) },
        { mode: '120000', path: 'link.yaml', type: 'blob', oid: await blob(guestOn('guest1', 'node6')) },
        { mode: '100644', path: 'guest1.yaml', type: 'blob', oid: await blob(guestOn('guest1', 'node1')) },
      ],
    });
    await commitTree(gitdir, await withGuests(bad), { message: 'bad guest files' });
    // The tip is a valid state again.
    const tip = await commitFiles(gitdir, files, { message: 'valid again' });
    expect(await fetchInto(cache)).toBe(tip);

    const reader = new PlacementHistoryReader({ dir: cache }, '.');
    const walks: { ms: number; entries: number }[] = [];
    let history = await reader.read(tip);
    for (let i = 0; i < 5 && history.incomplete; i++) {
      const t0 = Date.now();
      history = await reader.read(tip);
      walks.push({ ms: Date.now() - t0, entries: reader.lastWalk.entries });
    }
    // 12 x 20,000 entries exceed one walk's budget: the first walk stopped, later ones resumed.
    expect(walks.length).toBeGreaterThan(0);
    for (const w of walks) expect(w.entries).toBeLessThanOrEqual(HISTORY_LIMITS.entriesPerWalk + 20_000 + 100);
    expect(history.incomplete).toBeUndefined();
    // Nothing of the refused trees or files counts; the regular guest1.yaml does, the alias bomb is cut off by the parser.
    expect(history.nodesOf('guest1')).toEqual(['node1']);
  }, 120_000);

  it('a revision the repository does not hold is an incomplete history, not an empty one', async () => {
    const cache = path.join(await fx.tmp('cache'), 'state');
    await fetchInto(cache);
    const history = await new PlacementHistoryReader({ dir: cache }, '.').read('0'.repeat(40));
    expect(history.incomplete).toMatch(/not in the repository/);
  });
});
