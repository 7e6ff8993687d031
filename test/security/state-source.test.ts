// Adversarial group "state files", agent side: a revision served by the real Git smart-HTTP server
// that holds a symlink or a submodule is refused before checkout, so the agent's source cache never
// holds a link from the state repository, and the last accepted revision stays in its work tree.
import { lstat, mkdir, readdir, symlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchSource } from '../../src/git/source.js';
import { stateExampleFiles } from '../helpers/agent-fixture.js';
import { gitCli, resetBranch, startGitFixture, type GitFixture } from '../helpers/git-server.js';
import { CANARY, commitAll, makeSandbox, type Sandbox } from '../helpers/hostile-state.js';

/** Every symbolic link under `dir`, `.git` excluded. */
async function symlinksUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const full = path.join(entry.parentPath, entry.name);
    if (full.split(path.sep).includes('.git')) continue;
    if ((await lstat(full)).isSymbolicLink()) found.push(path.relative(dir, full));
  }
  return found;
}

let fx: GitFixture;
let sb: Sandbox;
let seed: string;
beforeAll(async () => {
  fx = await startGitFixture({ files: await stateExampleFiles() });
  seed = await gitCli(['--git-dir', fx.repo, 'rev-parse', 'main']);
  sb = await makeSandbox('source');
});
afterAll(async () => {
  await fx?.cleanup();
  await sb?.cleanup();
});

/** Push a commit made with the git CLI (which records links and nested repositories as such). */
async function pushHostile(name: string, make: (work: string) => Promise<void>): Promise<void> {
  const work = path.join(sb.root, `work-${name}`);
  await gitCli(['clone', '-q', fx.repo, work]);
  await make(work);
  await commitAll(work, name);
  await gitCli(['push', '-q', 'origin', 'HEAD:main'], work);
}

describe('agent source: hostile revisions over HTTP', () => {
  it.each([
    { name: 'a symlink to /proc/self/environ', make: (w: string) => symlink('/proc/self/environ', path.join(w, 'forwards/env.yaml')), at: 'forwards/env.yaml', what: 'symbolic link' },
    { name: 'a symlinked folder', make: (w: string) => symlink(sb.secretDir, path.join(w, 'extra')), at: 'extra', what: 'symbolic link' },
    {
      name: 'a submodule',
      make: async (w: string) => {
        const sub = path.join(w, 'vendor');
        await mkdir(sub);
        await gitCli(['init', '-q', '-b', 'main'], sub);
        await gitCli(['-c', 'user.name=T', '-c', 'user.email=t@example.org', 'commit', '-q', '--allow-empty', '-m', 'x'], sub);
      },
      at: 'vendor',
      what: 'submodule',
    },
  ])('refuses $name before checkout and keeps the last accepted revision', async ({ name, make, at, what }) => {
    const cacheDir = path.join(sb.root, `cache-${name.replace(/\W+/g, '-')}`);
    await resetBranch(fx.repo, seed);
    const first = await fetchSource({ url: fx.url, cacheDir });
    expect(first.accepted).toBe(true);

    await pushHostile(name.replace(/\W+/g, '-'), make);
    const r = await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: first.revision });
    expect(r.accepted).toBe(false);
    if (r.accepted) return;
    expect(r.refusal).toBe('unsafe-tree');
    expect(r.reason).toMatch(new RegExp(`^${at}:1:1: is a ${what} in Git`, 'm'));
    expect(r.reason).not.toContain(CANARY);
    expect(await symlinksUnder(cacheDir)).toEqual([]);
    expect(await gitCli(['rev-parse', 'HEAD'], cacheDir)).toBe(first.revision);
  });
});
