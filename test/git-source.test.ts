// The state source against a real git smart-HTTP server (git http-backend) on 127.0.0.1.
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkoutRevision,
  fetchSource,
  readFileAtRevision,
  resolveRevision,
  SourceUnavailable,
  type SourceOptions,
} from '../src/git/source.js';
import { commitFiles, generateKey, gitCli, resetBranch, startGitFixture, writeTree, type GitFixture } from './helpers/git-server.js';

const SEED = { 'cluster.yaml': 'name: lab\n', 'nodes/node1.yaml': 'name: node1\n', 'guests/web.yaml': 'name: web\n' };

async function expectUnavailable(p: Promise<unknown>): Promise<SourceUnavailable> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SourceUnavailable);
  return err as SourceUnavailable;
}

function accepted(r: Awaited<ReturnType<typeof fetchSource>>) {
  if (!r.accepted) throw new Error(`expected acceptance, got refusal ${r.refusal}: ${r.reason}`);
  return r;
}

describe('source: clone and fetch', () => {
  let fx: GitFixture;
  beforeAll(async () => {
    fx = await startGitFixture({ files: SEED });
  });
  afterAll(async () => fx?.cleanup());

  it('clones, then fetches a new commit into the work tree, then sees no change', async () => {
    const cacheDir = path.join(await fx.tmp('cache'), 'state');
    const seedOid = await gitCli(['--git-dir', fx.repo, 'rev-parse', 'refs/heads/main']);

    const first = accepted(await fetchSource({ url: fx.url, cacheDir }));
    expect(first).toMatchObject({ revision: seedOid, dir: cacheDir, kind: 'git-remote' });
    expect(await readFile(path.join(cacheDir, 'nodes/node1.yaml'), 'utf8')).toBe('name: node1\n');

    // New commit: one file changed, one removed, one added.
    const next = await commitFiles(fx.repo, {
      'cluster.yaml': 'name: lab2\n',
      'nodes/node1.yaml': 'name: node1\n',
      'forwards.yaml': '[]\n',
    });
    const second = accepted(await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: first.revision }));
    expect(second.revision).toBe(next);
    expect(await readFile(path.join(cacheDir, 'cluster.yaml'), 'utf8')).toBe('name: lab2\n');
    expect(await readFile(path.join(cacheDir, 'forwards.yaml'), 'utf8')).toBe('[]\n');
    await expect(readFile(path.join(cacheDir, 'guests/web.yaml'))).rejects.toThrow(/ENOENT/);

    const third = accepted(await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: next }));
    expect(third.revision).toBe(next);
  });

  it('tracks the configured branch only', async () => {
    const devOid = await commitFiles(fx.repo, { 'cluster.yaml': 'name: dev\n' }, { branch: 'dev', parent: null });
    const cacheDir = await fx.tmp('cache-dev');
    const r = accepted(await fetchSource({ url: fx.url, cacheDir, branch: 'dev' }));
    expect(r.revision).toBe(devOid);
    expect(await readdir(cacheDir)).toEqual(expect.arrayContaining(['.git', 'cluster.yaml']));
    expect(await readFile(path.join(cacheDir, 'cluster.yaml'), 'utf8')).toBe('name: dev\n');
  });

  it('reads and checks out arbitrary revisions offline (branch, origin/branch, short oid, tag)', async () => {
    const cacheDir = await fx.tmp('cache-rev');
    const a = await commitFiles(fx.repo, { 'cluster.yaml': 'name: A\n', 'bin/hook': '#!/bin/sh\n' });
    accepted(await fetchSource({ url: fx.url, cacheDir }));
    const b = await commitFiles(fx.repo, { 'cluster.yaml': 'name: B\n' });
    accepted(await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: a }));

    expect(await resolveRevision(cacheDir, 'main')).toBe(b);
    expect(await resolveRevision(cacheDir, 'origin/main')).toBe(b);
    expect(await resolveRevision(cacheDir, a.slice(0, 8))).toBe(a);
    expect(await readFileAtRevision(cacheDir, a.slice(0, 8), 'cluster.yaml')).toBe('name: A\n');
    expect(await readFileAtRevision(cacheDir, 'HEAD', 'cluster.yaml')).toBe('name: B\n');
    await expect(readFileAtRevision(cacheDir, b, 'bin/hook')).rejects.toThrow(/does not exist at revision/);
    await expect(resolveRevision(cacheDir, 'no-such-branch')).rejects.toThrow(/unknown revision/);

    // An annotated tag made with the CLI in a plain clone of the cache resolves to its commit.
    await gitCli(['-C', cacheDir, '-c', 'user.name=t', '-c', 'user.email=t@example.org', 'tag', '-a', 'v1', '-m', 'v1', a]);
    expect(await resolveRevision(cacheDir, 'v1')).toBe(a);

    const dest = path.join(await fx.tmp('render'), 'out');
    expect(await checkoutRevision(cacheDir, 'v1', dest)).toBe(a);
    expect(await readFile(path.join(dest, 'cluster.yaml'), 'utf8')).toBe('name: A\n');
    expect(await readFile(path.join(dest, 'bin/hook'), 'utf8')).toBe('#!/bin/sh\n');
    // The cache's own work tree is untouched by checkoutRevision.
    expect(await readFile(path.join(cacheDir, 'cluster.yaml'), 'utf8')).toBe('name: B\n');
    await expect(checkoutRevision(cacheDir, 'v1', dest)).rejects.toThrow(/not empty/);
  });
});

