// Reconciling the guests of one node: run exactly the guests the state places here.
//
// planGuests is pure: (desired guests, what the driver lists, a migration gate) -> actions.
// applyGuests carries out stops or starts one guest at a time; a failure is recorded for that
// guest and never blocks the others (or the network apply around it).
//
// Safety rule for moves: a guest placed here is started only when the migration gate says no
// other node may still run it (see agent/migration.ts). A guest running here that cgw-sync did
// not start is never stopped by it, only reported.
import type { GuestSpec } from '../state/types.js';
import type { GuestDriver, IncomingListen, MigrationTarget, RunningGuest } from '../guests/driver.js';
import { canMigrateLive, desiredFingerprint } from '../guests/driver.js';
import type { NodeView } from '../render/node-view.js';
import { MIGRATION_TIMEOUT_MS, NO_LIVE_GATES, planArrival, planDeparture, uriOf, type LiveGates, type LiveStep } from './live-migration.js';

/**
 * Live migration adds (src/reconcile/live-migration.ts): `incoming` (start a destination that
 * listens), `cancel-incoming` (stop a destination that still waits), `migrate-out` (hand a running
 * guest to the destination), `keep` (placed elsewhere, keeps running here for now) and `arrived`
 * (came here by live migration since the last cycle: the point to announce it on the network).
 */
export type GuestActionKind = 'start' | 'stop' | 'restart' | 'wait' | 'config-differs' | 'unmanaged' | 'refused' | 'incoming' | 'cancel-incoming' | 'migrate-out' | 'keep' | 'arrived';

export interface GuestAction {
  guest: string;
  action: GuestActionKind;
  reason: string;
  /** incoming: where the destination listens, for which attempt and revision. */
  listen?: IncomingListen;
  /** migrate-out: the destination node and its listener. */
  to?: string;
  target?: MigrationTarget;
  /** start: a waiting destination of this guest is stopped first. */
  replacesIncoming?: boolean;
}

/** What planGuests needs for live migration besides the ordinary gate. */
export interface LiveInputs extends LiveGates {
  /** Arrival -> the first revision that placed it here (the destination's listener records it). */
  since: Record<string, string>;
  /** Live guests that arrived here since the last cycle (they run now). */
  arrived: string[];
}

export const NO_LIVE: LiveInputs = { ...NO_LIVE_GATES, since: {}, arrived: [] };

function liveAction(guest: string, step: Exclude<LiveStep, { kind: 'none' }>): GuestAction {
  const { kind, ...rest } = step;
  return { guest, action: kind, ...rest };
}

export interface GuestPlan {
  actions: GuestAction[];
  /** What the driver listed, for the report. */
  present: RunningGuest[];
}

/** Says whether a guest placed on this node may start now; a string is the reason to wait. */
export type MigrationGate = (guest: string) => string | undefined;

export const NO_GATE: MigrationGate = () => undefined;

/** Guests this node must not start (guests/policy.ts guestRefusal, read at the edge): name -> message. */
export type GuestRefusals = ReadonlyMap<string, string>;

const ALIVE = new Set(['running', 'paused', 'unknown']);

