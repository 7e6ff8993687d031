// One reconcile at a time per node, across processes (`cgw-sync run` and a timer's `once`).
//
// The lock is a file created with O_EXCL holding the owner's PID and process start time. A lock
// whose owner is gone (crash, kill -9) or whose PID now belongs to another process is stale and
// taken over, so a crash never blocks the node forever.
import { randomBytes } from 'node:crypto';
// Synchronous file calls: a few bytes in the node's own state dir take microseconds each, where a
// trip through the thread pool costs ~0.1 ms and waits behind any other file work; every cycle
// takes and releases the lock.
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { processAlive, processStartTime } from '../proc/process.js';

export interface LockOwner {
  pid: number;
  startTime?: string;
  since: string;
}

export class LockBusy extends Error {
  constructor(
    readonly path: string,
    readonly owner: LockOwner,
  ) {
    super(`another cgw-sync cycle holds ${path} (pid ${owner.pid}, since ${owner.since})`);
    this.name = 'LockBusy';
  }
}

export interface Lock {
  path: string;
  /** True when a stale lock (its owner gone) was taken over. */
  tookOver?: LockOwner;
  release(): Promise<void>;
}

function readOwner(path: string): LockOwner | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as LockOwner;
  } catch {
    return undefined; // vanished, or half-written by a process that died mid-write: stale
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}

function tryCreate(path: string, owner: LockOwner): boolean {
  // The lock appears complete or not at all: written to a private file first, then hard-linked
  // into place (link fails with EEXIST like O_EXCL). Created empty and written afterwards, a
  // racing process could read it half-written, take it for stale and steal a live lock.
  // Removed whatever happens, also when writing it fails (ENOSPC leaves it created but empty).
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, JSON.stringify(owner), { mode: 0o644 });
    linkSync(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    unlinkQuietly(tmp);
  }
}

/**
 * Remove the lock file judged stale, but only while it still is that lock. Several processes may
 * judge the same stale lock at once; a plain unlink by a slower one would delete the lock a
 * faster one has just created. So removing a stale lock needs a second, short-lived lock
 * (`<lock>.break`): its holder re-reads the lock and removes it only if unchanged. A process that
 * finds another one breaking the lock is busy (that one will run).
 */
function removeStale(path: string, judged: LockOwner | undefined, me: LockOwner): boolean {
  const breaker = `${path}.break`;
  if (!(tryCreate(breaker, me))) {
    const other = readOwner(breaker);
    if (other && processAlive(other.pid, other.startTime)) throw new LockBusy(path, other);
    // Its owner died within the few microseconds of breaking: clear it and try again.
    unlinkQuietly(breaker);
    return false;
  }
  try {
    if (JSON.stringify(readOwner(path)) !== JSON.stringify(judged)) return false;
    unlinkQuietly(path);
    return true;
  } finally {
    unlinkQuietly(breaker);
  }
}

export async function acquireLock(path: string): Promise<Lock> {
  mkdirSync(dirname(path), { recursive: true });
  const me: LockOwner = { pid: process.pid, startTime: processStartTime(process.pid), since: new Date().toISOString() };
  let tookOver: LockOwner | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (tryCreate(path, me)) {
      return {
        path,
        ...(tookOver ? { tookOver } : {}),
        release: async () => {
          // Only remove our own lock, never one a later owner took over.
          const cur = readOwner(path);
          if (cur?.pid === me.pid && cur.startTime === me.startTime) unlinkQuietly(path);
        },
      };
    }
    const owner = readOwner(path);
    if (owner && processAlive(owner.pid, owner.startTime)) throw new LockBusy(path, owner);
    if (removeStale(path, owner, me)) tookOver = owner ?? { pid: 0, since: 'unknown' };
  }
  throw new Error(`could not take the lock ${path}: it keeps changing hands`);
}
