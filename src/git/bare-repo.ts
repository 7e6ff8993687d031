// Bare repositories for the smart-HTTP server (tests and lab), built with the plain `git` CLI.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from '../netns/netns.js';

export interface CommitIdentity {
  name: string;
  email: string;
}

const DEFAULT_IDENTITY: CommitIdentity = { name: 'cgw-sync lab', email: 'lab@cgw-sync.invalid' };

/** Environment for CLI commits: a fixed identity, and no user/system config (no surprise signing). */
function gitEnv(id: CommitIdentity, extra: Record<string, string> = {}): Record<string, string> {
  return {
    GIT_AUTHOR_NAME: id.name,
    GIT_AUTHOR_EMAIL: id.email,
    GIT_COMMITTER_NAME: id.name,
    GIT_COMMITTER_EMAIL: id.email,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    ...extra,
  };
}

/**
 * Create `<projectRoot>/<name>` as a bare repository that accepts pushes over HTTP
 * (`http.receivepack true`), with HEAD on `branch`. With `seedDir`, the directory's files become
 * the first commit. Returns the repository path.
 */
export async function createBareRepo(
  projectRoot: string,
  name: string,
  opts: { branch?: string; seedDir?: string; message?: string; identity?: CommitIdentity } = {},
): Promise<string> {
  const branch = opts.branch ?? 'main';
  const repo = path.join(projectRoot, name);
  await run('git', ['init', '--quiet', '--bare', `--initial-branch=${branch}`, repo], { env: gitEnv(DEFAULT_IDENTITY) });
  await run('git', ['-C', repo, 'config', 'http.receivepack', 'true']);
  if (opts.seedDir) {
    await commitDirectory(repo, opts.seedDir, { branch, message: opts.message ?? 'seed', identity: opts.identity });
  }
  return repo;
}

/**
 * Commit the exact content of `dir` to `branch` of the bare repository `repo` (on top of the
 * branch's current tip, or as its first commit). The directory is only read. Returns the new oid.
 */
export async function commitDirectory(
  repo: string,
  dir: string,
  opts: { branch?: string; message: string; identity?: CommitIdentity },
): Promise<string> {
  const branch = opts.branch ?? 'main';
  const ref = `refs/heads/${branch}`;
  // A throw-away index keeps the bare repository free of work-tree state.
  const tmp = await mkdtemp(path.join(tmpdir(), 'cgw-index-'));
  try {
    const env = gitEnv(opts.identity ?? DEFAULT_IDENTITY, { GIT_INDEX_FILE: path.join(tmp, 'index') });
    const git = (args: string[]) => run('git', ['--git-dir', repo, '--work-tree', dir, ...args], { env });
    await git(['add', '--all', '.']);
    const tree = (await git(['write-tree'])).stdout.trim();
    const parent = await git(['rev-parse', '--verify', '--quiet', ref]).then(
      (r) => r.stdout.trim(),
      () => undefined,
    );
    const parentArgs = parent ? ['-p', parent] : [];
    const oid = (await git(['commit-tree', '--no-gpg-sign', tree, ...parentArgs, '-m', opts.message])).stdout.trim();
    await git(['update-ref', ref, oid]);
    return oid;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
