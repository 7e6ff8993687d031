// What an agent remembers between cycles, under its stateDir:
//   memory.json   the last applied revision and the ruleset it put in place, the last report
//                 key, an ongoing Git outage
//   last-good/    a copy of the state files of the last applied revision, enforced while the
//                 source is down, refused or invalid
//   source/       the source cache (git clone);  status/  the status branch repository
//   agent.lock    the cross-process lock
//   state-cache.json  the validated state of the last revision read, so a cycle with nothing new
//                 does not parse YAML again (10,000 forwards take ~0.5 s to parse)
// memory.json is replaced atomically (write + rename), so a kill -9 leaves the old or the new.
import { copyFile, cp, link, lstat, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { writeFileAtomic } from '../fs/atomic.js';
import path from 'node:path';
import type { Ruleset } from '../nft/model.js';
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

export async function readMemory(stateDir: string): Promise<AgentMemory> {
  try {
    return JSON.parse(await readFile(agentPaths(stateDir).memory, 'utf8')) as AgentMemory;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new Error(`cannot read ${agentPaths(stateDir).memory}: ${(e as Error).message}`);
  }
}

export async function writeMemory(stateDir: string, memory: AgentMemory): Promise<void> {
  await writeFileAtomic(agentPaths(stateDir).memory, memoryJson(memory));
}

/**
 * Each ruleset's JSON by object identity (rulesets are never changed once made): a cycle that
 * applies a revision writes its ruleset twice (`applying` before the transaction, `applied`
 * after it), megabytes at 50,000 forwards, and serializes it once.
 */
const rulesetJson = new WeakMap<object, string>();

/** Stands for a ruleset in the first pass; the random part keeps any string of the state from being taken for it. */
const RULESET_PLACEHOLDER = `\u0000ruleset-${randomBytes(8).toString('hex')}`;
const RULESET_MARK = JSON.stringify(RULESET_PLACEHOLDER);

/** JSON.stringify(memory), byte for byte, with each ruleset's JSON taken from rulesetJson. */
export function memoryJson(memory: AgentMemory): string {
  const rulesets: string[] = [];
  const text = JSON.stringify(memory, (key, value: unknown) => {
    if (key !== 'desired' || value === null || typeof value !== 'object') return value;
    let json = rulesetJson.get(value);
    if (json === undefined) {
      json = JSON.stringify(value);
      rulesetJson.set(value, json);
    }
    rulesets.push(json);
    return RULESET_PLACEHOLDER;
  });
  const pieces = text.split(RULESET_MARK);
  if (pieces.length !== rulesets.length + 1) return JSON.stringify(memory);
  return pieces.map((piece, i) => (i < rulesets.length ? piece + rulesets[i] : piece)).join('');
}

/**
 * Keep a copy of the state files just applied; swapped in whole, never half-written. Built beside
 * it (`.tmp`: one writer, under the agent's lock), then put in place by two renames with the old
 * copy kept as `.old` in between: whenever a process dies, last-good/ is either complete or
 * missing with `.old` complete (recoverLastGood puts that back). A file whose bytes equal the
 * current copy's is hard-linked from it, not copied: copies are never written in place.
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
  await rm(old, { recursive: true, force: true });
}

function lastGoodSwap(dest: string) {
  return { tmp: `${dest}.tmp`, old: `${dest}.old` };
}

/** last-good/ back from `.old` when a process died between the two renames of saveLastGood. */
export async function recoverLastGood(stateDir: string): Promise<void> {
  const dest = agentPaths(stateDir).lastGood;
  const { old } = lastGoodSwap(dest);
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
  for (const entry of await readdir(from, { withFileTypes: true })) {
    if (entry.name === '.git') continue;
    const [src, dst, prev] = [path.join(from, entry.name), path.join(to, entry.name), path.join(reuse, entry.name)];
    if (entry.isDirectory()) await copyReusing(src, dst, prev);
    else if (entry.isFile() && (await sameBytes(src, prev))) await link(prev, dst);
    else if (entry.isFile()) await copyFile(src, dst);
    else await cp(src, dst, { recursive: true });
  }
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([stat(a), lstat(b).catch(() => undefined)]);
  if (!sb?.isFile() || sa.size !== sb.size) return false;
  const [ba, bb] = await Promise.all([readFile(a), readFile(b)]);
  return ba.equals(bb);
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
