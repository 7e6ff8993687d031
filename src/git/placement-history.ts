// Where the state's Git history ever placed each guest: the nodes named by `node:` in the guest
// files of every commit reachable from a revision. The migration gate asks it whether a guest
// arriving on a node without a record of its previous placement is new (placed nowhere else:
// it may start at once) or was moved (it waits for the node it was on).
//
// The history is untrusted input like the tip (anyone with a merged pull request wrote it), but
// only the tip is checked before it is accepted. So the walk reads as little as it can and is
// bounded everywhere:
//  - only the trees on the way to `<state path>/guests` and that folder's *.yaml/*.yml blobs are
//    read; a tree or blob whose oid was read before is not read again (most commits change no guest);
//  - a tree with more entries than STATE_LIMITS.entries, or a blob larger than STATE_LIMITS.fileBytes,
//    is skipped: a state holding it was refused, so no node ever applied it;
//  - YAML goes through the loader's hostile-input parser (depth, size and alias limits);
//  - each walk has a budget of commits, tree entries and blob bytes; a walk that runs out stops
//    between objects, says the history is incomplete, and the next walk resumes where it stopped
//    (the walker is kept per repository, so a cycle reads only commits it has not seen);
//  - the number of commits remembered is capped; past it the history stays incomplete.
// An incomplete history can only make the gate wait longer, never shorter.
import fs from 'node:fs';
import path from 'node:path';
import git from 'isomorphic-git';
import { STATE_LIMITS } from '../state/files.js';
import { parseYamlSource } from '../state/yaml-source.js';
import type { RepoLocation } from './tree.js';

export interface HistoryLimits {
  /** Commits read by one walk. */
  commitsPerWalk: number;
  /** Tree entries read by one walk (on the way to the guests folder and in it). */
  entriesPerWalk: number;
  /** Bytes of guest files read by one walk. */
  bytesPerWalk: number;
  /** Commits known in all (read or waiting to be read); past this the history is too long to tell. */
  commits: number;
}

/** Sized for hundreds of commits a cycle at tens of thousands of forwards (the forwards are never read). */
export const HISTORY_LIMITS: HistoryLimits = {
  commitsPerWalk: 5_000,
  entriesPerWalk: 200_000,
  bytesPerWalk: 32 * 1024 * 1024,
  commits: 200_000,
};

export interface PlacementHistory {
  /** Every node a commit placed `guest` on (sorted). */
  nodesOf(guest: string): string[];
  /** Why placements may be missing; undefined when every commit reachable from the revision was read. */
  incomplete?: string;
}

/** What one walk read, for tests and measurements. */
export interface WalkStats {
  commits: number;
  entries: number;
  bytes: number;
  blobs: number;
}

const GUEST_FILE = /\.ya?ml$/;

/**
 * The placement history of one repository, read incrementally: each `read(tip)` walks only the
 * commits no earlier call has read. Placements are a union over every commit read, so a tip that
 * does not descend from an earlier one (an accepted rollback) can only add placements.
 */
export class PlacementHistoryReader {
  private readonly visited = new Set<string>();
  private readonly queued = new Set<string>();
  private pending: string[] = [];
  private readonly seenTrees = new Set<string>();
  private readonly seenBlobs = new Set<string>();
  private readonly placements = new Map<string, Set<string>>();
  private tooLong = false;
  /** Commits named by the history that the repository does not hold (a shallow clone, a wrong revision). */
  private readonly missing = new Set<string>();
  private readonly guestsPath: string[];
  /** The walk under way: walks of one reader run one after the other. */
  private walking: Promise<unknown> = Promise.resolve();
  /** Counts of the last walk. */
  lastWalk: WalkStats = { commits: 0, entries: 0, bytes: 0, blobs: 0 };

  constructor(
    private readonly repo: RepoLocation,
    /** Folder of the state inside the repository ("." for the top). */
    statePath: string,
    private readonly limits: HistoryLimits = HISTORY_LIMITS,
  ) {
    this.guestsPath = [...stateSegments(statePath), 'guests'];
  }

  read(tip: string): Promise<PlacementHistory> {
    const walk = this.walking.then(() => this.walk(tip));
    this.walking = walk.catch(() => undefined);
    return walk;
  }

  private async walk(tip: string): Promise<PlacementHistory> {
    this.enqueue(tip);
    const { limits } = this;
    const stats: WalkStats = { commits: 0, entries: 0, bytes: 0, blobs: 0 };
    this.lastWalk = stats;
    // One cache per walk: isomorphic-git keeps the packfiles it opened in it.
    const cache = {};
    while (this.pending.length > 0) {
      if (stats.commits >= limits.commitsPerWalk || stats.entries >= limits.entriesPerWalk || stats.bytes >= limits.bytesPerWalk) break;
      const oid = this.pending.pop() as string;
      if (!(await this.readCommit(oid, stats, cache))) {
        // Out of budget inside this commit: it is read again (what it read is not) next time.
        this.pending.push(oid);
        break;
      }
      this.queued.delete(oid);
      this.visited.add(oid);
    }
    return this.snapshot(stats);
  }

  private enqueue(oid: string): void {
    if (this.visited.has(oid) || this.queued.has(oid)) return;
    if (this.visited.size + this.queued.size >= this.limits.commits) {
      this.tooLong = true;
      return;
    }
    this.queued.add(oid);
    this.pending.push(oid);
  }

