// Suspension (like `flux suspend --reason`, `puppet agent --disable "msg"`): a suspended node
// still fetches, plans, checks and reports, and applies nothing. Set on the node with
// `cgw-sync suspend --reason` (a file in its state dir), or in Git for the whole fleet
// (cluster.yaml `suspend: {reason}`) or one node (nodes/<n>.yaml `suspend: {reason}`).
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../fs/atomic.js';
import type { ClusterState } from '../state/types.js';

export interface Suspension {
  reason: string;
  /** Who suspended it: the operator (local), or where in the state it is set. */
  by: string;
  /** Local suspensions only: when. */
  since?: string;
}

const suspendFile = (stateDir: string) => path.join(stateDir, 'suspend.json');

export async function readLocalSuspension(stateDir: string): Promise<Suspension | undefined> {
  try {
    return JSON.parse(await readFile(suspendFile(stateDir), 'utf8')) as Suspension;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${suspendFile(stateDir)}: ${(e as Error).message}`);
  }
}

export async function suspendNode(stateDir: string, s: Suspension): Promise<void> {
  await writeFileAtomic(suspendFile(stateDir), `${JSON.stringify(s)}\n`);
}

/** Lift a local suspension; false when there was none. */
export async function resumeNode(stateDir: string): Promise<boolean> {
  const had = (await readLocalSuspension(stateDir)) !== undefined;
  await rm(suspendFile(stateDir), { force: true });
  return had;
}

/** The suspension in force: the operator's on this node first, then the node's, then the fleet's. Pure but for `local`. */
export function suspensionOf(state: ClusterState | undefined, node: string, local: Suspension | undefined): Suspension | undefined {
  if (local) return local;
  const n = state?.nodes.find((x) => x.name === node);
  if (n?.suspend) return { reason: n.suspend.reason, by: `nodes/${node} in the state` };
  if (state?.cluster.suspend) return { reason: state.cluster.suspend.reason, by: 'cluster.yaml in the state' };
  return undefined;
}