describe('source: credentials', () => {
  const TOKEN = `tok-${process.pid}-s3cr3t-value`;
  let fx: GitFixture;
  beforeAll(async () => {
    fx = await startGitFixture({ files: SEED, token: TOKEN });
  });
  afterAll(async () => fx?.cleanup());

  function allText(e: Error): string {
    return [String(e), e.message, e.stack ?? '', JSON.stringify(e), JSON.stringify(Object.entries(e))].join('\n');
  }

  it('refuses without a token, accepts it from a file, an env var or URL userinfo', async () => {
    const none = await expectUnavailable(fetchSource({ url: fx.url, cacheDir: await fx.tmp('c') }));
    expect(none.httpStatus).toBe(401);

    const tokenFile = path.join(await fx.tmp('secret'), 'token');
    await writeFile(tokenFile, `${TOKEN}\n`);
    accepted(await fetchSource({ url: fx.url, cacheDir: await fx.tmp('c'), credentials: { tokenFile } }));

    const envName = `CGW_TEST_TOKEN_${process.pid}`;
    process.env[envName] = TOKEN;
    try {
      accepted(await fetchSource({ url: fx.url, cacheDir: await fx.tmp('c'), credentials: { tokenEnv: envName } }));
    } finally {
      delete process.env[envName];
    }

    const withUserinfo = fx.url.replace('http://', `http://agent:${TOKEN}@`);
    const cacheDir = await fx.tmp('c');
    accepted(await fetchSource({ url: withUserinfo, cacheDir }));
    // The stored remote configuration does not keep the credential either.
    expect(await readFile(path.join(cacheDir, '.git/config'), 'utf8')).not.toContain(TOKEN);
  });

  it('never puts the token (right or wrong) into error text', async () => {
    const wrong = `wrong-${TOKEN}`;
    const tokenFile = path.join(await fx.tmp('secret'), 'token');
    await writeFile(tokenFile, wrong);
    const e1 = await expectUnavailable(fetchSource({ url: fx.url, cacheDir: await fx.tmp('c'), credentials: { tokenFile } }));
    expect(e1.httpStatus).toBe(401);
    expect(allText(e1)).not.toContain(wrong);
    expect(allText(e1)).not.toContain('s3cr3t');

    fx.server.setUnavailable(true);
    try {
      const url = fx.url.replace('http://', `http://agent:${TOKEN}@`);
      const e2 = await expectUnavailable(fetchSource({ url, cacheDir: await fx.tmp('c') }));
      expect(e2.httpStatus).toBe(503);
      expect(allText(e2)).not.toContain('s3cr3t');
      // The URL in the message is the one without userinfo.
      expect(e2.message).toContain(fx.url);
    } finally {
      fx.server.setUnavailable(false);
    }
  });
});

