// Safe guest migration. When the state moves a guest from node A to node B, B must not start it
// until A has stopped it, or two nodes would run the same disk. A says so in its status branch;
// B reads it and starts the guest only once A reports, at a revision at or after the move, that
// the guest does not run there. A node that is down or silent blocks the start; an operator can
// release a guest from a dead node (`cgw-sync guest release <guest> --from <node> --config <file>`).
// A node that does not remember where a guest was (a fresh node, a guest new to the state) asks
// the state's Git history: a guest never placed on another node starts at once, one placed
// elsewhere waits for those nodes. Without a readable history, every other node must confirm.
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { ClusterState } from '../state/types.js';
import type { Gates } from '../plan/plan.js';
import type { StatusRead, StatusReader } from './status-source.js';
import type { PlacementHistory } from '../git/placement-history.js';
import { shellQuote } from '../git/ssh.js';
import { readLiveGates } from './live-migration.js';
import { NO_LIVE_GATES, type Departure } from '../reconcile/live-migration.js';

/** A guest placed on this node that has not started here yet. */
export interface Arrival {
  /** Where the last applied state placed it; null when this node does not know (then every other node must confirm). */
  from: string | null;
  /** The first revision that placed it here. */
  since: string;
}

/**
 * Track arrivals: guests that the new state places here but the previous one did not. A guest
 * that already lived here (and perhaps crashed) is not an arrival.
 */
export function updateArrivals(
  previous: Record<string, string> | undefined,
  state: ClusterState,
  node: string,
  revision: string,
  arrivals: Record<string, Arrival>,
): Record<string, Arrival> {
  const next: Record<string, Arrival> = {};
  for (const g of state.guests.filter((x) => x.node === node)) {
    if (arrivals[g.name]) next[g.name] = arrivals[g.name] as Arrival;
    else if (previous?.[g.name] !== node) next[g.name] = { from: previous?.[g.name] ?? null, since: revision };
  }
  return next;
}

export function placementOf(state: ClusterState): Record<string, string> {
  return Object.fromEntries(state.guests.map((g) => [g.name, g.node]));
}

/** Guest states in a report that mean "it may still be using its disk". */
const HOLDS_DISK = new Set(['running', 'paused', 'unknown']);

export interface GateInputs {
  node: string;
  state: ClusterState;
  arrivals: Record<string, Arrival>;
  releases: Record<string, Release>;
  /** Another node's latest status (null when it never reported, or not believably); undefined: no status source is configured. */
  readStatus: StatusReader | undefined;
  /** Whether revision `rev` is `since` or a descendant of it. */
  isAtOrAfter(rev: string, since: string): Promise<boolean>;
  /** Where the state's history placed each guest (read only when an arrival's previous node is unknown); undefined: no history. */
  placementHistory?: () => Promise<PlacementHistory | undefined>;
  /** The agent configuration file, for the release command the messages give. */
  configFile?: string;
}

/** The nodes whose word an arrival waits for; `why` says why all others when its previous node is unknown. */
export interface Confirmers {
  nodes: string[];
  why?: string;
}

/**
 * Who must confirm that `guest` stopped before this node starts it: the node it moved from; if
 * this node does not know that, the other nodes the state's history ever placed it on (none: a
 * first placement, it starts at once); without a complete history, every other node. Nodes no
 * longer in the state are not asked (they have no agent that reports).
 */
export function confirmersOf(guest: string, arrival: Arrival, node: string, state: ClusterState, history: PlacementHistory | undefined): Confirmers {
  if (arrival.from) return { nodes: [arrival.from] };
  const others = state.nodes.map((n) => n.name).filter((n) => n !== node);
  const unknown = `this node has no record of where ${guest} was placed before`;
  if (!history) return { nodes: others, why: `${unknown}, and its source is a folder without Git history to tell` };
  if (history.incomplete) return { nodes: others, why: `${unknown}, and the state's Git history could not tell: ${history.incomplete}` };
  const placed = new Set(history.nodesOf(guest));
  return { nodes: others.filter((n) => placed.has(n)) };
}

/** The whole command that lets this node start `guest` without `from`'s word. */
export function releaseCommand(guest: string, from: string, configFile: string | undefined): string {
  const config = configFile ? shellWord(configFile) : 'FILE';
  return `cgw-sync guest release ${shellWord(guest)} --from ${shellWord(from)} --config ${config}`;
}

/** A word a shell reads back as itself (quoted only when it needs to be, so the usual command reads plainly). */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : shellQuote(s);
}

/** Each node's report read at most once per planning round (a failed read counts as no report). */
function cachedStatus(read: StatusReader | undefined): (node: string) => Promise<StatusRead> {
  const cache = new Map<string, Promise<StatusRead>>();
  return (n) => {
    if (!cache.has(n)) cache.set(n, read ? read(n).catch(() => ({ status: null })) : Promise.resolve({ status: null }));
    return cache.get(n) as Promise<StatusRead>;
  };
}