export function planGuests(view: NodeView, present: RunningGuest[], gate: MigrationGate = NO_GATE, refusals: GuestRefusals = new Map(), live: LiveInputs = NO_LIVE): GuestPlan {
  const { state, node, guests: desired } = view;
  const byName = new Map(present.map((r) => [r.name, r]));
  const actions: GuestAction[] = [];
  // Ports held by waiting destinations here: a new one takes another.
  const taken = new Set(present.flatMap((r) => (r.incoming ? [r.incoming.port] : [])));

  for (const g of desired) {
    const r = byName.get(g.name);
    const alive = r && ALIVE.has(r.state);
    const refused = refusals.get(g.name);
    if (g.migration === 'live' && !refused && !(r && alive && !r.incoming)) {
      const step = planArrival(g, node, r, gate(g.name), live.arriving[g.name], live.since[g.name] ?? 'unknown', taken);
      if (step.kind === 'incoming') taken.add(step.listen.port);
      if (step.kind !== 'none') {
        actions.push(liveAction(g.name, step));
        continue;
      }
    }
    if (live.arrived.includes(g.name) && r?.state === 'running' && r.managed) {
      actions.push({ guest: g.name, action: 'arrived', reason: 'came here by live migration' });
      continue;
    }
    const leftAsItIs = r && alive && (!r.managed || r.fingerprint === desiredFingerprint(g, node));
    if (refused && !leftAsItIs) {
      // A refused guest is never started or restarted (it keeps running if it runs).
      actions.push({ guest: g.name, action: 'refused', reason: refused });
    } else if (r && alive && !r.managed) {
      actions.push({ guest: g.name, action: 'unmanaged', reason: `runs here but was not started by cgw-sync (${r.state}); left alone` });
    } else if (r && alive) {
      if (r.fingerprint !== desiredFingerprint(g, node)) {
        actions.push(
          g.restartOnChange
            ? { guest: g.name, action: 'restart', reason: 'configuration differs from the running guest (restartOnChange)' }
            : { guest: g.name, action: 'config-differs', reason: 'configuration differs from the running guest; set restartOnChange to restart it' },
        );
      }
    } else {
      const blocker = gate(g.name);
      const what = r ? `is ${r.state}` : 'is not running';
      actions.push(blocker ? { guest: g.name, action: 'wait', reason: `${what}; ${blocker}` } : { guest: g.name, action: 'start', reason: what });
    }
  }

  const wanted = new Set(desired.map((g) => g.name));
  for (const r of present) {
    if (wanted.has(r.name)) continue;
    const spec = state.guests.find((g) => g.name === r.name);
    const elsewhere = spec?.node;
    if (spec?.migration === 'live' && r.managed && r.state === 'running' && !r.incoming && node.hypervisor === 'qemu') {
      const step = planDeparture(spec.node, live.departures[r.name], live.leaving[r.name]);
      if (step.kind !== 'none') {
        actions.push(liveAction(r.name, step));
        continue;
      }
    }
    const where = elsewhere ? `placed on ${elsewhere}` : 'not in the state';
    if (r.managed) actions.push({ guest: r.name, action: 'stop', reason: `${where}; ${r.state} here` });
    else if (ALIVE.has(r.state)) actions.push({ guest: r.name, action: 'unmanaged', reason: `${where}, yet runs here without cgw-sync; stop it by hand` });
  }
  return { actions: actions.sort((a, b) => (a.guest < b.guest ? -1 : a.guest > b.guest ? 1 : 0)), present };
}

/** Actions the applier carries out (the others are only shown and reported). */
const CHANGES = new Set<GuestActionKind>(['start', 'stop', 'restart', 'incoming', 'cancel-incoming', 'migrate-out', 'arrived']);

export function guestChanges(plan: GuestPlan): GuestAction[] {
  return plan.actions.filter((a) => CHANGES.has(a.action));
}

export interface GuestOutcome {
  guest: string;
  action: GuestActionKind;
  ok: boolean;
  detail: string;
}

export interface GuestApplyContext {
  view: NodeView;
  driver: GuestDriver;
  stopTimeoutMs: number;
}

async function attempt(guest: string, action: GuestActionKind, fn: () => Promise<string>): Promise<GuestOutcome> {
  try {
    return { guest, action, ok: true, detail: await fn() };
  } catch (e) {
    return { guest, action, ok: false, detail: (e as Error).message };
  }
}

/** The driver's live migration, or why there is none. */
function migrator(driver: GuestDriver) {
  if (!canMigrateLive(driver)) throw new Error(`the ${driver.kind} driver cannot live-migrate`);
  return driver;
}

/** Stop a destination that still waits; say so when it turned out to run the guest already. */
async function stopWaiting(driver: GuestDriver, guest: string): Promise<boolean> {
  return migrator(driver).stopIncoming(guest);
}