describe('source: commit signatures', () => {
  let fx: GitFixture;
  let trusted: Awaited<ReturnType<typeof generateKey>>;
  let stranger: Awaited<ReturnType<typeof generateKey>>;
  beforeAll(async () => {
    fx = await startGitFixture({ files: SEED });
    [trusted, stranger] = await Promise.all([generateKey('Release Manager'), generateKey('Stranger')]);
  });
  afterAll(async () => fx?.cleanup());

  it('accepts only commits signed by a trusted key and keeps the last verified tree otherwise', async () => {
    const opts = (cacheDir: string, lastAppliedOid?: string): SourceOptions => ({
      url: fx.url,
      cacheDir,
      trustedKeys: [trusted.publicKey],
      lastAppliedOid,
    });
    const cacheDir = await fx.tmp('cache');

    // The CLI-seeded commit is unsigned: refused, and nothing is checked out on a fresh cache.
    const seed = await fetchSource(opts(cacheDir));
    expect(seed).toMatchObject({ accepted: false, refusal: 'unsigned' });
    expect(await readdir(cacheDir)).toEqual(['.git']);
    await expect(resolveRevision(cacheDir, 'main')).rejects.toThrow(/unknown revision/);
    expect(await resolveRevision(cacheDir, 'origin/main')).toBe(seed.revision);

    const good = await commitFiles(fx.repo, { 'cluster.yaml': 'name: signed\n' }, { sign: trusted.privateKey });
    const ok = accepted(await fetchSource(opts(cacheDir)));
    expect(ok.revision).toBe(good);
    expect(ok.signedBy).toBe(trusted.fingerprint);
    expect(await readFile(path.join(cacheDir, 'cluster.yaml'), 'utf8')).toBe('name: signed\n');

    const cases = [
      { refusal: 'unsigned', commit: {} },
      { refusal: 'untrusted-key', commit: { sign: stranger.privateKey } },
      { refusal: 'bad-signature', commit: { sign: trusted.privateKey, tamper: true } },
    ] as const;
    for (const c of cases) {
      await resetBranch(fx.repo, good);
      const bad = await commitFiles(fx.repo, { 'cluster.yaml': `name: ${c.refusal}\n` }, c.commit);
      const r = await fetchSource(opts(cacheDir, good));
      expect(r).toMatchObject({ accepted: false, refusal: c.refusal, revision: bad });
      // The work tree still holds the last verified revision.
      expect(await readFile(path.join(cacheDir, 'cluster.yaml'), 'utf8')).toBe('name: signed\n');
      expect(await resolveRevision(cacheDir, 'HEAD')).toBe(good);
    }

    // Without configured keys the same unsigned commit is fine.
    await resetBranch(fx.repo, good);
    const plain = await commitFiles(fx.repo, { 'cluster.yaml': 'name: plain\n' });
    expect(accepted(await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: good })).revision).toBe(plain);
  });

  it('verifies a commit signed by the git CLI with gpg (binary signature)', async () => {
    const gnupg = await fx.tmp('gnupg');
    const env = { ...process.env, GNUPGHOME: gnupg, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' };
    const { run } = await import('../src/netns/netns.js');
    const work = await fx.tmp('work');
    try {
      await run('gpg', ['--batch', '--import'], { env, input: trusted.privateKey });
      await run('git', ['clone', '--quiet', fx.url, work], { env });
      await writeFile(path.join(work, 'cluster.yaml'), 'name: gpg-signed\n');
      const id = ['-c', 'user.name=Release Manager', '-c', 'user.email=release.manager@example.org'];
      await run('git', ['-C', work, ...id, 'commit', '-q', '-a', `-S${trusted.fingerprint}`, '-m', 'signed by gpg'], { env });
    } finally {
      // gpg started an agent for this GNUPGHOME; end it (it is ours).
      await run('gpgconf', ['--kill', 'gpg-agent'], { env }).catch(() => undefined);
    }
    await run('git', ['-C', work, 'push', '-q', 'origin', 'HEAD:main', '--force'], { env });
    const oid = (await run('git', ['-C', work, 'rev-parse', 'HEAD'], { env })).stdout.trim();

    const r = accepted(await fetchSource({ url: fx.url, cacheDir: await fx.tmp('c'), trustedKeys: [trusted.publicKey] }));
    expect(r.revision).toBe(oid);
    expect(r.signedBy).toBe(trusted.fingerprint);
  });
});

