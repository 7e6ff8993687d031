// The agents' status branches, read straight from the lab's bare repository with the git CLI
// (the lab owns the repository on disk, so no HTTP round trip is needed).
import { statusBranchName } from '../git/status-branch.js';
import { run, runUnchecked } from '../netns/netns.js';
import type { NodeStatus } from '../agent/report.js';

export interface StatusCommit {
  oid: string;
  /** The commit's subject line (agent/report.ts commitMessage). */
  subject: string;
  status: NodeStatus;
}

const git = (repo: string, args: string[]) => run('git', ['--git-dir', repo, ...args]);

/** The node's latest report, or undefined while it has never reported. */
export async function readNodeStatus(repo: string, node: string): Promise<NodeStatus | undefined> {
  const r = await runUnchecked('git', ['--git-dir', repo, 'show', `refs/heads/${statusBranchName(node)}:status.json`]);
  return r.exitCode === 0 ? (JSON.parse(r.stdout) as NodeStatus) : undefined;
}

/** Every report the node committed, oldest first. */
export async function statusHistory(repo: string, node: string): Promise<StatusCommit[]> {
  const ref = `refs/heads/${statusBranchName(node)}`;
  const tip = await runUnchecked('git', ['--git-dir', repo, 'rev-parse', '--verify', '--quiet', ref]);
  if (tip.exitCode !== 0) return [];
  const log = (await git(repo, ['log', '--reverse', '--format=%H %s', ref])).stdout.trim().split('\n');
  const out: StatusCommit[] = [];
  for (const line of log) {
    const [oid, ...subject] = line.split(' ');
    const text = (await git(repo, ['show', `${oid}:status.json`])).stdout;
    out.push({ oid, subject: subject.join(' '), status: JSON.parse(text) as NodeStatus });
  }
  return out;
}

/** The tip of a branch of the repository. */
export async function branchTip(repo: string, branch = 'main'): Promise<string> {
  return (await git(repo, ['rev-parse', '--verify', `refs/heads/${branch}^{commit}`])).stdout.trim();
}

/**
 * Whether a node's report says it enforces `revision` and runs exactly the guests the state
 * places on it (`guests`, by name).
 */
export function nodeSettled(s: NodeStatus | undefined, revision: string, guests: string[]): boolean {
  if (!s || s.appliedRevision !== revision || s.outcome === 'error') return false;
  const running = s.guests.filter((r) => r.state === 'running').map((r) => r.name);
  return guests.every((g) => running.includes(g)) && running.every((g) => guests.includes(g));
}
