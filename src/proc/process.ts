// Small process utilities that act on one PID at a time (guest drivers, the lab, the agent lock).
//
// Safety: a PID read from a file may have been reused by an unrelated process after a reboot or a
// crash. Every signal therefore goes through `signalIfSame`, which checks the process start time
// recorded when the process was started (field 22 of /proc/<pid>/stat) before sending anything.
import { readFileSync } from 'node:fs';

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
