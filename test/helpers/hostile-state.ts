// Shared by the adversarial groups in test/security/: hostile copies of state-example/, the built
// CLI run inside a test namespace, and a namespace holding other people's tables that must stay
// byte-identical whatever cgw-sync is fed.
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { CLI_BIN, PROJECT_ROOT } from './agent-fixture.js';
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

export interface CliResult {
  code: number | undefined;
  out: string;
  err: string;
}

/** The built CLI, inside `ns` when given (as an operator would aim it: `ip netns exec`). */
export async function cli(args: string[], ns?: string): Promise<CliResult> {
  if (!existsSync(CLI_BIN)) throw new Error(`${CLI_BIN} is missing: run \`npm run build\` (scripts/test.sh does)`);
  const argv = ns ? ['ip', 'netns', 'exec', ns, process.execPath, CLI_BIN, ...args] : [process.execPath, CLI_BIN, ...args];
  const r = await execa(argv[0] as string, argv.slice(1), { reject: false, timeout: 20_000 });
  return { code: r.exitCode, out: String(r.stdout), err: String(r.stderr) };
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
