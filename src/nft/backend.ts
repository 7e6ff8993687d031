// The real nftables backend: runs the `nft` binary. Reads list only the owned tables; writes
// go through one `nft -f <file>` per transaction (nft 1.0.6 cannot read a batch from Node's
// stdin, see shared FACTS), so the kernel applies a transaction whole or not at all. The file
// has no name on disk (batchFile), so nothing is left behind however the process ends.
import { execa, type StdinOption } from 'execa';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Family, Ruleset, NftTable } from './model.js';
import { parseTableListing } from './normalize.js';
import type { TableRef, Transaction } from './transaction.js';

export interface NftBackend {
  /** The live state of exactly these tables; absent tables are left out. */
  list(tables: TableRef[]): Promise<Ruleset>;
  /** Run a transaction atomically; throws NftError and changes nothing when any part fails. */
  run(tx: Transaction): Promise<void>;
  /** Headers of every base chain on the node, any table (read-only; for shadowing reports). */
  listBaseChains(): Promise<BaseChainInfo[]>;
}

/** A base chain as `nft -j list chains` shows it. */
export interface BaseChainInfo {
  family: Family;
  table: string;
  name: string;
  type: string;
  hook: string;
  priority: number;
}

export class NftError extends Error {
  constructor(
    message: string,
    readonly stderr = '',
  ) {
    super(message);
    this.name = 'NftError';
  }
}

export interface NftCliOptions {
  /** Path of the nft binary (default "nft" from PATH). */
  nft?: string;
  /** Command prefix, e.g. ["ip", "netns", "exec", "lab-node1"]: how the lab and tests aim at a namespace. */
  prefix?: string[];
}

/** How many of the latest transactions' PIDs are remembered (their monitor events are ours). */
const OWN_WRITERS_KEPT = 64;

export class NftCli implements NftBackend {
  private readonly nft: string;
  private readonly prefix: string[];
  /** PIDs of the latest `nft -f` children, oldest first: `nft monitor` names the writer of each generation. */
  private readonly writers: number[] = [];

  constructor(opts: NftCliOptions = {}) {
    this.nft = opts.nft ?? 'nft';
    this.prefix = opts.prefix ?? [];
  }

  /** The full command line of `nft <args>` on this node (the prefix aims it at the node's namespace). */
  command(args: string[]): string[] {
    return [...this.prefix, this.nft, ...args];
  }

  /** Whether this backend's own transaction ran as process `pid` (one of the latest few). */
  wroteAs(pid: number): boolean {
    return this.writers.includes(pid);
  }

  /** Run nft; `stdinFd`, when given, is an open file passed to it as its standard input. */
  private async exec(args: string[], stdinFd?: number): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const argv = this.command(args);
    try {
      // An integer is handed to the child as its fd 0 as is (execa's types list only 0-9).
      const stdin = (stdinFd ?? 'ignore') as StdinOption;
      const child = execa(argv[0] as string, argv.slice(1), { reject: false, encoding: 'utf8', stdin });
      // A prefix like `ip netns exec` execs nft in the same process, so this is nft's PID; it is
      // known before the transaction can commit, hence before its monitor event.
      if (stdinFd !== undefined && child.pid !== undefined) {
        this.writers.push(child.pid);
        if (this.writers.length > OWN_WRITERS_KEPT) this.writers.shift();
      }
      const r = await child;
      // No exit code means the process never ran (e.g. ENOENT): handled below like a throw.
      if (r.exitCode === undefined) throw r;
      const stderr = String(r.stderr ?? '');
      if (/Operation not permitted/.test(stderr)) {
        throw new NftError(`nft: operation not permitted: cgw-sync needs root (CAP_NET_ADMIN) to read and write nftables`, stderr);
      }
      return { stdout: String(r.stdout ?? ''), stderr, exitCode: r.exitCode ?? -1 };
    } catch (e) {
      if (e instanceof NftError) throw e;
      const err = e as { code?: string; message?: string };
      if (err.code === 'ENOENT') throw new NftError(`nft binary not found ("${this.nft}"): install the nftables package or pass --nft <path>`);
      throw new NftError(`could not run ${argv.join(' ')}: ${err.message ?? String(e)}`);
    }
  }

  async listTable(t: TableRef): Promise<NftTable | undefined> {
    const r = await this.exec(['-j', 'list', 'table', t.family, t.name]);
    if (r.exitCode === 0) return parseTableListing(r.stdout);
    if (/No such file or directory/.test(r.stderr)) return undefined;
    throw new NftError(`nft -j list table ${t.family} ${t.name} failed: ${r.stderr.trim()}`, r.stderr);
  }

  async list(tables: TableRef[]): Promise<Ruleset> {
    const listed = await Promise.all(tables.map((t) => this.listTable(t)));
    return { tables: listed.filter((t): t is NftTable => !!t) };
  }

  async listBaseChains(): Promise<BaseChainInfo[]> {
    const r = await this.exec(['-j', 'list', 'chains']);
    if (r.exitCode !== 0) throw new NftError(`nft -j list chains failed: ${r.stderr.trim()}`, r.stderr);
    const items = (JSON.parse(r.stdout) as { nftables?: { chain?: Record<string, unknown> }[] }).nftables ?? [];
    return items
      .map((i) => i.chain)
      .filter((c): c is Record<string, unknown> => !!c && c.hook !== undefined)
      .map((c) => ({ family: String(c.family) as Family, table: String(c.table), name: String(c.name), type: String(c.type), hook: String(c.hook), priority: Number(c.prio) }));
  }

  async run(tx: Transaction): Promise<void> {
    if (tx.empty) return;
    const fd = batchFile(tx.toText());
    try {
      // The file as nft's stdin (nft reads /dev/stdin from fd 0, at the offset it has: 0).
      // Unlike Node's stdin pipe (a socketpair, which nft 1.0.6 cannot read), this is a file.
      const r = await this.exec(['-f', '/dev/stdin'], fd);
      if (r.exitCode !== 0) throw new NftError(`nft transaction failed, nothing was changed: ${r.stderr.trim()}`, r.stderr);
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * An open file descriptor holding `text`, with no name on disk: the file is unlinked the moment
 * it is created (two system calls back to back, no await between), before anything is written.
 * A named batch file outlived a `kill -9` during `nft -f`; this one vanishes with its last
 * descriptor. (Node cannot open with O_TMPFILE or create a memfd.) Written with positional
 * writes, so the descriptor's offset stays at 0 for the reader that inherits it.
 */
export function batchFile(text: string): number {
  const path = join(tmpdir(), `cgw-sync-nft-${process.pid}-${randomBytes(6).toString('hex')}`);
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    unlinkSync(path);
    const bytes = Buffer.from(text);
    for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done, done);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}