describe('source: history rewrites', () => {
  let fx: GitFixture;
  beforeAll(async () => {
    fx = await startGitFixture({ files: SEED });
  });
  afterAll(async () => fx?.cleanup());

  it('refuses a force-pushed rollback unless allowed', async () => {
    const cacheDir = await fx.tmp('cache');
    const c1 = accepted(await fetchSource({ url: fx.url, cacheDir })).revision;
    const c2 = await commitFiles(fx.repo, { 'cluster.yaml': 'name: two\n' });
    expect(accepted(await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: c1 })).revision).toBe(c2);

    await resetBranch(fx.repo, c1);
    const back = await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: c2 });
    expect(back).toMatchObject({ accepted: false, refusal: 'not-descendant', revision: c1 });
    expect(await readFile(path.join(cacheDir, 'cluster.yaml'), 'utf8')).toBe('name: two\n');

    // Same on a fresh cache, which never saw c2.
    const fresh = await fetchSource({ url: fx.url, cacheDir: await fx.tmp('fresh'), lastAppliedOid: c2 });
    expect(fresh).toMatchObject({ accepted: false, refusal: 'not-descendant' });

    // An unrelated history is refused as well.
    const orphan = await commitFiles(fx.repo, { 'cluster.yaml': 'name: orphan\n' }, { parent: null });
    expect(await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: c2 })).toMatchObject({ accepted: false, revision: orphan });

    await resetBranch(fx.repo, c1);
    const allowed = accepted(await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: c2, allowNonDescendant: true }));
    expect(allowed.revision).toBe(c1);
    expect(await readFile(path.join(cacheDir, 'cluster.yaml'), 'utf8')).toBe('name: lab\n');
  });
});

describe('source: server outage', () => {
  let fx: GitFixture;
  beforeAll(async () => {
    fx = await startGitFixture({ files: SEED });
  });
  afterAll(async () => fx?.cleanup());

  it('reports SourceUnavailable while the server is down or answers 503, then recovers', async () => {
    const cacheDir = await fx.tmp('cache');
    const c1 = accepted(await fetchSource({ url: fx.url, cacheDir })).revision;

    await fx.server.stop();
    const down = await expectUnavailable(fetchSource({ url: fx.url, cacheDir, lastAppliedOid: c1 }));
    expect(down.code).toBe('ECONNREFUSED');
    // A fresh clone fails the same way and leaves no half-made repository behind.
    const freshDir = await fx.tmp('fresh');
    await expectUnavailable(fetchSource({ url: fx.url, cacheDir: freshDir }));
    expect(await readdir(freshDir)).toEqual([]);
    // The last good tree is still in place.
    expect(await readFile(path.join(cacheDir, 'cluster.yaml'), 'utf8')).toBe('name: lab\n');

    await fx.server.start();
    const c2 = await commitFiles(fx.repo, { 'cluster.yaml': 'name: after\n' });
    expect(accepted(await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: c1 })).revision).toBe(c2);

    fx.server.setUnavailable(true);
    const busy = await expectUnavailable(fetchSource({ url: fx.url, cacheDir, lastAppliedOid: c2 }));
    expect(busy.httpStatus).toBe(503);
    fx.server.setUnavailable(false);
    expect(accepted(await fetchSource({ url: fx.url, cacheDir, lastAppliedOid: c2 })).revision).toBe(c2);
  });

  it('gives up on a server that accepts connections but never answers', async () => {
    const held = new Set<net.Socket>();
    const silent = net.createServer((s) => held.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    try {
      const started = Date.now();
      const err = await expectUnavailable(
        fetchSource({ url: `http://127.0.0.1:${port}/state.git`, cacheDir: await fx.tmp('hung'), timeoutMs: 300 }),
      );
      expect(err.code).toBe('ETIMEDOUT');
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await new Promise<void>((resolve) => {
        silent.close(() => resolve());
        for (const s of held) s.destroy();
      });
    }
  });
});

