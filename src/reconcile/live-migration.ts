// Live migration of a guest between two qemu nodes, decided from data (pure). The nodes talk only
// through their status reports, as for every move:
//   destination B  the state places a `migration: live` guest here while its source A may still run
//                  it: B starts a destination qemu (-incoming) listening on its guest-bridge IP and a
//                  port of the migration range, and reports it (`incoming` in its guest entry);
//   source A       reads B's report (believed only as every report is: signatures where configured),
//                  migrates the running guest to that listener over QMP and reports the handover, or
//                  the failure (the guest keeps running on A: never two copies, never none because
//                  of a failure); B then starts a new listener for the next attempt, at most
//                  MAX_MIGRATION_ATTEMPTS in all. The listener carries the attempt it was started
//                  for, so A never migrates twice to the same listener.
// A source node that is dead is released as before (`cgw-sync guest release`): B replaces its
// waiting destination by a fresh start.
import { createHash } from 'node:crypto';
import type { IncomingListen, MigrationTarget, RunningGuest } from '../guests/driver.js';
import type { GuestSpec, NodeSpec } from '../state/types.js';

/** The TCP ports a destination listens on (`table bridge <migration>` guards exactly these). */
export const MIGRATION_PORTS = { first: 47100, last: 47355 } as const;

/** Failed live migrations of one move before both nodes stop trying (the guest stays on its source). */
export const MAX_MIGRATION_ATTEMPTS = 3;

/** How long the source waits for one migration to complete before cancelling it. */
export const MIGRATION_TIMEOUT_MS = 120_000;

/** What the source node's report says about a live guest moving here. */
export interface SourceWord {
  node: string;
  /** Its failed attempts to migrate the guest to this node. */
  failures: number;
  /** Its last failure, as it reported it. */
  error?: string;
  /** It reports that it handed the guest over to this node. */
  handedOver: boolean;
}

/** The destination node's listener for a live guest leaving this node, as its report gives it. */
export interface DestinationWord {
  node: string;
  /** The address from the state (the destination's guest-bridge IP), the port from its report. */
  target: MigrationTarget;
  attempt: number;
}

/** The source's memory of a guest it migrates: kept while the state places the guest on `to`. */
export interface Departure {
  to: string;
  failures: number;
  error?: string;
  /** Handed over (the migration completed): the source reports it until the placement changes. */
  handedOver?: boolean;
}

/** What the live-migration part of planning reads (src/agent/live-migration.ts gathers it). */
export interface LiveGates {
  /** Guests moving here live, whose source node is known: its word (failures, handover). */
  arriving: Record<string, SourceWord>;
  /** Guests leaving this node live whose destination listens, at a revision at or after ours. */
  leaving: Record<string, DestinationWord>;
  /** This node's departures as the last cycle left them. */
  departures: Record<string, Departure>;
}

export const NO_LIVE_GATES: LiveGates = { arriving: {}, leaving: {}, departures: {} };

export function isLiveMigrationPort(port: unknown): port is number {
  return Number.isInteger(port) && (port as number) >= MIGRATION_PORTS.first && (port as number) <= MIGRATION_PORTS.last;
}

/**
 * The port a guest's destination listens on: derived from its name (the same on every cycle),
 * moved on past the ports other waiting destinations on this node already hold.
 */
export function migrationPort(guest: string, taken: ReadonlySet<number>): number {
  const size = MIGRATION_PORTS.last - MIGRATION_PORTS.first + 1;
  const start = createHash('sha256').update(guest).digest().readUInt16BE(0) % size;
  for (let i = 0; i < size; i++) {
    const port = MIGRATION_PORTS.first + ((start + i) % size);
    if (!taken.has(port)) return port;
  }
  throw new Error(`no free live-migration port in ${MIGRATION_PORTS.first}-${MIGRATION_PORTS.last} for ${guest}`);
}

export function uriOf(t: MigrationTarget): string {
  return `tcp:${t.host}:${t.port}`;
}

const attemptOf = (n: number) => `attempt ${n + 1} of ${MAX_MIGRATION_ATTEMPTS}`;
const lastError = (w: { error?: string }) => (w.error ? ` (last: ${w.error})` : '');

