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
import type { GuestDriver, RunningGuest } from '../guests/driver.js';
import { desiredFingerprint } from '../guests/driver.js';
import type { NodeView } from '../render/node-view.js';

export type GuestActionKind = 'start' | 'stop' | 'restart' | 'wait' | 'config-differs' | 'unmanaged' | 'refused';

export interface GuestAction {
  guest: string;
  action: GuestActionKind;
  reason: string;
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

export function planGuests(view: NodeView, present: RunningGuest[], gate: MigrationGate = NO_GATE, refusals: GuestRefusals = new Map()): GuestPlan {
  const { state, node, guests: desired } = view;
  const byName = new Map(present.map((r) => [r.name, r]));
  const actions: GuestAction[] = [];

  for (const g of desired) {
    const r = byName.get(g.name);
    const alive = r && ALIVE.has(r.state);
    const refused = refusals.get(g.name);
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
    const elsewhere = state.guests.find((g) => g.name === r.name)?.node;
    const where = elsewhere ? `placed on ${elsewhere}` : 'not in the state';
    if (r.managed) actions.push({ guest: r.name, action: 'stop', reason: `${where}; ${r.state} here` });
    else if (ALIVE.has(r.state)) actions.push({ guest: r.name, action: 'unmanaged', reason: `${where}, yet runs here without cgw-sync; stop it by hand` });
  }
  return { actions: actions.sort((a, b) => (a.guest < b.guest ? -1 : a.guest > b.guest ? 1 : 0)), present };
}

export function guestChanges(plan: GuestPlan): GuestAction[] {
  return plan.actions.filter((a) => a.action === 'start' || a.action === 'stop' || a.action === 'restart');
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

/** Stops first (a removed guest goes before the network changes), as the cycle orders them. */
export async function applyGuestStops(plan: GuestPlan, ctx: GuestApplyContext): Promise<GuestOutcome[]> {
  const out: GuestOutcome[] = [];
  for (const a of plan.actions.filter((x) => x.action === 'stop')) {
    out.push(await attempt(a.guest, 'stop', async () => `stopped (${await ctx.driver.stop(a.guest, { timeoutMs: ctx.stopTimeoutMs })})`));
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
          await ctx.driver.start(spec(a.guest), startCtx);
          return 'started';
        }),
      );
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
  const sign: Record<GuestActionKind, string> = { start: '+', stop: '-', restart: '-/+', wait: '…', 'config-differs': '!', unmanaged: '?', refused: 'x' };
  // A waiting guest is a start that waits: say so in those words.
  const line = (a: GuestAction) => (a.action === 'wait' ? `  ${sign.wait} start ${a.guest}, not yet: ${a.reason}` : `  ${sign[a.action]} ${a.guest}: ${a.action} (${a.reason})`);
  return ['guests:', ...plan.actions.map(line)].join('\n') + '\n';
}
