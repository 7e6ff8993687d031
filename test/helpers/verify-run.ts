// Running `cgw-sync verify` in tests: a state repository made from state-example/ with edits
// (test/helpers/hostile-state.ts), the built CLI as a child process whose PID names the lab's
// namespaces (`cgwv<pid>-`), and what the host looks like from its root namespace (read only),
// to show that nothing of a run is left or leaked there.
import { execa, type ResultPromise } from 'execa';
import { run } from '../../src/netns/netns.js';
import { CLI_BIN } from './agent-fixture.js';
import { commitAll, editedState, type StateEdit } from './hostile-state.js';
import { gitCli } from './git-server.js';

/** A Git repository whose main is state-example with `edits`; returns its folder. */
export async function editedRepo(scratch: string, edits: StateEdit[], message = 'state-example, edited'): Promise<string> {
  const dir = await editedState(scratch, edits);
  await gitCli(['init', '-q', '-b', 'main'], dir);
  await commitAll(dir, message);
  return dir;
}

export interface VerifyRun {
  child: ResultPromise;
  pid: number;
  /** The namespace prefix this run uses. */
  prefix: string;
  result: Promise<{ code: number; out: string; err: string }>;
}

/** `cgw-sync verify ...` as a child process. */
export function startVerify(args: string[], timeoutMs = 120_000): VerifyRun {
  const child = execa(process.execPath, [CLI_BIN, 'verify', ...args], { reject: false, timeout: timeoutMs, env: {} });
  const pid = child.pid as number;
  const result = child.then((r) => ({ code: r.exitCode ?? -1, out: String(r.stdout), err: String(r.stderr) }));
  return { child, pid, prefix: `cgwv${pid}-`, result };
}

/** Namespaces whose names start with prefix. */
export async function namespacesWith(prefix: string): Promise<string[]> {
  return (await run('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(prefix));
}

/** The root namespace's links (names, state, MAC) and nftables ruleset, read only. */
export async function hostNetwork(): Promise<{ links: string; ruleset: string }> {
  const links = (await run('ip', ['-br', 'link'])).stdout;
  const ruleset = (await run('nft', ['list', 'ruleset'])).stdout;
  return { links, ruleset };
}