/** A planned live-migration step; `kind` is the guest action it becomes. */
export type LiveStep =
  | { kind: 'incoming'; listen: IncomingListen; reason: string }
  | { kind: 'start'; replacesIncoming: true; reason: string }
  | { kind: 'cancel-incoming'; reason: string }
  | { kind: 'wait'; reason: string }
  | { kind: 'migrate-out'; to: string; target: MigrationTarget; attempt: number; reason: string }
  | { kind: 'keep'; reason: string }
  | { kind: 'none' };

/**
 * Destination side: a live guest placed here that does not run here. `wait`: why the ordinary
 * gate holds a fresh start back (undefined: it may start); `word`: its source's word (undefined:
 * no live migration can come, e.g. the source is not known or not qemu); `present`: what this
 * node runs under its name (a waiting destination, or a crashed one).
 */
export function planArrival(guest: GuestSpec, node: NodeSpec, present: RunningGuest | undefined, wait: string | undefined, word: SourceWord | undefined, since: string, taken: ReadonlySet<number>): LiveStep {
  const listening = present?.managed && present.incoming ? present.incoming : undefined;
  if (!wait) {
    if (!listening) return { kind: 'none' }; // the ordinary start
    if (word?.handedOver) return { kind: 'none' }; // the destination runs it (or is about to)
    return { kind: 'start', replacesIncoming: true, reason: `${word?.node ?? 'its previous node'} no longer runs it and handed nothing over (stopped, or released): the waiting destination is replaced by a fresh start` };
  }
  if (!word) return { kind: 'none' }; // the ordinary wait
  if (word.failures >= MAX_MIGRATION_ATTEMPTS) {
    const why = `live migration from ${word.node} failed ${word.failures} times${lastError(word)}; it keeps running on ${word.node} (move it back in Git, or set migration: stop-start)`;
    return listening ? { kind: 'cancel-incoming', reason: why } : { kind: 'wait', reason: `${why}; ${wait}` };
  }
  if (listening && listening.attempt >= word.failures) {
    return { kind: 'wait', reason: `a destination listens at ${uriOf(listening)} for ${word.node}'s live migration (${attemptOf(listening.attempt)})` };
  }
  const target = listening ?? { host: node.guestBridge.nodeIP, port: migrationPort(guest.name, taken) };
  const again = listening ? `; ${word.node}'s ${attemptOf(listening.attempt)} failed${lastError(word)}` : '';
  return {
    kind: 'incoming',
    listen: { host: target.host, port: target.port, attempt: word.failures, revision: since },
    reason: `destination for ${word.node}'s live migration listens at ${uriOf(target)} (${attemptOf(word.failures)})${again}`,
  };
}

/**
 * Source side: a guest that runs here, is ours, and is placed on `to` with `migration: live`.
 * Migrates to the destination's listener of the next attempt; otherwise it keeps running here.
 */
export function planDeparture(to: string, departure: Departure | undefined, dest: DestinationWord | undefined): LiveStep {
  const failures = departure?.to === to ? departure.failures : 0;
  if (failures >= MAX_MIGRATION_ATTEMPTS) {
    return { kind: 'keep', reason: `placed on ${to}, but live migration failed ${failures} times${lastError(departure ?? {})}: it keeps running here (move it back in Git, or set migration: stop-start)` };
  }
  if (dest && dest.node === to && dest.attempt === failures) {
    return { kind: 'migrate-out', to, target: dest.target, attempt: failures, reason: `placed on ${to}: live migration to ${uriOf(dest.target)} (${attemptOf(failures)})` };
  }
  return { kind: 'keep', reason: `placed on ${to}: keeps running here until ${to}'s destination listens for the live migration (${attemptOf(failures)})${lastError(departure?.to === to ? departure : {})}` };
}

/** Departures worth keeping: the state still places the guest on the node it was leaving for. */
export function keptDepartures(departures: Record<string, Departure>, placement: Record<string, string>): Record<string, Departure> {
  return Object.fromEntries(Object.entries(departures).filter(([g, d]) => placement[g] === d.to));
}

/** A departure after a migrate-out: handed over, or one failure more. */
export function afterMigration(previous: Departure | undefined, to: string, ok: boolean, detail: string): Departure {
  const failures = previous?.to === to ? previous.failures : 0;
  return ok ? { to, failures, handedOver: true } : { to, failures: failures + 1, error: detail };
}