describe('source: local folder', () => {
  let fx: GitFixture;
  beforeAll(async () => {
    fx = await startGitFixture();
  });
  afterAll(async () => fx?.cleanup());

  it('uses a plain folder in place with a content-hash revision', async () => {
    const dir = await fx.tmp('plain');
    await writeTree(dir, SEED);
    const a = accepted(await fetchSource({ url: dir, cacheDir: '' }));
    expect(a).toMatchObject({ kind: 'folder', dir });
    expect(a.revision).toMatch(/^sha256-[0-9a-f]{64}$/);
    expect(accepted(await fetchSource({ url: `file://${dir}`, cacheDir: '' })).revision).toBe(a.revision);

    await writeFile(path.join(dir, 'cluster.yaml'), 'name: changed\n');
    const b = accepted(await fetchSource({ url: dir, cacheDir: '' }));
    expect(b.revision).not.toBe(a.revision);

    const key = await generateKey('Folder');
    expect(await fetchSource({ url: dir, cacheDir: '', trustedKeys: [key.publicKey] })).toMatchObject({
      accepted: false,
      refusal: 'unsigned',
    });
    await expect(fetchSource({ url: path.join(dir, 'missing'), cacheDir: '' })).rejects.toThrow(/does not exist/);
  });

  it('uses a git folder with its HEAD as revision, marking uncommitted changes', async () => {
    const dir = await fx.tmp('gitfolder');
    await writeTree(dir, SEED);
    const id = ['-c', 'user.name=t', '-c', 'user.email=t@example.org'];
    await gitCli(['init', '-q', '-b', 'main', dir]);
    await gitCli(['-C', dir, 'add', '-A']);
    await gitCli(['-C', dir, ...id, 'commit', '-q', '-m', 'one']);
    const head = await gitCli(['-C', dir, 'rev-parse', 'HEAD']);

    const clean = accepted(await fetchSource({ url: dir, cacheDir: '' }));
    expect(clean).toMatchObject({ kind: 'git-folder', revision: head, dir });

    await writeFile(path.join(dir, 'cluster.yaml'), 'name: edited\n');
    const dirty = accepted(await fetchSource({ url: dir, cacheDir: '' }));
    expect(dirty.revision).toMatch(new RegExp(`^${head}-dirty-[0-9a-f]{12}$`));

    // Offline rendering of the committed state works on the folder too.
    expect(await readFileAtRevision(dir, 'HEAD', 'cluster.yaml')).toBe('name: lab\n');
    await rm(path.join(dir, 'cluster.yaml'));
    await gitCli(['-C', dir, 'checkout', '-q', '--', 'cluster.yaml']);
    expect(accepted(await fetchSource({ url: dir, cacheDir: '' })).revision).toBe(head);
  });

  it('rejects unsupported URL schemes', async () => {
    // ssh URLs are supported (test/git-ssh.test.ts); other transports are not.
    await expect(fetchSource({ url: 'git://example.org/state.git', cacheDir: await fx.tmp('x') })).rejects.toThrow(/unsupported/);
    await expect(fetchSource({ url: 'ftp://example.org/state.git', cacheDir: await fx.tmp('x') })).rejects.toThrow(/unsupported/);
  });
});
