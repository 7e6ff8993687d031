// Small, explicit wrappers around `ip netns` and `ip link`. Used by the lab, the netns guest
// driver and the tests. Every function acts inside a named namespace that the caller created;
// nothing here touches the root namespace's links, routes or ruleset.
import { execa, type Options } from 'execa';

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/**
 * Run a command and return its output and exit code, whatever the exit code (probes read the
 * output of commands that fail, e.g. arping without answers). A command killed by a timeout has
 * exitCode -1.
 */
export async function runUnchecked(cmd: string, args: string[], opts: Options = {}): Promise<RunResult> {
  const r = await execa(cmd, args, { reject: false, ...opts, encoding: 'utf8' });
  return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? -1 };
}

/** Run a command and return its output; throws with stderr in the message when it fails. */
export async function run(cmd: string, args: string[], opts: Options = {}): Promise<RunResult> {
  const out = await runUnchecked(cmd, args, opts);
  if (out.exitCode !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${out.exitCode}): ${out.stderr.trim() || out.stdout.trim()}`);
  }
  return out;
}

/** Arguments that run `cmd args...` inside namespace `ns`. */
export function inNs(ns: string, cmd: string, args: string[]): [string, string[]] {
  return ['ip', ['netns', 'exec', ns, cmd, ...args]];
}

export async function runIn(ns: string, cmd: string, args: string[], opts: Options = {}): Promise<RunResult> {
  const [c, a] = inNs(ns, cmd, args);
  return run(c, a, opts);
}

export async function runInUnchecked(ns: string, cmd: string, args: string[], opts: Options = {}): Promise<RunResult> {
  const [c, a] = inNs(ns, cmd, args);
  return runUnchecked(c, a, opts);
}

/** PIDs of the processes whose network namespace is ns. */
export async function namespacePids(ns: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', ns]);
  return r.stdout
    .split('\n')
    .map((l) => Number.parseInt(l.trim(), 10))
    .filter((n) => Number.isInteger(n));
}

export async function listNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n);
}

export async function createNamespace(ns: string): Promise<void> {
  await run('ip', ['netns', 'add', ns]);
  await runIn(ns, 'ip', ['link', 'set', 'lo', 'up']);
}

/** Delete a namespace if it exists. Processes still inside it keep it alive; callers stop theirs first. */
export async function deleteNamespace(ns: string): Promise<void> {
  if (!(await listNamespaces()).includes(ns)) return;
  await run('ip', ['netns', 'del', ns]);
}

/** Create a veth pair with one end in each namespace (both may be the same namespace). */
export async function addVeth(a: { ns: string; name: string }, b: { ns: string; name: string }): Promise<void> {
  // Created inside namespace a so no interface ever appears in the root namespace.
  await runIn(a.ns, 'ip', ['link', 'add', a.name, 'type', 'veth', 'peer', 'name', b.name, 'netns', b.ns]);
}

export async function addBridge(ns: string, name: string): Promise<void> {
  await runIn(ns, 'ip', ['link', 'add', name, 'type', 'bridge']);
  await runIn(ns, 'ip', ['link', 'set', name, 'up']);
}

export async function setMaster(ns: string, dev: string, bridge: string): Promise<void> {
  await runIn(ns, 'ip', ['link', 'set', dev, 'master', bridge]);
}

export async function linkUp(ns: string, dev: string): Promise<void> {
  await runIn(ns, 'ip', ['link', 'set', dev, 'up']);
}

export async function addAddress(ns: string, dev: string, cidr: string): Promise<void> {
  await runIn(ns, 'ip', ['addr', 'add', cidr, 'dev', dev]);
}

export async function sysctl(ns: string, key: string, value: string): Promise<void> {
  await runIn(ns, 'sysctl', ['-q', '-w', `${key}=${value}`]);
}