  /** Read one commit's guests folder; false when the walk's budget ran out before it was done. */
  private async readCommit(oid: string, stats: WalkStats, cache: object): Promise<boolean> {
    let commit: Awaited<ReturnType<typeof git.readCommit>>['commit'];
    try {
      ({ commit } = await git.readCommit({ fs, ...this.repo, oid, cache }));
    } catch {
      // Missing (a shallow edge) or not a commit: what it placed is unknown.
      this.missing.add(oid);
      return true;
    }
    stats.commits++;
    const guestsTree = await this.folderOid(commit.tree, stats, cache);
    if (guestsTree && !this.seenTrees.has(guestsTree)) {
      if (!(await this.readGuestsTree(guestsTree, stats, cache))) return false;
      this.seenTrees.add(guestsTree);
    }
    // Parents go on top of the stack: the walk follows one line of history back first.
    for (const parent of [...commit.parent].reverse()) this.enqueue(parent);
    return true;
  }

  /** The oid of the guests folder in a commit's tree, or undefined (absent or over the limits). */
  private async folderOid(root: string, stats: WalkStats, cache: object): Promise<string | undefined> {
    let oid = root;
    for (const segment of this.guestsPath) {
      const tree = await this.readTree(oid, stats, cache);
      const entry = tree?.find((e) => e.path === segment && e.type === 'tree');
      if (!entry) return undefined;
      oid = entry.oid;
    }
    return oid;
  }

  /** A tree's entries, or undefined when it is unreadable or larger than a state may be. */
  private async readTree(oid: string, stats: WalkStats, cache: object) {
    try {
      const { tree } = await git.readTree({ fs, ...this.repo, oid, cache });
      stats.entries += tree.length;
      return tree.length > STATE_LIMITS.entries ? undefined : tree;
    } catch {
      return undefined;
    }
  }

  /** Every guest file of a guests folder; false when the budget ran out (the files read so far stay read). */
  private async readGuestsTree(oid: string, stats: WalkStats, cache: object): Promise<boolean> {
    const tree = await this.readTree(oid, stats, cache);
    for (const e of tree ?? []) {
      // Regular files only: a state holding a symlink (mode 120000) was refused, never applied.
      if (e.type !== 'blob' || e.mode === '120000' || !GUEST_FILE.test(e.path) || this.seenBlobs.has(e.oid)) continue;
      if (stats.bytes >= this.limits.bytesPerWalk) return false;
      const blob = await git.readBlob({ fs, ...this.repo, oid: e.oid, cache }).then((b) => b.blob, () => undefined);
      this.seenBlobs.add(e.oid);
      stats.blobs++;
      if (!blob) continue;
      stats.bytes += blob.byteLength;
      if (blob.byteLength <= STATE_LIMITS.fileBytes) this.addPlacement(e.path, blob);
    }
    return true;
  }

  /** The guest file's name and node. A file too broken to name them made its state invalid, so no node applied it. */
  private addPlacement(file: string, blob: Uint8Array): void {
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(blob);
    } catch {
      return;
    }
    const { data } = parseYamlSource(`guests/${file}`, text);
    const { name, node } = (data ?? {}) as { name?: unknown; node?: unknown };
    if (typeof name !== 'string' || typeof node !== 'string') return;
    const nodes = this.placements.get(name) ?? new Set<string>();
    nodes.add(node);
    this.placements.set(name, nodes);
  }

  private snapshot(stats: WalkStats): PlacementHistory {
    const placements = new Map([...this.placements].map(([g, nodes]) => [g, [...nodes].sort()]));
    const incomplete = this.incompleteReason(stats);
    return { nodesOf: (guest) => placements.get(guest) ?? [], ...(incomplete && { incomplete }) };
  }

  private incompleteReason(stats: WalkStats): string | undefined {
    if (this.tooLong) return `the history is longer than ${this.limits.commits} commits (limit)`;
    if (this.missing.size > 0) return `${this.missing.size} commit(s) of the history are not in the repository (e.g. ${[...this.missing][0]}; a shallow clone?)`;
    if (this.pending.length > 0) {
      return `the history was read only in part (${this.visited.size} commits so far; this walk stopped at its limit after ${stats.commits} commits, ${stats.entries} tree entries and ${stats.bytes} bytes of guest files; the next cycle reads on)`;
    }
    return undefined;
  }
}

/** The folders of a source's `path` ("." -> none); a path leaving the repository has no history to read. */
function stateSegments(statePath: string): string[] {
  const normal = path.posix.normalize(statePath).replace(/^\.\/?|\/$/g, '');
  const segments = normal === '' ? [] : normal.split('/');
  if (segments.some((s) => s === '..' || s === '' || s === '.git')) throw new Error(`source path "${statePath}" is not a folder inside the repository`);
  return segments;
}

const readers = new Map<string, PlacementHistoryReader>();

/**
 * The placement history of `revision` in the repository at `dir`, read by a walker kept for the
 * life of the process (per repository and state path), so each cycle walks only new commits.
 * A history that cannot be read at all is an incomplete one, never an error of the cycle.
 */
export async function placementHistory(dir: string, statePath: string, revision: string): Promise<PlacementHistory> {
  const key = `${path.resolve(dir)}\0${statePath}`;
  try {
    let reader = readers.get(key);
    if (!reader) {
      reader = new PlacementHistoryReader({ dir }, statePath);
      readers.set(key, reader);
    }
    return await reader.read(revision);
  } catch (e) {
    return { nodesOf: () => [], incomplete: `the history could not be read: ${(e as Error).message}` };
  }
}
