// The system git as the benchmark runs it: a fixed identity and no user or system configuration,
// so the floors it measures do not depend on the machine's git settings.
import { run, type RunResult } from '../netns/netns.js';

const IDENTITY = ['-c', 'user.name=cgw-sync bench', '-c', 'user.email=bench@cgw-sync.invalid'];

/** `git args...` in `cwd` (or anywhere, for a clone). */
export function benchGit(args: string[], cwd?: string): Promise<RunResult> {
  return run('git', [...IDENTITY, ...args], { ...(cwd && { cwd }), env: { GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' } });
}

/** Commit everything in the clone `cwd` (no signature): the new commit's oid. */
export async function benchCommit(cwd: string, message: string): Promise<string> {
  await benchGit(['add', '--all'], cwd);
  await benchGit(['commit', '--quiet', '--no-gpg-sign', '-m', message], cwd);
  return (await benchGit(['rev-parse', 'HEAD'], cwd)).stdout.trim();
}
