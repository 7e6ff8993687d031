// Canaries for the "nothing leaks" tests: unique secret strings planted in the agent's
// environment and files, and the means to look for them everywhere the agent writes: every
// object of the bare repository (through the plain git CLI), the agent's output, its reports.
import { randomBytes } from 'node:crypto';
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { expect } from 'vitest';
import type { FileMap } from '../../src/git/tree.js';
import { writeTree } from './git-server.js';
import { CLI_BIN } from './agent-fixture.js';

export interface Canaries {
  /** The Git server's token: in the agent's environment (tokenEnv) and in its token file. */
  token: string;
  /** A variable of the agent's environment whose name does not look secret. */
  plainEnv: string;
  /** The content of a file outside the state. */
  file: string;
}

export function makeCanaries(): Canaries {
  const id = () => randomBytes(8).toString('hex');
  return { token: `canarytoken${id()}`, plainEnv: `canaryenv${id()}`, file: `canaryfile${id()}` };
}

export const canaryValues = (c: Canaries): string[] => [c.token, c.plainEnv, c.file];

/** Assert that none of `secrets` occurs in any of `texts` (named, so a failure says where). */
export function expectNoCanary(texts: Record<string, string>, secrets: string[]): void {
  for (const [where, text] of Object.entries(texts)) {
    for (const s of secrets) expect(text.includes(s), `${where} contains a canary`).toBe(false);
  }
}

const git = (repo: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}) =>
  execa('git', ['--git-dir', repo, ...args], {
    input: opts.input,
    env: { GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', GIT_TERMINAL_PROMPT: '0', ...opts.env },
    encoding: 'buffer',
    maxBuffer: 1024 ** 3,
  });

/** Every object id in the repository (loose and packed, reachable or not). */
export async function objectIds(repo: string): Promise<Set<string>> {
  const r = await git(repo, ['cat-file', '--batch-all-objects', '--batch-check=%(objectname)']);
  return new Set(Buffer.from(r.stdout).toString('utf8').split('\n').filter(Boolean));
}

/** The raw content of every object of the repository but `except`, as one text. */
export async function objectsText(repo: string, except: Set<string> = new Set()): Promise<{ count: number; text: string }> {
  const ids = [...(await objectIds(repo))].filter((id) => !except.has(id));
  if (!ids.length) return { count: 0, text: '' };
  const r = await git(repo, ['cat-file', '--batch'], { input: `${ids.join('\n')}\n` });
  return { count: ids.length, text: Buffer.from(r.stdout).toString('latin1') };
}

/**
 * Commit a complete tree on `branch` with the git CLI, symlinks included (`links`: path in the
 * repository -> link target), on top of the branch tip.
 */
export async function commitWithLinks(repo: string, files: FileMap, links: Record<string, string>, message = 'hostile change', branch = 'main'): Promise<string> {
  const work = await mkdtemp(path.join(tmpdir(), 'cgw-canary-tree-'));
  try {
    await writeTree(work, files);
    for (const [p, target] of Object.entries(links)) {
      await mkdir(path.dirname(path.join(work, p)), { recursive: true });
      await symlink(target, path.join(work, p));
    }
    const env = { GIT_INDEX_FILE: path.join(work, '.index'), GIT_WORK_TREE: work, GIT_AUTHOR_NAME: 'Attacker', GIT_AUTHOR_EMAIL: 'a@example.org', GIT_COMMITTER_NAME: 'Attacker', GIT_COMMITTER_EMAIL: 'a@example.org' };
    await git(repo, ['add', '-A', '--', '.', ':!.index'], { env });
    const tree = Buffer.from((await git(repo, ['write-tree'], { env })).stdout).toString().trim();
    const parent = Buffer.from((await git(repo, ['rev-parse', `refs/heads/${branch}`])).stdout).toString().trim();
    const commit = Buffer.from((await git(repo, ['commit-tree', tree, '-p', parent, '-m', message], { env })).stdout).toString().trim();
    await git(repo, ['update-ref', `refs/heads/${branch}`, commit]);
    return commit;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export interface CliRun {
  exitCode: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * `cgw-sync <args>` as a real process from dist/ with `env` added to ours, `env` first: whatever
 * shows the start of the environment (/proc/self/environ) shows the canaries. `asUser`: run it
 * as that user (setpriv), not as root.
 */
export async function runCli(args: string[], env: Record<string, string>, opts: { asUser?: { uid: number; gid: number } } = {}): Promise<CliRun> {
  const t0 = Date.now();
  const [cmd, pre] = opts.asUser ? ['setpriv', [`--reuid=${opts.asUser.uid}`, `--regid=${opts.asUser.gid}`, '--clear-groups', process.execPath]] : [process.execPath, []];
  const r = await execa(cmd, [...pre, CLI_BIN, ...args], { env: { ...env, ...process.env, ...env }, extendEnv: false, reject: false, timeout: 30_000, encoding: 'utf8' });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), ms: Date.now() - t0 };
}

/** A hooks folder whose pre-apply and post-apply hooks print their whole environment. */
export async function envPrintingHooks(dir: string): Promise<string> {
  const hooks = path.join(dir, 'hooks');
  await mkdir(hooks, { recursive: true, mode: 0o755 });
  const script = '#!/bin/sh\necho "phase=$CGW_PHASE"\nenv\ntr "\\0" "\\n" < /proc/self/environ\n';
  for (const phase of ['pre-apply', 'post-apply']) await writeFile(path.join(hooks, phase), script, { mode: 0o755 });
  return hooks;
}

/**
 * The lines of a Markdown text outside fenced code blocks (where Markdown and HTML are live),
 * following CommonMark's rule that a fence closes only with at least as many backticks.
 */
export function liveMarkdownLines(md: string): string[] {
  const live: string[] = [];
  let fence = 0;
  for (const line of md.split('\n')) {
    const run = /^(`{3,})/.exec(line)?.[1].length ?? 0;
    if (fence === 0 && run) fence = run;
    else if (fence && run >= fence && /^`+\s*$/.test(line)) fence = 0;
    else if (fence === 0) live.push(line);
  }
  expect(fence, 'every fenced block is closed').toBe(0);
  return live;
}

/** A code span's content is inert; what is left of a line without its code spans is live. */
export function withoutCodeSpans(line: string): string {
  return line.replace(/(`+)(?:(?!\1)[\s\S])*?\1/g, '');
}
