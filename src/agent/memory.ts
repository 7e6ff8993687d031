// What an agent remembers between cycles, under its stateDir:
//   memory.json   the last applied revision and the ruleset it put in place, the last report
//                 key, an ongoing Git outage
//   rulesets/     the snapshots memory.json's rulesets are recorded against (src/agent/ruleset-store.ts)
//   last-good/    a copy of the state files of the last applied revision, enforced while the
//                 source is down, refused or invalid
//   source/       the source cache (git clone);  status/  the status branch repository
//   agent.lock    the cross-process lock
//   state-cache.json  the validated state of the last revision read, so a cycle with nothing new
//                 does not parse YAML again (10,000 forwards take ~0.5 s to parse)
// memory.json is replaced atomically (write + rename), so a kill -9 leaves the old or the new.
import { copyFile, cp, link, lstat, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { writeFileAtomic } from '../fs/atomic.js';
import { stampOf } from '../fs/stamp.js';
import path from 'node:path';
import type { Ruleset } from '../nft/model.js';
import type { NftPlan } from '../plan/nft-plan.js';
import { rulesetStore, type StoredRuleset } from './ruleset-store.js';
import { loadState, type LoadMemory, type LoadResult } from '../state/load.js';
import type { ClusterState } from '../state/types.js';
import type { EarlierCycle, Outage } from './report.js';
import type { Arrival } from './migration.js';
import type { Departure } from '../reconcile/live-migration.js';

export interface AgentMemory {
  applied?: { revision: string; at: string; desired: Ruleset };
  /**
   * Written just before an nft transaction, cleared when the cycle ends: after a kill -9 in
   * between, the next cycle knows the live tables may be this ruleset, put there by cgw-sync.
   */
  applying?: { revision: string; desired: Ruleset };
  lastReportKey?: string;
  outage?: Outage;
  /** Guest -> node, as of the last state this node planned guests for. */
  placement?: Record<string, string>;
  /** Guests placed here that have not started yet (migration gate). */
  arrivals?: Record<string, Arrival>;
  /** Live guests this node migrates away: failed attempts, handover (src/reconcile/live-migration.ts). */
  departures?: Record<string, Departure>;
  /** Cycles whose reports were not published yet (Git unreachable): the next report carries them. */
  unpublished?: EarlierCycle[];
  /** A revision rolled back after its health checks failed: not tried again until the branch moves. */
  held?: { revision: string; at: string; reason: string };
  /** The commit this node pushed last to its status branch: any other tip was put there by someone else. */
  statusTip?: string;
}

export function agentPaths(stateDir: string) {
  return {
    memory: path.join(stateDir, 'memory.json'),
    lastGood: path.join(stateDir, 'last-good'),
    sourceCache: path.join(stateDir, 'source'),
    statusRepo: path.join(stateDir, 'status'),
    lock: path.join(stateDir, 'agent.lock'),
    stateCache: path.join(stateDir, 'state-cache.json'),
  };
}

/** memory.json as written: each ruleset as its stored form (src/agent/ruleset-store.ts). */
interface MemoryFile extends Omit<AgentMemory, 'applied' | 'applying'> {
  applied?: { revision: string; at: string; ruleset?: StoredRuleset; desired?: Ruleset };
  applying?: { revision: string; ruleset?: StoredRuleset; desired?: Ruleset };
}

function rulesetsDir(stateDir: string): string {
  return path.join(stateDir, 'rulesets');
}

export async function readMemory(stateDir: string): Promise<AgentMemory> {
  const file = agentPaths(stateDir).memory;
  try {
    const m = JSON.parse(await readFile(file, 'utf8')) as MemoryFile;
    const store = rulesetStore(rulesetsDir(stateDir));
    const snapshots = new Map<string, Promise<Ruleset>>();
    // An older memory.json holds the rulesets themselves.
    const ruleset = async (x: { ruleset?: StoredRuleset; desired?: Ruleset }, field: string): Promise<Ruleset> => {
      if (x.desired) return x.desired;
      if (!x.ruleset) throw new Error(`${field} names no ruleset`);
      return store.load(x.ruleset, snapshots);
    };
    const { applied, applying, ...rest } = m;
    const memory: AgentMemory = rest;
    if (applied) memory.applied = { revision: applied.revision, at: applied.at, desired: await ruleset(applied, 'applied') };
    if (applying) memory.applying = { revision: applying.revision, desired: await ruleset(applying, 'applying') };
    return memory;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && (e as NodeJS.ErrnoException).path === file) return {};
    throw new Error(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/**
 * `next` is `base` changed by `plan`, a plan made against tables equal to `base`: memory.json
 * then names `next` by that change (a few elements) instead of writing it whole.
 */
export function rememberChange(stateDir: string, base: Ruleset, next: Ruleset, plan: NftPlan): void {
  rulesetStore(rulesetsDir(stateDir)).derive(base, next, plan);
}

/**
 * memory.json, replaced atomically; a ruleset not known by a change is written to its snapshot
 * first, and snapshots memory.json names no more are removed after it is in place.
 */
export async function writeMemory(stateDir: string, memory: AgentMemory): Promise<void> {
  const store = rulesetStore(rulesetsDir(stateDir));
  const { applied, applying, ...rest } = memory;
  const m: MemoryFile = { ...rest };
  if (applied) m.applied = { revision: applied.revision, at: applied.at, ruleset: await store.formOf(applied.desired) };
  if (applying) m.applying = { revision: applying.revision, ruleset: await store.formOf(applying.desired) };
  await writeFileAtomic(agentPaths(stateDir).memory, JSON.stringify(m));
  await store.named([m.applied?.ruleset?.snapshot, m.applying?.ruleset?.snapshot].filter((x): x is string => !!x));
}

/**
 * Keep a copy of the state files just applied; swapped in whole, never half-written. Built beside
 * it (`.tmp`: one writer, under the agent's lock), then put in place by two renames with the old
 * copy kept as `.old` in between: whenever a process dies, last-good/ is either complete or
 * missing with `.old` complete (recoverLastGood puts that back). A file whose bytes equal the
 * current copy's is hard-linked from it, not copied: copies are never written in place. The
 * old copy is removed in the background once the new one is in place (recoverLastGood waits).
 */
export async function saveLastGood(stateDir: string, from: string): Promise<void> {
  const dest = agentPaths(stateDir).lastGood;
  const { tmp, old } = lastGoodSwap(dest);
  await recoverLastGood(stateDir);
  await rm(tmp, { recursive: true, force: true });
  await copyReusing(from, tmp, dest);
  await rm(old, { recursive: true, force: true });
  await rename(dest, old).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  await rename(tmp, dest);
  // The replaced copy is removed off the cycle's path (a tree of files: milliseconds); the next
  // save and recoverLastGood wait for it. Left behind by an exit, it is removed by the next save.
  oldCopyRemovals.set(old, rm(old, { recursive: true, force: true }).catch(() => undefined));
}

/** Removals of `.old` copies still running, by path. */
const oldCopyRemovals = new Map<string, Promise<void>>();

function lastGoodSwap(dest: string) {
  return { tmp: `${dest}.tmp`, old: `${dest}.old` };
}

/** last-good/ back from `.old` when a process died between the two renames of saveLastGood. */
export async function recoverLastGood(stateDir: string): Promise<void> {
  const dest = agentPaths(stateDir).lastGood;
  const { old } = lastGoodSwap(dest);
  await oldCopyRemovals.get(old);
  oldCopyRemovals.delete(old);
  if ((await exists(dest)) || !(await exists(old))) return;
  await rename(old, dest);
}

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

/** `from` copied to `to` (`.git` left out), each regular file equal to `reuse`'s hard-linked from there. */
async function copyReusing(from: string, to: string, reuse: string): Promise<void> {
  await mkdir(to);
  // Independent files: their reads and links overlap.
  await Promise.all(
    (await readdir(from, { withFileTypes: true })).map(async (entry) => {
      if (entry.name === '.git') return;
      const [src, dst, prev] = [path.join(from, entry.name), path.join(to, entry.name), path.join(reuse, entry.name)];
      if (entry.isDirectory()) await copyReusing(src, dst, prev);
      else if (entry.isFile() && (await sameBytes(src, prev))) await link(prev, dst);
      else if (entry.isFile()) await copyVerified(src, dst, prev);
      else await cp(src, dst, { recursive: true });
    }),
  );
}

/**
 * What this process knows to be equal, by the last-good/ path: a source file (by its stat) and
 * the copy there (by its stat; the copy is linked, never written, so its inode stays). An
 * unchanged source file is then linked again without reading both (5 MB each at 50,000
 * forwards). A source file is stamped only once it settled (src/fs/stamp.ts: Git's racily clean rule).
 */
const equalFiles = new Map<string, { src: string; srcStamp: string; copyStamp: string }>();

/** The source's stamp (src/fs/stamp.ts) and the copy's, when it is a file. */
async function fileStamps(src: string, copy: string) {
  const [a, b] = await Promise.all([stat(src, { bigint: true }), lstat(copy, { bigint: true }).catch(() => undefined)]);
  const { stamp, size, settled } = stampOf(a, Date.now());
  return { size, src: stamp, settled, copy: b?.isFile() ? { size: b.size, stamp: `${b.ino}:${b.size}:${b.mtimeNs}` } : undefined };
}

async function sameBytes(src: string, prev: string): Promise<boolean> {
  const s = await fileStamps(src, prev);
  if (!s.copy || s.size !== s.copy.size) return false;
  const known = equalFiles.get(prev);
  if (known && s.settled && known.src === src && known.srcStamp === s.src && known.copyStamp === s.copy.stamp) return true;
  const [ba, bb] = await Promise.all([readFile(src), readFile(prev)]);
  const same = ba.equals(bb);
  if (same && s.settled) equalFiles.set(prev, { src, srcStamp: s.src, copyStamp: s.copy.stamp });
  else equalFiles.delete(prev);
  return same;
}

/** copyFile, and the copy stamped as equal to its source (it lands at `prev` once the new last-good/ is in place). */
async function copyVerified(src: string, dst: string, prev: string): Promise<void> {
  const before = stampOf(await stat(src, { bigint: true }), Date.now());
  await copyFile(src, dst);
  const s = await fileStamps(src, dst);
  // Only when the source did not change while it was copied.
  if (s.settled && s.copy && s.src === before.stamp) equalFiles.set(prev, { src, srcStamp: s.src, copyStamp: s.copy.stamp });
  else equalFiles.delete(prev);
}

/** The state in last-good/ (put back first when a process died in the middle of replacing it). */
export async function loadLastGood(stateDir: string, memory?: LoadMemory): Promise<LoadResult> {
  await recoverLastGood(stateDir);
  return loadState(agentPaths(stateDir).lastGood, memory);
}

/**
 * loadState for a revision, from the cache when this revision was already read and validated.
 * Only valid states are cached; a revision is immutable, so the cache never goes stale.
 * (Folder sources without Git have a content hash as revision, which changes with any edit.)
 * A running agent passes its LoadMemory: a new revision reads again only what changed. It writes
 * the cache itself once it applied the revision (saveStateCache), after the apply, not before it.
 */
export async function loadStateCached(stateDir: string, revision: string, dir: string, memory?: LoadMemory): Promise<LoadResult> {
  const file = agentPaths(stateDir).stateCache;
  const cached = await readStateCache(file, revision, dir);
  if (cached) return { state: cached, diagnostics: [] };
  const r = await loadState(dir, memory);
  if (r.state && !memory) await saveStateCache(stateDir, revision, dir, r.state);
  return r;
}

/** state-cache.json for this revision, read from `dir`. */
export async function saveStateCache(stateDir: string, revision: string, dir: string, state: ClusterState): Promise<void> {
  await writeFileAtomic(agentPaths(stateDir).stateCache, JSON.stringify({ revision, dir, state } satisfies StateCache));
}

/** How long the running agent stays idle before it writes state-cache.json. */
export const STATE_CACHE_IDLE_MS = 1000;

/**
 * The running agent's state-cache.json, written while the agent is idle: the cache serves only
 * its next start, so the cycle that applied a revision does not serialize megabytes (~35 ms at
 * 50,000 forwards) on its way to the report. A newer revision replaces a write still pending; no
 * write starts during a cycle (pause); stop flushes. A write lost in a crash costs the next start
 * a YAML parse, never a wrong state (the cache names its revision and folder).
 */
export class DeferredStateCache {
  private pending?: StateCache;
  private timer?: NodeJS.Timeout;
  private writing?: Promise<void>;
  private failure?: string;

  constructor(
    private readonly stateDir: string,
    private readonly idleMs = STATE_CACHE_IDLE_MS,
  ) {}

  /** The state of `revision` (read from `dir`) is the one to cache next. */
  set(revision: string, dir: string, state: ClusterState): void {
    this.pending = { revision, dir, state };
  }

  /** A cycle starts: no write begins until it ended. */
  pause(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** A cycle ended: write what is pending once the agent stayed idle for a while. */
  idle(): void {
    if (!this.pending || this.timer) return;
    this.timer = setTimeout(() => void this.flush(), this.idleMs);
    this.timer.unref();
  }

  /** Write what is pending now (and wait for a write under way). */
  async flush(): Promise<void> {
    this.pause();
    await this.writing;
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    this.writing = saveStateCache(this.stateDir, p.revision, p.dir, p.state).catch((e: Error) => {
      this.failure = e.message;
    });
    await this.writing;
    this.writing = undefined;
  }

  /** Why the last write failed, once (for the next report). */
  takeFailure(): string | undefined {
    const f = this.failure;
    this.failure = undefined;
    return f;
  }
}

interface StateCache {
  revision: string;
  dir: string;
  state: ClusterState;
}

/**
 * The cached state when the cache holds this revision read from this dir. The file starts with
 * both (JSON keeps the order they were written in), so another revision's cache (megabytes at
 * 50,000 forwards) is told apart by its first bytes, without parsing it.
 */
async function readStateCache(file: string, revision: string, dir: string): Promise<ClusterState | undefined> {
  const head = Buffer.from(`${JSON.stringify({ revision, dir }).slice(0, -1)},"state":`);
  try {
    const start = Buffer.alloc(head.length);
    const handle = await open(file, 'r');
    const { bytesRead } = await handle.read(start, 0, head.length, 0).finally(() => handle.close());
    if (bytesRead !== head.length || !start.equals(head)) return undefined;
    const cached = JSON.parse(await readFile(file, 'utf8')) as StateCache;
    return cached.revision === revision && cached.dir === dir ? cached.state : undefined;
  } catch {
    return undefined; // missing or unreadable: read the YAML
  }
}