/** Stops first (a removed guest goes before the network changes), as the cycle orders them. */
export async function applyGuestStops(plan: GuestPlan, ctx: GuestApplyContext): Promise<GuestOutcome[]> {
  const out: GuestOutcome[] = [];
  for (const a of plan.actions) {
    if (a.action === 'stop') {
      out.push(await attempt(a.guest, 'stop', async () => `stopped (${await ctx.driver.stop(a.guest, { timeoutMs: ctx.stopTimeoutMs })})`));
    } else if (a.action === 'cancel-incoming') {
      out.push(await attempt(a.guest, a.action, async () => ((await stopWaiting(ctx.driver, a.guest)) ? 'waiting destination stopped' : 'the destination runs the guest already: left alone')));
    }
  }
  return out;
}

/** Starts and restarts, after the network is in place so a new guest's forwards exist first. */
export async function applyGuestStarts(plan: GuestPlan, ctx: GuestApplyContext): Promise<GuestOutcome[]> {
  const { node, state, guests } = ctx.view;
  const spec = (name: string) => guests.find((g) => g.name === name) as GuestSpec;
  const startCtx = { node, cluster: state.cluster };
  const out: GuestOutcome[] = [];
  for (const a of plan.actions) {
    if (a.action === 'start') {
      out.push(
        await attempt(a.guest, 'start', async () => {
          if (a.replacesIncoming && !(await stopWaiting(ctx.driver, a.guest))) return 'the waiting destination runs the guest already (migrated): not started again';
          await ctx.driver.start(spec(a.guest), startCtx);
          return a.replacesIncoming ? 'started (the waiting destination replaced)' : 'started';
        }),
      );
    } else if (a.action === 'incoming' && a.listen) {
      const listen = a.listen;
      out.push(
        await attempt(a.guest, 'incoming', async () => {
          const d = migrator(ctx.driver);
          // A destination of an earlier attempt goes first (it has nothing: the source failed).
          if ((await d.list()).some((r) => r.name === a.guest && r.incoming) && !(await d.stopIncoming(a.guest))) return 'the destination runs the guest already (migrated)';
          await d.startIncoming(spec(a.guest), startCtx, listen);
          return `listening at ${uriOf(listen)} (attempt ${listen.attempt + 1})`;
        }),
      );
    } else if (a.action === 'migrate-out' && a.target) {
      const target = a.target;
      out.push(
        await attempt(a.guest, 'migrate-out', async () => {
          const r = await migrator(ctx.driver).migrateOut(a.guest, target, { timeoutMs: MIGRATION_TIMEOUT_MS });
          return `handed over to ${a.to} at ${uriOf(target)} (qemu downtime ${r.downtimeMs} ms, total ${r.totalMs} ms)`;
        }),
      );
    } else if (a.action === 'arrived') {
      // The one point where a guest that came by live migration is known to run here: the applier
      // announces its gateway next (src/guests/announce.ts), as for a guest that started.
      out.push({ guest: a.guest, action: 'arrived', ok: true, detail: 'arrived by live migration' });
    } else if (a.action === 'restart') {
      out.push(
        await attempt(a.guest, 'restart', async () => {
          const how = await ctx.driver.stop(a.guest, { timeoutMs: ctx.stopTimeoutMs });
          await ctx.driver.start(spec(a.guest), startCtx);
          return `restarted (stop ${how})`;
        }),
      );
    }
  }
  return out;
}

export function formatGuestPlanText(plan: GuestPlan): string {
  if (plan.actions.length === 0) return 'guests: no changes.\n';
  const sign: Record<GuestActionKind, string> = {
    start: '+',
    stop: '-',
    restart: '-/+',
    wait: '…',
    'config-differs': '!',
    unmanaged: '?',
    refused: 'x',
    incoming: '+~',
    'cancel-incoming': '-~',
    'migrate-out': '~>',
    keep: '=',
    arrived: '~+',
  };
  // A waiting guest is a start that waits: say so in those words.
  const line = (a: GuestAction) => (a.action === 'wait' ? `  ${sign.wait} start ${a.guest}, not yet: ${a.reason}` : `  ${sign[a.action]} ${a.guest}: ${a.action} (${a.reason})`);
  return ['guests:', ...plan.actions.map(line)].join('\n') + '\n';
}
