// What a fetch of the source costs the Git server, counted by a forwarding proxy in front of the
// real smart-HTTP server: nothing new is one GET of the ref advertisement; a new revision is that
// GET and one POST to upload-pack (the advertisement is not asked for twice), and the work tree
// then holds exactly the new revision, also when one isomorphic-git cache serves a series of
// fetches (each adds a pack: the cache must see the new ones).
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchSource } from '../src/git/source.js';
import { countingProxy, type CountingProxy } from './helpers/counting-proxy.js';
import { commitFiles, startGitFixture, type GitFixture } from './helpers/git-server.js';

const SEED = { 'cluster.yaml': 'name: lab\n', 'forwards/web.yaml': 'forwards: []\n' };

describe('source fetch over HTTP: requests', () => {
  let fx: GitFixture;
  let proxy: CountingProxy;
  beforeAll(async () => {
    fx = await startGitFixture({ files: SEED });
    proxy = await countingProxy(fx.server.url);
  });
  afterAll(async () => {
    await proxy?.close();
    await fx?.cleanup();
  });

  it('asks for the advertisement once per fetch and checks out exactly the new revision', async () => {
    const url = `${proxy.url}/state.git`;
    const cacheDir = await fx.tmp('cache');
    const first = await fetchSource({ url, cacheDir });
    if (!first.accepted) throw new Error(first.reason);

    proxy.requests.length = 0;
    const same = await fetchSource({ url, cacheDir, lastAppliedOid: first.revision });
    expect(same.revision).toBe(first.revision);
    expect(proxy.requests).toEqual(['GET /state.git/info/refs?service=git-upload-pack']);

    const next = { ...SEED, 'forwards/web.yaml': 'forwards:\n  - name: web\n', 'forwards/db.yaml': 'forwards: []\n' };
    const oid = await commitFiles(fx.repo, next);
    proxy.requests.length = 0;
    const r = await fetchSource({ url, cacheDir, lastAppliedOid: first.revision });
    if (!r.accepted) throw new Error(r.reason);
    expect(r.revision).toBe(oid);
    expect(r.advertised?.['refs/heads/main']).toBe(oid);
    expect(proxy.requests).toEqual(['GET /state.git/info/refs?service=git-upload-pack', 'POST /state.git/git-upload-pack']);
    for (const [file, text] of Object.entries(next)) expect(await readFile(path.join(r.dir, file), 'utf8')).toBe(text);
  });

  it('one pack cache over a series of fetches: each checks out exactly its revision', async () => {
    const url = `${proxy.url}/state.git`;
    const cacheDir = await fx.tmp('cached');
    const gitCache = {};
    let last = await fetchSource({ url, cacheDir, gitCache });
    for (let i = 1; i <= 4; i++) {
      const files = { ...SEED, [`forwards/f${i}.yaml`]: `forwards: [${i}]\n`, 'cluster.yaml': `name: lab\nrevision: ${i}\n` };
      const oid = await commitFiles(fx.repo, files);
      const r = await fetchSource({ url, cacheDir, gitCache, lastAppliedOid: last.revision });
      if (!r.accepted) throw new Error(r.reason);
      expect(r.revision).toBe(oid);
      const disk = await readdir(path.join(r.dir, 'forwards'));
      expect(disk.sort()).toEqual(Object.keys(files).filter((f) => f.startsWith('forwards/')).map((f) => f.slice('forwards/'.length)).sort());
      for (const [file, text] of Object.entries(files)) expect(await readFile(path.join(r.dir, file), 'utf8')).toBe(text);
      last = r;
    }
    // Each fetch brought its revision as a pack of its own: the cache read objects across them.
    expect((await readdir(path.join(cacheDir, '.git', 'objects', 'pack'))).filter((f) => f.endsWith('.pack')).length).toBeGreaterThanOrEqual(5);
  });
});
