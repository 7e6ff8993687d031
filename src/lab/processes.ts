// The lab's background processes in the root namespace (the Git server, one agent per node) and
// the file that records them, so `lab down` can stop exactly those processes, also after the
// command that started them has crashed.
//
// Every process is recorded with its PID and start time (see proc/process.ts) the moment it has
// been spawned; `down` signals a PID only while it is still the process recorded.
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive, processStartTime, terminate } from '../proc/process.js';

export interface LabProcess {
  /** What it is, e.g. "git-server" or "agent node1". */
  name: string;
  pid: number;
  /** Start time from /proc/<pid>/stat, to recognise the process later. */
  start: string;
  command: string[];
  log: string;
}

/** What `lab up` wrote down about the lab (`<lab dir>/lab.json`). */
export interface LabRecord {
  prefix: string;
  createdAt: string;
  mode?: string;
  brNetfilter?: boolean;
  /** What the guests are (lab up --guests), and the VMs' accelerator. */
  guests?: 'netns' | 'qemu';
  accel?: 'kvm' | 'tcg';
  /** The state directory the lab repository was seeded from. */
  seededFrom?: string;
  /** Bare state repository on disk, and its clone URL once the Git server listens. */
  repo?: string;
  url?: string;
  /** The revision the agents were started on. */
  revision?: string;
  /** Agent configuration file per node. */
  agents?: Record<string, string>;
  processes: LabProcess[];
}

const RECORD = 'lab.json';

export async function readLabRecord(labDir: string): Promise<LabRecord | undefined> {
  try {
    return JSON.parse(await readFile(join(labDir, RECORD), 'utf8')) as LabRecord;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${join(labDir, RECORD)}: ${(e as Error).message}`);
  }
}

/** Replaced atomically (write + rename): a crash leaves the old record or the new one. */
export async function writeLabRecord(labDir: string, record: LabRecord): Promise<void> {
  const file = join(labDir, RECORD);
  await writeFile(`${file}.tmp`, `${JSON.stringify(record, null, 2)}\n`);
  await rename(`${file}.tmp`, file);
}

/**
 * Start `command` detached from this process (it outlives `lab up`), stdout and stderr appended
 * to `log`. Resolves once the process exists, with its PID and start time.
 */
export async function spawnDetached(name: string, command: string[], log: string): Promise<LabProcess> {
  const fd = openSync(log, 'a');
  try {
    const [cmd, ...args] = command;
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd] });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    child.unref();
    const start = processStartTime(child.pid!);
    if (start === undefined) throw new Error(`${name} exited immediately (see ${log})`);
    return { name, pid: child.pid!, start, command, log };
  } finally {
    closeSync(fd);
  }
}

export function isRunning(p: LabProcess): boolean {
  return processAlive(p.pid, p.start);
}

/** Stop recorded processes, all at once: SIGTERM, then SIGKILL to those left after graceMs. */
export async function stopProcesses(processes: LabProcess[], graceMs: number): Promise<void> {
  await Promise.all(processes.map((p) => terminate(p.pid, p.start, graceMs)));
}

/** The last lines of a log file, for error messages ('' when there is none). */
export async function logTail(file: string, lines = 15): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
