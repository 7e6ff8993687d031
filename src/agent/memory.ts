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
import { cp, open, readFile, rename, rm } from 'node:fs/promises';
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
  await writeFileAtomic(agentPaths(stateDir).memory, JSON.stringify(memory));
}

/** Keep a copy of the state files just applied; swapped in whole, never half-written. */
export async function saveLastGood(stateDir: string, from: string): Promise<void> {
  const dest = agentPaths(stateDir).lastGood;
  const tmp = `${dest}.${process.pid}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await cp(from, tmp, { recursive: true, filter: (src) => path.basename(src) !== '.git' });
  await rm(dest, { recursive: true, force: true });
  await rename(tmp, dest);
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
