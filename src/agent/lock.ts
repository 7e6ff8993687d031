// One reconcile at a time per node, across processes (`cgw-sync run` and a timer's `once`).
//
// The lock is a file created with O_EXCL holding the owner's PID and process start time. A lock
// whose owner is gone (crash, kill -9) or whose PID now belongs to another process is stale and
// taken over, so a crash never blocks the node forever.
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
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

async function readOwner(path: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as LockOwner;
  } catch {
    return undefined; // vanished, or half-written by a process that died mid-write: stale
  }
}

async function tryCreate(path: string, owner: LockOwner): Promise<boolean> {
  // The lock appears complete or not at all: written to a private file first, then hard-linked
  // into place (link fails with EEXIST like O_EXCL). Created empty and written afterwards, a
  // racing process could read it half-written, take it for stale and steal a live lock.
  // Removed whatever happens, also when writing it fails (ENOSPC leaves it created but empty).
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(owner), { mode: 0o644 });
    await link(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/**
 * Remove the lock file judged stale, but only while it still is that lock. Several processes may
 * judge the same stale lock at once; a plain unlink by a slower one would delete the lock a
 * faster one has just created. So removing a stale lock needs a second, short-lived lock
 * (`<lock>.break`): its holder re-reads the lock and removes it only if unchanged. A process that
 * finds another one breaking the lock is busy (that one will run).
 */
async function removeStale(path: string, judged: LockOwner | undefined, me: LockOwner): Promise<boolean> {
  const breaker = `${path}.break`;
  if (!(await tryCreate(breaker, me))) {
    const other = await readOwner(breaker);
    if (other && processAlive(other.pid, other.startTime)) throw new LockBusy(path, other);
    // Its owner died within the few microseconds of breaking: clear it and try again.
    await unlink(breaker).catch(() => undefined);
    return false;
  }
  try {
    if (JSON.stringify(await readOwner(path)) !== JSON.stringify(judged)) return false;
    await unlink(path).catch(() => undefined);
    return true;
  } finally {
    await unlink(breaker).catch(() => undefined);
  }
}

export async function acquireLock(path: string): Promise<Lock> {
  await mkdir(dirname(path), { recursive: true });
  const me: LockOwner = { pid: process.pid, startTime: processStartTime(process.pid), since: new Date().toISOString() };
  let tookOver: LockOwner | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await tryCreate(path, me)) {
      return {
        path,
        ...(tookOver ? { tookOver } : {}),
        release: async () => {
          // Only remove our own lock, never one a later owner took over.
          const cur = await readOwner(path);
          if (cur?.pid === me.pid && cur.startTime === me.startTime) await unlink(path).catch(() => undefined);
        },
      };
    }
    const owner = await readOwner(path);
    if (owner && processAlive(owner.pid, owner.startTime)) throw new LockBusy(path, owner);
    if (await removeStale(path, owner, me)) tookOver = owner ?? { pid: 0, since: 'unknown' };
  }
  throw new Error(`could not take the lock ${path}: it keeps changing hands`);
}
