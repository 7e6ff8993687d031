// Status branches against a real git smart-HTTP server; results are checked with the plain git CLI.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteUnavailable } from '../src/git/remote.js';
import { publishStatus, readStatusBranch, StatusPushRejected, type StatusBranchOptions } from '../src/git/status-branch.js';
import { commitFiles, gitCli, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { generateNodeKey, readNodePublicKey, readSigningKey, verifyCommitSignature } from '../src/git/signature.js';

const SEED = { 'cluster.yaml': 'name: lab\n' };

function report(node: string, revision: string) {
  return {
    'status.json': JSON.stringify({ node, revision, drift: [] }, null, 2) + '\n',
    'REPORT.md': `# ${node}\n\nApplied ${revision}.\n`,
  };
}

describe('status branch', () => {
  let fx: GitFixture;
  beforeAll(async () => {
    fx = await startGitFixture({ files: SEED });
  });
  afterAll(async () => fx?.cleanup());

  const opts = async (node: string, extra: Partial<StatusBranchOptions> = {}): Promise<StatusBranchOptions> => ({
    url: fx.url,
    node,
    workDir: await fx.tmp(`status-${node}`),
    ...extra,
  });

  it('creates the branch as an orphan, readable with the git CLI, and commits only on change', async () => {
    const o = await opts('node1');
    const first = await publishStatus(o, report('node1', 'aaa'), 'status: applied aaa');
    expect(first).toMatchObject({ branch: 'status/node1', committed: true, attempts: 1 });

    const clone = await fx.tmp('clone');
    await gitCli(['clone', '--quiet', '--branch', 'status/node1', fx.url, clone]);
    expect(await gitCli(['-C', clone, 'rev-parse', 'HEAD'])).toBe(first.oid);
    expect(await gitCli(['-C', clone, 'show', 'HEAD:status.json'])).toBe(report('node1', 'aaa')['status.json'].trim());
    expect(await gitCli(['-C', clone, 'log', '-1', '--format=%an <%ae>|%s'])).toBe('cgw-sync node1 <cgw-sync@node1>|status: applied aaa');
    // Orphan: no parent, and nothing of main's content.
    expect(await gitCli(['-C', clone, 'rev-list', '--count', 'HEAD'])).toBe('1');
    expect(await gitCli(['-C', clone, 'ls-tree', '--name-only', 'HEAD'])).toBe('REPORT.md\nstatus.json');

    const same = await publishStatus(o, report('node1', 'aaa'), 'status: applied aaa again');
    expect(same).toMatchObject({ committed: false, oid: first.oid });
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', 'refs/heads/status/node1'])).toBe(first.oid);

    const changed = await publishStatus(o, report('node1', 'bbb'), 'status: applied bbb');
    expect(changed.committed).toBe(true);
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', `refs/heads/status/node1`])).toBe(changed.oid);
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', `${changed.oid}^`])).toBe(first.oid);
    expect(await gitCli(['--git-dir', fx.repo, 'show', `${changed.oid}:REPORT.md`])).toBe('# node1\n\nApplied bbb.');

    // A fresh work dir (e.g. after a reinstall) finds the existing branch and sees no change.
    const again = await publishStatus({ ...o, workDir: await fx.tmp('status-node1-new') }, report('node1', 'bbb'), 'x');
    expect(again).toMatchObject({ committed: false, oid: changed.oid });
    // The source branch was not touched.
    expect(await gitCli(['--git-dir', fx.repo, 'show', 'main:cluster.yaml'])).toBe('name: lab');
  });

  it('lets two nodes push their own branches at the same time', async () => {
    const [a, b] = await Promise.all([opts('cn-a'), opts('cn-b')]);
    for (let round = 1; round <= 3; round++) {
      const [ra, rb] = await Promise.all([
        publishStatus(a, report('cn-a', `r${round}`), `round ${round}`),
        publishStatus(b, report('cn-b', `r${round}`), `round ${round}`),
      ]);
      expect(ra.committed && rb.committed).toBe(true);
      expect(await gitCli(['--git-dir', fx.repo, 'show', 'status/cn-a:REPORT.md'])).toBe(`# cn-a\n\nApplied r${round}.`);
      expect(await gitCli(['--git-dir', fx.repo, 'show', 'status/cn-b:REPORT.md'])).toBe(`# cn-b\n\nApplied r${round}.`);
    }
    expect(await gitCli(['--git-dir', fx.repo, 'rev-list', '--count', 'status/cn-a'])).toBe('3');
  });

  it('re-applies its files on top of a branch that moved remotely, then pushes', async () => {
    const o = await opts('mover');
    const first = await publishStatus(o, report('mover', 'one'), 'one');

    // Someone else pushes to the branch with the git CLI (e.g. an operator's annotation).
    const clone = await fx.tmp('operator');
    await gitCli(['clone', '--quiet', '--branch', 'status/mover', fx.url, clone]);
    await writeFile(path.join(clone, 'NOTE.md'), 'maintenance tonight\n');
    await gitCli(['-C', clone, 'add', 'NOTE.md']);
    await gitCli(['-C', clone, '-c', 'user.name=op', '-c', 'user.email=op@example.org', 'commit', '-q', '-m', 'note']);
    await gitCli(['-C', clone, 'push', '-q', 'origin', 'status/mover']);
    const foreign = await gitCli(['-C', clone, 'rev-parse', 'HEAD']);

    // Our tracking ref still says `first`: the push is rejected, we fetch and retry.
    const second = await publishStatus(o, report('mover', 'two'), 'two');
    expect(second).toMatchObject({ committed: true, attempts: 2 });
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', 'status/mover'])).toBe(second.oid);
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', `${second.oid}^`])).toBe(foreign);
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', `${foreign}^`])).toBe(first.oid);
    // The branch holds exactly our files again.
    expect(await gitCli(['--git-dir', fx.repo, 'ls-tree', '--name-only', 'status/mover'])).toBe('REPORT.md\nstatus.json');
  });

  it('two writers racing on the same branch both get their commit in (one retries)', async () => {
    // Not a normal setup (a branch has one owner), but it is the hardest case for the retry loop:
    // whichever push loses is refused by isomorphic-git's fast-forward check or by the server.
    const [a, b] = await Promise.all([opts('shared'), opts('shared')]);
    await publishStatus(a, { 'status.json': '"start"\n' }, 'start');
    await publishStatus(b, { 'status.json': '"start"\n' }, 'start');
    const [ra, rb] = await Promise.all([
      publishStatus(a, { 'status.json': '"a"\n' }, 'a'),
      publishStatus(b, { 'status.json': '"b"\n' }, 'b'),
    ]);
    expect(ra.committed && rb.committed).toBe(true);
    expect(ra.attempts + rb.attempts).toBeGreaterThanOrEqual(3);
    const history = (await gitCli(['--git-dir', fx.repo, 'rev-list', 'status/shared'])).split('\n');
    expect(history).toEqual(expect.arrayContaining([ra.oid, rb.oid]));
    expect(history[0]).toBe(ra.attempts > rb.attempts ? ra.oid : rb.oid);
  });

  it('gives up with StatusPushRejected after maxAttempts', async () => {
    const o = await opts('racer', { maxAttempts: 1 });
    await publishStatus(o, report('racer', 'one'), 'one');
    const tip = await gitCli(['--git-dir', fx.repo, 'rev-parse', 'status/racer']);
    await commitFiles(fx.repo, { 'x.md': 'x\n' }, { branch: 'status/racer', parent: tip });
    await expect(publishStatus(o, report('racer', 'two'), 'two')).rejects.toThrow(StatusPushRejected);
    await expect(publishStatus(o, report('racer', 'two'), 'two')).rejects.toThrow(/rejected on each of 1 attempts \(last: refused by the server: /);
    // With a retry allowed it goes through.
    expect(await publishStatus({ ...o, maxAttempts: 2 }, report('racer', 'two'), 'two')).toMatchObject({ committed: true, attempts: 2 });
  });

  it("reads another node's status branch at its tip", async () => {
    const pub = await publishStatus(await opts('reader-a'), report('reader-a', 'rev9'), 'rev9');
    const seen = await readStatusBranch(fx.url, 'reader-a', { workDir: await fx.tmp('status-reader-b') });
    expect(seen).toEqual({ branch: 'status/reader-a', oid: pub.oid, files: report('reader-a', 'rev9'), signed: { gpgsig: undefined, payload: expect.stringMatching(/^tree [0-9a-f]{40}\n/) } });
    // Without a work dir (temp store) and for a node that never reported.
    expect((await readStatusBranch(fx.url, 'reader-a'))?.oid).toBe(pub.oid);
    expect(await readStatusBranch(fx.url, 'never-reported')).toBeNull();
  });

  it('signs with the node key: the reader gets a signature that verifies against that key only; `always` commits the same files again', async () => {
    const [own, other] = await Promise.all([generateNodeKey('signer'), generateNodeKey('other')]);
    const o = await opts('signer', { signingKey: await readSigningKey(own.privateKey) });
    const first = await publishStatus(o, report('signer', 's1'), 's1');
    expect(await gitCli(['--git-dir', fx.repo, 'cat-file', '-p', first.oid])).toMatch(/^gpgsig -----BEGIN PGP SIGNATURE-----$/m);
    const seen = await readStatusBranch(fx.url, 'signer');
    const verify = async (armored: string) => verifyCommitSignature(seen?.signed.gpgsig, seen?.signed.payload as string, [await readNodePublicKey(armored)]);
    expect(await verify(own.publicKey)).toEqual({ ok: true, fingerprint: own.fingerprint });
    expect(await verify(other.publicKey)).toMatchObject({ ok: false, refusal: 'untrusted-key' });
    // The same files: nothing, unless asked to put them on top again.
    expect(await publishStatus(o, report('signer', 's1'), 's1 again')).toMatchObject({ committed: false, oid: first.oid });
    const again = await publishStatus(o, report('signer', 's1'), 'restored', { always: true });
    expect(again.committed).toBe(true);
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', `${again.oid}^`])).toBe(first.oid);
  });

  it('supports nested paths and a custom branch name', async () => {
    const o = await opts('nest', { branch: 'reports/nest' });
    const files = { 'status.json': '{}\n', 'guests/web/console.log': 'boot ok\n' };
    const r = await publishStatus(o, files, 'nested');
    expect(r.branch).toBe('reports/nest');
    expect(await gitCli(['--git-dir', fx.repo, 'show', 'reports/nest:guests/web/console.log'])).toBe('boot ok');
    expect((await readStatusBranch(fx.url, 'nest', { branch: 'reports/nest' }))?.files).toEqual(files);
    await expect(publishStatus(o, { '../escape': 'x' }, 'bad')).rejects.toThrow(/invalid repository path/);
  });
});

describe('status branch: outages and credentials', () => {
  const TOKEN = `status-token-${process.pid}-zz9`;
  let fx: GitFixture;
  beforeAll(async () => {
    fx = await startGitFixture({ files: SEED, token: TOKEN });
  });
  afterAll(async () => fx?.cleanup());

  it('needs the token, reports RemoteUnavailable while the server is down, and recovers', async () => {
    const tokenFile = path.join(await fx.tmp('secret'), 'token');
    await writeFile(tokenFile, TOKEN);
    const o: StatusBranchOptions = { url: fx.url, node: 'n1', workDir: await fx.tmp('status'), credentials: { tokenFile } };

    const noToken = await publishStatus({ ...o, credentials: undefined }, report('n1', 'a'), 'a').catch((e: unknown) => e);
    expect(noToken).toBeInstanceOf(RemoteUnavailable);
    expect((noToken as RemoteUnavailable).httpStatus).toBe(401);

    const first = await publishStatus(o, report('n1', 'a'), 'a');
    expect(first.committed).toBe(true);

    await fx.server.stop();
    const down = await publishStatus(o, report('n1', 'b'), 'b').catch((e: unknown) => e);
    expect(down).toBeInstanceOf(RemoteUnavailable);
    expect((down as RemoteUnavailable).code).toBe('ECONNREFUSED');
    expect(String((down as Error).stack)).not.toContain(TOKEN);
    const downRead = await readStatusBranch(fx.url, 'n1', { credentials: { tokenFile } }).catch((e: unknown) => e);
    expect(downRead).toBeInstanceOf(RemoteUnavailable);

    await fx.server.start();
    const second = await publishStatus(o, report('n1', 'b'), 'b');
    expect(second).toMatchObject({ committed: true, attempts: 1 });
    expect((await readStatusBranch(fx.url, 'n1', { credentials: { tokenFile } }))?.files['REPORT.md']).toBe('# n1\n\nApplied b.\n');
  });
});
