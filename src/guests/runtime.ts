// Helpers shared by the guest drivers: the runtime directory with one metadata file per guest,
// and small process utilities that act on one PID at a time.
//
// Safety: a PID read from a file may have been reused by an unrelated process after a reboot or a
// crash. Every signal therefore goes through `signalIfSame`, which checks the process start time
// recorded when the guest was started (field 22 of /proc/<pid>/stat) before sending anything.
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HypervisorDriver } from '../state/types.js';

export const DEFAULT_RUN_ROOT = '/run/cgw-sync';

/** What cgw-sync records about a guest it started; its absence marks a guest as not ours. */
export interface GuestMeta {
  name: string;
  driver: HypervisorDriver;
  fingerprint: string;
  mac: string;
  startedAt: string; // ISO time
  /** Host process of the guest and its start time (clock ticks since boot), when there is one. */
  pid?: number;
  pidStart?: string;
  /** Driver-specific identity (e.g. the Xen domain UUID). */
  uuid?: string;
}

const META = '.meta.json';

export class RuntimeDir {
  constructor(readonly dir: string) {}

  /** `<dir>/<name><suffix>`, e.g. file('web1', '.pid'). */
  file(name: string, suffix: string): string {
    return join(this.dir, name + suffix);
  }

  async ensure(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Guest names that have a file with this suffix in the directory. */
  async names(suffix: string): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return entries.filter((f) => f.endsWith(suffix) && f.length > suffix.length).map((f) => f.slice(0, -suffix.length));
  }

  async readMeta(name: string): Promise<GuestMeta | undefined> {
    const text = await readIfExists(this.file(name, META));
    return text === undefined ? undefined : (JSON.parse(text) as GuestMeta);
  }

  /** Written to a temporary file and renamed, so a reader never sees half a file. */
  async writeMeta(meta: GuestMeta): Promise<void> {
    await this.ensure();
    const target = this.file(meta.name, META);
    await writeFile(target + '.tmp', JSON.stringify(meta, null, 2) + '\n', { mode: 0o600 });
    await rename(target + '.tmp', target);
  }

  /** A PID file as written by qemu `-pidfile` or by us; undefined when absent or unreadable. */
  async readPid(name: string, suffix = '.pid'): Promise<number | undefined> {
    const text = await readIfExists(this.file(name, suffix));
    const pid = Number.parseInt(text?.trim() ?? '', 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }

  /** Remove this guest's files with the given suffixes (the metadata file always). */
  async remove(name: string, suffixes: string[]): Promise<void> {
    for (const s of [...suffixes, META]) await rm(this.file(name, s), { force: true });
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** State letter and start time of a process from /proc/<pid>/stat; undefined when there is no such process. */
function procStat(pid: number): { state: string; start: string } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: rest[0], start: rest[19] }; // fields 3 and 22
}

export function processStartTime(pid: number): string | undefined {
  return procStat(pid)?.start;
}

/** Alive = exists and is not a zombie; with startTime, also the same process as recorded. */
export function processAlive(pid: number, startTime?: string): boolean {
  const st = procStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return false;
  return startTime === undefined || st.start === startTime;
}

export function processCmdline(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.replace(/\0$/, '').split('\0');
  } catch {
    return undefined;
  }
}

/** Send a signal to pid only if it is still the process we recorded. Returns whether it was sent. */
export function signalIfSame(pid: number, startTime: string | undefined, sig: NodeJS.Signals): boolean {
  if (!processAlive(pid, startTime)) return false;
  try {
    process.kill(pid, sig);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/**
 * Wait until the process is gone (or replaced by another with the same PID). There is no
 * portable exit event for a process that is not our child, so this polls with a deadline.
 */
export async function waitForExit(pid: number, startTime: string | undefined, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!processAlive(pid, startTime)) return true;
    if (Date.now() >= deadline) return false;
    await delay(Math.min(50, Math.max(1, deadline - Date.now())));
  }
}

/** Poll `check` until it returns true or the deadline passes. */
export async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await delay(stepMs);
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Stop one process: SIGTERM, wait up to timeoutMs, then SIGKILL. 'clean' when it left on SIGTERM
 * (or was already gone), 'forced' when SIGKILL was needed.
 */
export async function terminate(pid: number, startTime: string | undefined, timeoutMs: number): Promise<'clean' | 'forced'> {
  if (!signalIfSame(pid, startTime, 'SIGTERM')) return 'clean';
  if (await waitForExit(pid, startTime, timeoutMs)) return 'clean';
  signalIfSame(pid, startTime, 'SIGKILL');
  if (!(await waitForExit(pid, startTime, 5_000))) throw new Error(`process ${pid} survived SIGKILL`);
  return 'forced';
}
