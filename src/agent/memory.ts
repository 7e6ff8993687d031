// What an agent remembers between cycles, under its stateDir:
//   memory.json   the last applied revision and the ruleset it put in place, the last report
//                 key, an ongoing Git outage
//   last-good/    a copy of the state files of the last applied revision, enforced while the
//                 source is down, refused or invalid
//   source/       the source cache (git clone);  status/  the status branch repository
//   agent.lock    the cross-process lock
// memory.json is replaced atomically (write + rename), so a kill -9 leaves the old or the new.
import { cp, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Ruleset } from '../nft/model.js';
import type { Outage } from './report.js';
import type { Arrival } from './migration.js';

export interface AgentMemory {
  applied?: { revision: string; at: string; desired: Ruleset };
  lastReportKey?: string;
  outage?: Outage;
  /** Guest -> node, as of the last state this node planned guests for. */
  placement?: Record<string, string>;
  /** Guests placed here that have not started yet (migration gate). */
  arrivals?: Record<string, Arrival>;
}

export function agentPaths(stateDir: string) {
  return {
    memory: path.join(stateDir, 'memory.json'),
    lastGood: path.join(stateDir, 'last-good'),
    sourceCache: path.join(stateDir, 'source'),
    statusRepo: path.join(stateDir, 'status'),
    lock: path.join(stateDir, 'agent.lock'),
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
  const file = agentPaths(stateDir).memory;
  await mkdir(stateDir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(memory));
  await rename(tmp, file);
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
