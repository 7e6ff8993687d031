// The edge of live migration: what the other side of a move said in its report, read before
// planning (the decisions are pure: src/reconcile/live-migration.ts). A report is untrusted
// input even when it is believed (signed by its node): only whole numbers in their ranges are
// taken from it; the address a source migrates to is the destination's guest-bridge IP from the
// state, never one from the report.
import type { ClusterState } from '../state/types.js';
import type { GuestReport } from './report.js';
import type { StatusRead } from './status-source.js';
import { isLiveMigrationPort, MAX_MIGRATION_ATTEMPTS, type Departure, type DestinationWord, type LiveGates, type SourceWord } from '../reconcile/live-migration.js';
import type { Arrival } from './migration.js';

/** A whole number in [0, max], or undefined. */
function count(v: unknown, max: number): number | undefined {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= max ? (v as number) : undefined;
}

/** What a source's report entry for `guest` says to destination `node`. */
export function sourceWord(source: string, node: string, entry: GuestReport | undefined): SourceWord {
  const m = entry?.migration;
  if (!m || m.to !== node) return { node: source, failures: 0, handedOver: false };
  const error = typeof m.error === 'string' ? m.error.slice(0, 300) : undefined;
  return { node: source, failures: count(m.failures, 1_000) ?? MAX_MIGRATION_ATTEMPTS, handedOver: m.handedOver === true, ...(error && { error }) };
}

/** The listener a destination's report entry advertises, with the address from the state; undefined when none is usable. */
export function destinationWord(dest: string, nodeIP: string, entry: GuestReport | undefined): DestinationWord | undefined {
  const inc = entry?.incoming;
  const attempt = count(inc?.attempt, MAX_MIGRATION_ATTEMPTS);
  if (!inc || !isLiveMigrationPort(inc.port) || attempt === undefined) return undefined;
  return { node: dest, target: { host: nodeIP, port: inc.port }, attempt };
}

export interface LiveGateInputs {
  node: string;
  state: ClusterState;
  /** The revision this node plans (a destination's report must be at or after it). */
  revision: string;
  /** Arrivals that do not run here yet. */
  arrivals: Record<string, Arrival>;
  /** Guests running here, ours, that the state places on another node. */
  departing: string[];
  departures: Record<string, Departure>;
  /** Operator releases (a released guest starts afresh: no migration is waited for). */
  released: (guest: string) => boolean;
  status: (node: string) => Promise<StatusRead>;
  isAtOrAfter(rev: string, since: string): Promise<boolean>;
}

/** Undefined when no guest of this node moves live (nothing to read). */
export async function readLiveGates(inp: LiveGateInputs): Promise<LiveGates | undefined> {
  const spec = (g: string) => inp.state.guests.find((x) => x.name === g);
  const qemuNode = (n: string) => inp.state.nodes.find((x) => x.name === n && x.hypervisor === 'qemu');
  const arriving: Record<string, SourceWord> = {};
  for (const [g, arrival] of Object.entries(inp.arrivals)) {
    const from = arrival.from;
    if (spec(g)?.migration !== 'live' || !from || !qemuNode(from) || inp.released(g)) continue;
    const { status } = await inp.status(from);
    arriving[g] = sourceWord(from, inp.node, status?.guests.find((x) => x.name === g));
  }
  const leaving: Record<string, DestinationWord> = {};
  for (const g of inp.departing) {
    const to = spec(g);
    const dest = to?.migration === 'live' ? qemuNode(to.node) : undefined;
    if (!dest) continue;
    const { status } = await inp.status(dest.name);
    if (!status?.appliedRevision || !(await inp.isAtOrAfter(status.appliedRevision, inp.revision))) continue;
    const word = destinationWord(dest.name, dest.guestBridge.nodeIP, status.guests.find((x) => x.name === g));
    if (word) leaving[g] = word;
  }
  const live = Object.keys(arriving).length + inp.departing.length + Object.keys(inp.departures).length > 0;
  return live ? { arriving, leaving, departures: inp.departures } : undefined;
}
