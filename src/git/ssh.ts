// Git over SSH through the system `git` (isomorphic-git speaks only HTTP). Only the transport
// moves here: objects land in the same local repositories (source cache, status repository) that
// isomorphic-git then reads, so signature, ancestry and checkout stay one code path.
//
// ssh is locked down from the agent config alone, never from the state: one identity file, one
// known_hosts file, host keys always checked, never a prompt, no agent, no forwarding, no user or
// system ssh/git configuration, and git runs with a minimal environment (no SSH_AUTH_SOCK).
import { execa } from 'execa';
import { RemoteUnavailable } from './remote.js';

export interface SshOptions {
  /** Private key (deploy key) file. */
  identityFile: string;
  /** known_hosts file holding the server's host key. */
  knownHostsFile: string;
}

/** `ssh://[user@]host[:port]/path` or scp-like `user@host:path`. */
export function isSshUrl(url: string): boolean {
  return /^ssh:\/\//i.test(url) || /^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!\/\/)/.test(url);
}

/** A URL the agent fetches from a server (as opposed to a local folder). */
export function isRemoteUrl(url: string): boolean {
  return /^https?:\/\//i.test(url) || isSshUrl(url);
}

/** One word for /bin/sh (GIT_SSH_COMMAND is run by a shell). */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The ssh command line git uses: only the configured key and host keys, never interactive. */
export function sshCommand(ssh: SshOptions, timeoutSeconds: number): string {
  const opts = [
    '-F /dev/null',
    `-i ${shellQuote(ssh.identityFile)}`,
    '-o IdentitiesOnly=yes',
    '-o IdentityAgent=none',
    `-o UserKnownHostsFile=${shellQuote(ssh.knownHostsFile)}`,
    '-o GlobalKnownHostsFile=/dev/null',
    '-o StrictHostKeyChecking=yes',
    '-o BatchMode=yes',
    '-o ForwardAgent=no',
    '-o ForwardX11=no',
    '-o ClearAllForwardings=yes',
    '-o PermitLocalCommand=no',
    '-o UpdateHostKeys=no',
    `-o ConnectTimeout=${Math.max(1, Math.round(timeoutSeconds))}`,
    '-o ServerAliveInterval=10',
    '-o ServerAliveCountMax=3',
  ];
  return `ssh ${opts.join(' ')}`;
}

/** Environment of a git process: nothing inherited but PATH. */
function gitEnv(ssh: SshOptions, timeoutSeconds: number): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C',
    GIT_SSH_COMMAND: sshCommand(ssh, timeoutSeconds),
    GIT_SSH_VARIANT: 'ssh',
    GIT_TERMINAL_PROMPT: '0',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_ALLOW_PROTOCOL: 'ssh',
  };
}

export interface SshGit {
  url: string;
  ssh: SshOptions;
  /** Bound for the whole git process (connect, transfer), in seconds. */
  timeoutSeconds: number;
}

export interface GitRun {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Run `git -C dir args...` talking to the remote over ssh. */
export async function sshGit(remote: SshGit, dir: string, args: string[]): Promise<GitRun> {
  const r = await execa('git', ['-C', dir, ...args], {
    reject: false,
    extendEnv: false,
    env: gitEnv(remote.ssh, remote.timeoutSeconds),
    // Transfers of a state repository are small; a stuck one must not hold the cycle.
    timeout: remote.timeoutSeconds * 4 * 1000,
    stdin: 'ignore',
    encoding: 'utf8',
  });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
}

/** The git/ssh error lines worth showing (ssh's "Permission denied", "Host key verification failed", ...). */
export function sshFailure(what: string, remote: SshGit, r: GitRun): RemoteUnavailable {
  const why = r.stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^(fatal: Could not read from remote repository\.|Please make sure you have the correct access rights|and the repository exists\.)$/.test(l))
    .slice(-3)
    .join('; ');
  return new RemoteUnavailable(`${what} ${remote.url}: ${why || `git exited with ${r.exitCode}`}`, undefined, r.exitCode === -1 ? 'ETIMEDOUT' : 'SshError');
}

/** `git init` when `dir` holds no repository yet. */
export async function ensureSshRepo(remote: SshGit, dir: string): Promise<void> {
  const r = await sshGit(remote, dir, ['rev-parse', '--git-dir']);
  if (r.exitCode === 0) return;
  const init = await sshGit(remote, dir, ['init', '--quiet']);
  if (init.exitCode !== 0) throw new Error(`git init ${dir}: ${init.stderr.trim()}`);
}

/** The tip of `branch` on the server, or undefined when the branch does not exist. */
export async function sshRemoteTip(remote: SshGit, dir: string, branch: string): Promise<string | undefined> {
  const r = await sshGit(remote, dir, ['ls-remote', '--heads', remote.url, `refs/heads/${branch}`]);
  if (r.exitCode !== 0) throw sshFailure(`reading ${branch} from`, remote, r);
  return r.stdout.split('\n').find((l) => l.endsWith(`\trefs/heads/${branch}`))?.split('\t')[0];
}

/** Fetch `branch` into refs/remotes/origin/<branch>. */
export async function sshFetchBranch(remote: SshGit, dir: string, branch: string): Promise<void> {
  const r = await sshGit(remote, dir, ['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', remote.url, `+refs/heads/${branch}:refs/remotes/origin/${branch}`]);
  if (r.exitCode !== 0) throw sshFailure(`fetching branch ${branch} of`, remote, r);
}

/** Push the local branch to the same name; "rejected" when the server's branch moved. */
export async function sshPushBranch(remote: SshGit, dir: string, branch: string): Promise<'pushed' | { rejected: string }> {
  const r = await sshGit(remote, dir, ['push', '--quiet', '--porcelain', remote.url, `refs/heads/${branch}:refs/heads/${branch}`]);
  if (r.exitCode === 0) return 'pushed';
  // --porcelain: "!<TAB>from:to<TAB>[rejected] (fetch first)" for a ref the server refused.
  const refused = r.stdout.split('\n').find((l) => l.startsWith('!'));
  if (refused) return { rejected: refused.split('\t').slice(2).join(' ').trim() };
  throw sshFailure(`pushing ${branch} to`, remote, r);
}