/** Guest -> why it must wait, for every arrival that may not start yet. */
export async function buildMigrationGate(inp: GateInputs, status = cachedStatus(inp.readStatus)): Promise<Record<string, string>> {
  const read = inp.readStatus;
  let history: Promise<PlacementHistory | undefined> | undefined;
  const placements = () => {
    history ??= inp.placementHistory ? inp.placementHistory() : Promise.resolve(undefined);
    return history;
  };
  const blockers = new Map<string, string>();
  for (const [guest, arrival] of Object.entries(inp.arrivals)) {
    const confirm = confirmersOf(guest, arrival, inp.node, inp.state, arrival.from ? undefined : await placements());
    const all = confirm.why ? `; every other node must confirm: ${confirm.why}` : '';
    for (const other of confirm.nodes) {
      if (inp.releases[guest]?.from === other) continue;
      const { status: s, refused } = await status(other);
      const release = `\`${releaseCommand(guest, other, inp.configFile)}\` overrides if that node is dead`;
      let why: string | undefined;
      if (!read) why = `waits for node ${other}'s report that it stopped ${guest}, and no status source is configured to read it from (status.url, an http(s) source, or status.dir with {node})${all}; ${release}`;
      else if (!s) why = `waiting for node ${other}: it has not reported (${refused ?? 'down or silent?'})${all}; ${release}`;
      else if (!s.appliedRevision || !(await inp.isAtOrAfter(s.appliedRevision, arrival.since)))
        why = `waiting for node ${other} to apply revision ${arrival.since.slice(0, 12)} (it reports ${s.appliedRevision?.slice(0, 12) ?? 'none'} at ${s.time})${all}; ${release}`;
      else if (s.guests.some((g) => g.name === guest && HOLDS_DISK.has(g.state)))
        why = `waiting for node ${other} to stop it (reported ${s.guests.find((g) => g.name === guest)?.state} at ${s.time})`;
      if (why) {
        blockers.set(guest, why);
        break;
      }
    }
  }
  return Object.fromEntries(blockers);
}

/**
 * The migration gates of one planning round, read before planning: this node's arrivals (from
 * what it remembers of the previous placement) and, for each, the other nodes' reports and the
 * operator's releases. Guests already running here are not arrivals.
 */
export async function readGates(
  inp: Omit<GateInputs, 'arrivals'> & {
    revision: string;
    memory: { placement?: Record<string, string>; arrivals?: Record<string, Arrival>; departures?: Record<string, Departure> };
    running: string[];
    /** Guests running here, ours, that the state places on another node (live migration's sources). */
    departing?: string[];
  },
): Promise<Gates> {
  const arrivals = updateArrivals(inp.memory.placement, inp.state, inp.node, inp.revision, inp.memory.arrivals ?? {});
  // A live guest that waited here last cycle and runs now came by migration (a start clears its arrival).
  const arrived = inp.running.filter((g) => arrivals[g] && inp.memory.arrivals?.[g] && inp.state.guests.some((x) => x.name === g && x.node === inp.node && x.migration === 'live'));
  for (const g of inp.running) delete arrivals[g];
  const status = cachedStatus(inp.readStatus);
  const waits = Object.keys(arrivals).length === 0 ? {} : await buildMigrationGate({ ...inp, arrivals }, status);
  const live = await readLiveGates({
    node: inp.node,
    state: inp.state,
    revision: inp.revision,
    arrivals,
    departing: inp.departing ?? [],
    departures: inp.memory.departures ?? {},
    released: (g) => inp.releases[g] !== undefined,
    status,
    isAtOrAfter: inp.isAtOrAfter,
  });
  return { arrivals, waits, ...((live || arrived.length > 0) && { live: { ...(live ?? NO_LIVE_GATES), arrived } }) };
}

// --- operator releases -------------------------------------------------------------------

export interface Release {
  from: string;
  at: string;
}

function releasesFile(stateDir: string): string {
  return path.join(stateDir, 'releases.json');
}

export async function readReleases(stateDir: string): Promise<Record<string, Release>> {
  try {
    return JSON.parse(await readFile(releasesFile(stateDir), 'utf8')) as Record<string, Release>;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw e;
  }
}

export async function writeReleases(stateDir: string, releases: Record<string, Release>): Promise<void> {
  await mkdir(stateDir, { recursive: true });
  await writeFile(releasesFile(stateDir), `${JSON.stringify(releases, null, 2)}\n`);
}

/** `cgw-sync guest release`: let this node start `guest` without `from`'s confirmation. */
export async function releaseGuest(stateDir: string, guest: string, from: string, at = new Date().toISOString()): Promise<void> {
  const releases = await readReleases(stateDir);
  releases[guest] = { from, at };
  await writeReleases(stateDir, releases);
}
