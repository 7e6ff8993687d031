// Shared by the adversarial groups in test/security/: hostile copies of state-example/, the built
// CLI run inside a test namespace, and a namespace holding other people's tables that must stay
// byte-identical whatever cgw-sync is fed; for the "state files" group, a sandbox whose secrets
// carry a canary that must never come out of the CLI.
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT } from './agent-fixture.js';
import { cliBin, type CliResult as BinResult } from './cli.js';
import { gitCli } from './git-server.js';
import { nftNamespace, type NftNamespace } from './nft-netns.js';

export const EXAMPLE_DIR = join(PROJECT_ROOT, 'state-example');

/** One textual edit of a state file: `from` must occur exactly once, so an edit never silently misses. */
export type StateEdit = [file: string, from: string, to: string];

/** Scratch folder for hostile state copies; remove() deletes it and everything in it. */
export async function scratchDir(tag: string): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `cgw-${tag}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

let copies = 0;

/** A copy of state-example/ under `scratch` with the edits applied; returns its folder. */
export async function editedState(scratch: string, edits: StateEdit[]): Promise<string> {
  const dir = join(scratch, `state-${copies++}`);
  await cp(EXAMPLE_DIR, dir, { recursive: true });
  for (const [file, from, to] of edits) {
    const path = join(dir, file);
    const text = await readFile(path, 'utf8');
    const count = text.split(from).length - 1;
    if (count !== 1) throw new Error(`test setup: ${file} contains ${JSON.stringify(from)} ${count} times, not once`);
    await writeFile(path, text.replace(from, to));
  }
  return dir;
}

export interface CliResult extends BinResult {
  /** Wall time of the run. */
  ms: number;
}

/** The built CLI, inside `ns` when given, with `env` added to its environment. */
export async function cli(args: string[], ns?: string, env: Record<string, string> = {}): Promise<CliResult> {
  const started = performance.now();
  const r = await cliBin(args, { ...(ns && { ns }), env, timeoutMs: 20_000 });
  return { ...r, ms: performance.now() - started };
}

/**
 * Tables someone else made, named like the ones a hostile state reaches for: `ip nat` with a
 * masquerade chain, `ip raw`, `ip filter` (with a comment and a set), `inet filter`.
 */
export const FOREIGN_RULESET = `
table ip nat {
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; oifname "eth0" masquerade; }
}
table ip raw {
  chain prerouting { type filter hook prerouting priority raw; policy accept; udp dport 53 notrack; }
}
table ip filter {
  set blocked { type ipv4_addr; elements = { 192.0.2.1 }; }
  chain input { type filter hook input priority filter; policy accept; ip saddr @blocked drop comment "keep me"; }
}
table inet filter {
  chain forward { type filter hook forward priority filter; policy accept; }
}
`;

/** The tables of FOREIGN_RULESET, as "family name". */
export const FOREIGN_TABLES = ['ip nat', 'ip raw', 'ip filter', 'inet filter'];

export interface ForeignNamespace extends NftNamespace {
  /** `nft list ruleset` now. */
  ruleset(): Promise<string>;
  /** `nft list table` of each of FOREIGN_TABLES now. */
  foreign(): Promise<string[]>;
}

/** A namespace already holding FOREIGN_RULESET. */
export async function foreignNamespace(tag: string): Promise<ForeignNamespace> {
  const env = await nftNamespace(tag);
  const file = join(await mkdtemp(join(tmpdir(), `cgw-${tag}-`)), 'foreign.nft');
  try {
    await writeFile(file, FOREIGN_RULESET);
    await env.raw(['-f', file]);
  } catch (e) {
    await env.destroy();
    throw e;
  } finally {
    await rm(join(file, '..'), { recursive: true, force: true });
  }
  return {
    ...env,
    ruleset: () => env.raw(['list', 'ruleset']),
    foreign: () => Promise.all(FOREIGN_TABLES.map((t) => env.raw(['list', 'table', ...t.split(' ')]))),
  };
}

/** Run `fn` a few at a time (the machine has two cores and is shared). */
export async function inBatches<T, R>(items: T[], size: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size) out.push(...(await Promise.all(items.slice(i, i + size).map(fn))));
  return out;
}

// ---- "state files": secrets with a canary, the CLI with the canary in its environment ----

/** Unique per process: it must never appear in anything cgw-sync prints. */
export const CANARY = `cgw-canary-${process.pid}-${randomBytes(8).toString('hex')}`;
export const CANARY_ENV = 'CGW_TEST_CANARY';

export interface Sandbox {
  root: string;
  /** A file outside every state, named and filled with the canary (as YAML that would pass as a Cluster). */
  secretFile: string;
  /** A folder outside every state holding a Guest document full of the canary. */
  secretDir: string;
  /** A fresh copy of state-example named `name` under root. */
  state(name: string): Promise<string>;
  cleanup(): Promise<void>;
}

/** The secret's content: valid-looking YAML, so a loader that followed a link would echo it. */
const secretYaml = (kind: string) => `apiVersion: cgw-sync/v1\nkind: ${kind}\nname: ${CANARY}\n${CANARY}: ${CANARY}\n`;

export async function makeSandbox(tag: string): Promise<Sandbox> {
  const scratch = await scratchDir(`sec-${tag}-${process.pid}`);
  const secretDir = join(scratch.dir, `outside-${CANARY}`);
  await mkdir(secretDir);
  const secretFile = join(secretDir, `secret-${CANARY}.yaml`);
  await writeFile(secretFile, secretYaml('Cluster'));
  await writeFile(join(secretDir, `${CANARY}.yaml`), secretYaml('Guest'));
  return {
    root: scratch.dir,
    secretFile,
    secretDir,
    state: async (name) => {
      const dir = join(scratch.dir, name);
      await cp(EXAMPLE_DIR, dir, { recursive: true });
      return dir;
    },
    cleanup: scratch.remove,
  };
}

/** At most this many CLI processes at once (the cases run concurrently; CI has 2 cores). */
const CLI_SLOTS = 2;
let freeSlots = CLI_SLOTS;
const waiting: Array<() => void> = [];

async function withSlot<T>(work: () => Promise<T>): Promise<T> {
  if (freeSlots === 0) await new Promise<void>((resolve) => waiting.push(resolve));
  else freeSlots--;
  try {
    return await work();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else freeSlots++;
  }
}

/**
 * The built CLI with the canary in its environment (it must not come out through
 * /proc/self/environ); `ms` is the run's own wall time, not the wait for a slot.
 */
export function runCli(args: string[]): Promise<CliResult> {
  return withSlot(() => cli(args, undefined, { [CANARY_ENV]: CANARY }));
}

/** A Git repository in `dir` with state-example committed on main. */
export async function stateRepo(dir: string): Promise<void> {
  await cp(EXAMPLE_DIR, dir, { recursive: true });
  await gitCli(['init', '-q', '-b', 'main'], dir);
  await commitAll(dir, 'state-example');
}

export async function commitAll(dir: string, message: string): Promise<void> {
  await gitCli(['add', '-A'], dir);
  await gitCli(['-c', 'user.name=Test', '-c', 'user.email=test@example.org', 'commit', '-q', '--no-verify', '-m', message], dir);
}

/** Text of at least `bytes` characters: `unit` repeated between `head` and `tail`. */
export function repeatTo(head: string, unit: string, bytes: number, tail = ''): string {
  return head + unit.repeat(Math.max(0, Math.ceil((bytes - head.length - tail.length) / unit.length))) + tail;
}
