// Test fixture: a temp directory holding a bare state repository served by the real smart-HTTP
// server (src/git/http-server.ts), plus helpers to add commits (optionally OpenPGP-signed) and to
// rewrite a branch on the server side, the way a force-push would.
import fs from 'node:fs';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import git from 'isomorphic-git';
import * as openpgp from 'openpgp';
import { createBareRepo } from '../../src/git/bare-repo.js';
import { startGitHttpServer, type GitHttpServer } from '../../src/git/http-server.js';
import { writeFilesTree, type FileMap } from '../../src/git/tree.js';
import { signPayload } from '../../src/git/signature.js';
import { run } from '../../src/netns/netns.js';

export interface GitFixture {
  /** Temp directory for everything this fixture and its test create. */
  root: string;
  server: GitHttpServer;
  /** Bare repository path on disk. */
  repo: string;
  /** http URL of the repository. */
  url: string;
  /** A fresh directory under root. */
  tmp(prefix: string): Promise<string>;
  cleanup(): Promise<void>;
}

/** Start a server with one bare repository "state.git" seeded (through the git CLI) with `files`. */
export async function startGitFixture(opts: { files?: FileMap; token?: string } = {}): Promise<GitFixture> {
  const root = await mkdtemp(path.join(tmpdir(), 'cgw-git-'));
  const projectRoot = path.join(root, 'srv');
  await mkdir(projectRoot);
  let seedDir: string | undefined;
  if (opts.files) {
    seedDir = path.join(root, 'seed');
    await writeTree(seedDir, opts.files);
  }
  const repo = await createBareRepo(projectRoot, 'state.git', { seedDir, message: 'seed' });
  const server = await startGitHttpServer({ projectRoot, token: opts.token });
  let n = 0;
  return {
    root,
    server,
    repo,
    url: server.repoUrl('state.git'),
    tmp: async (prefix) => {
      const d = path.join(root, `${prefix}-${++n}`);
      await mkdir(d, { recursive: true });
      return d;
    },
    cleanup: async () => {
      await server.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

export async function writeTree(dir: string, files: FileMap): Promise<void> {
  for (const [p, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await writeFile(path.join(dir, p), content);
  }
}

/**
 * Commit `files` (the complete new tree) directly in the bare repository on `branch`.
 * parent: the branch tip by default, `null` for an unrelated (orphan) commit.
 * sign: an armored private key to sign with; `tamper` signs different bytes (an invalid signature).
 */
export async function commitFiles(
  repo: string,
  files: FileMap,
  opts: { message?: string; branch?: string; parent?: string | null; sign?: string; tamper?: boolean } = {},
): Promise<string> {
  const branch = opts.branch ?? 'main';
  const tree = await writeFilesTree({ gitdir: repo }, files);
  const parent =
    opts.parent === null ? [] : [opts.parent ?? (await git.resolveRef({ fs, gitdir: repo, ref: `refs/heads/${branch}` }))];
  return git.commit({
    fs,
    gitdir: repo,
    ref: `refs/heads/${branch}`,
    message: opts.message ?? 'change',
    author: { name: 'Test Author', email: 'author@example.org' },
    tree,
    parent,
    signingKey: opts.sign,
    onSign: opts.sign ? signer(opts.tamper ?? false) : undefined,
  });
}

function signer(tamper: boolean) {
  return async ({ payload, secretKey }: { payload: string; secretKey: string }) => {
    const key = await openpgp.readPrivateKey({ armoredKey: secretKey });
    return { signature: await signPayload(key, tamper ? `${payload}tampered` : payload) };
  };
}

/** Move a branch on the server to `oid`, as a force-push would. */
export async function resetBranch(repo: string, oid: string, branch = 'main'): Promise<void> {
  await run('git', ['--git-dir', repo, 'update-ref', `refs/heads/${branch}`, oid]);
}

export async function generateKey(name: string): Promise<{ privateKey: string; publicKey: string; fingerprint: string }> {
  const { privateKey, publicKey } = await openpgp.generateKey({
    userIDs: [{ name, email: `${name.toLowerCase().replace(/\W+/g, '.')}@example.org` }],
    format: 'armored',
  });
  const fingerprint = (await openpgp.readKey({ armoredKey: publicKey })).getFingerprint();
  return { privateKey, publicKey, fingerprint };
}

/** Run the git CLI with no user/system configuration. */
export async function gitCli(args: string[], cwd?: string): Promise<string> {
  const r = await run('git', args, { cwd, env: { GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', GIT_TERMINAL_PROMPT: '0' } });
  return r.stdout.trim();
}
