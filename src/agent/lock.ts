// One reconcile at a time per node, across processes (`cgw-sync run` and a timer's `once`).
//
// The lock is a file created with O_EXCL holding the owner's PID and process start time. A lock
// whose owner is gone (crash, kill -9) or whose PID now belongs to another process is stale and
// taken over, so a crash never blocks the node forever.
import { open, readFile, unlink, mkdir } from 'node:fs/promises';
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
  try {
    const fh = await open(path, 'wx', 0o644);
    await fh.writeFile(JSON.stringify(owner));
    await fh.close();
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
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
    tookOver = owner ?? { pid: 0, since: 'unknown' };
    await unlink(path).catch(() => undefined);
  }
  throw new Error(`could not take the lock ${path}: it keeps changing hands`);
}
