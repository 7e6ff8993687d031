// A node's whole plan: everything `apply` would change on one node (nftables, node settings,
// guests), planned by one pure function from data read beforehand, and how it prints.
//   planNode(view, live, gates) -> NodePlan       (pure; src/reconcile/apply.ts carries it out)
// The CLI (plan, apply, the offline review) and the agent all plan through planNode.
import type { Ruleset } from '../nft/model.js';
import type { TableRef } from '../nft/transaction.js';
import type { BaseChainInfo } from '../nft/backend.js';
import type { RunningGuest } from '../guests/driver.js';
import type { NodeView } from '../render/node-view.js';
import { ownedTables, renderView } from '../render/render.js';
import type { NftPlanned } from '../reconcile/nft.js';
import { planNft } from './nft-plan.js';
import { formatNftPlanText, LIVE_DESIRED, nftPlanJson, type DiffLabels } from './format.js';
import { formatGuestPlanText, guestChanges, NO_LIVE, planGuests, type GuestPlan } from '../reconcile/guests.js';
import { keptDepartures, type Departure, type LiveGates } from '../reconcile/live-migration.js';
import { planNodeSettings, type SettingsPlanned } from '../settings/reconcile.js';
import type { LiveSettings } from '../settings/plan.js';
import { formatSettingsPlanText, settingsPlanJson } from '../settings/plan.js';
import type { Arrival } from '../agent/migration.js';
import { describeStale, formatCleanupPlanText, planConntrackCleanup, type StaleForward } from '../conntrack/cleanup.js';

export const PLAN_FORMAT = 'cgw-sync.plan/v1';

/** What was read on the node before planning (src/reconcile/live.ts), or the base state offline. */
export interface NodeLive {
  nft: Ruleset;
  /** Every base chain on the node, any table (foreign chains that may shadow ours); [] offline. */
  baseChains: BaseChainInfo[];
  settings: LiveSettings;
  /** What the guest driver lists; `{ note }` when guests are not planned (and why). */
  guests: RunningGuest[] | { note: string };
  /** Guests this node refuses to start (its guest policy), guest -> why. */
  guestRefusals?: Record<string, string>;
}

/** Migration gates, read before planning (other nodes' reports, operator releases). */
export interface Gates {
  /** Guests placed on this node that have not started here yet. */
  arrivals: Record<string, Arrival>;
  /** Guest -> why it must not start yet. */
  waits: Record<string, string>;
  /** Live migration (src/reconcile/live-migration.ts): the other side's word, this node's departures, who arrived. */
  live?: LiveGates & { arrived: string[] };
}

export const NO_GATES: Gates = { arrivals: {}, waits: {} };

/** What the agent keeps for the next cycle's migration gate; returned by planNode, never written by it. */
export interface GuestMemory {
  placement: Record<string, string>;
  arrivals: Record<string, Arrival>;
  /** Live guests this node migrates (or migrated) away, while the state places them there. */
  departures?: Record<string, Departure>;
}

export interface NodePlan {
  node: string;
  /** Git revision or content hash of the state the plan was made from, when known. */
  revision?: string;
  nft: NftPlanned;
  /** The nft correction is held back (drift policy `report`): apply leaves the tables alone. */
  nftHeld?: boolean;
  /** Forwards whose conntrack entries the nft change makes stale: deleted right after it. */
  conntrack: StaleForward[];
  settings: SettingsPlanned;
  /** Absent when guests are not planned (disabled, or the driver could not list them: see guestsNote). */
  guests?: GuestPlan;
  guestsNote?: string;
  memory: GuestMemory;
}

export interface PlanOptions {
  revision?: string;
  /** Tables to plan; default the state's owned tables. */
  owned?: TableRef[];
  /** The long-running agent's memo (src/agent/node.ts): the view's tables rendered before, and planNft remembered. */
  desired?: Ruleset;
  diff?: typeof planNft;
}

export function planNode(view: NodeView, live: NodeLive, gates: Gates = NO_GATES, opts: PlanOptions = {}): NodePlan {
  const desired = opts.desired ?? renderView(view);
  const owned = opts.owned ?? ownedTables(view.state);
  const nft: NftPlanned = { desired, live: live.nft, owned, plan: (opts.diff ?? planNft)(desired, live.nft, owned) };
  const settings = planNodeSettings(view.settings, live.settings, view.conntrackdPaths);
  const placement = Object.fromEntries(view.state.guests.map((g) => [g.name, g.node]));
  const conntrack = planConntrackCleanup(view, nft);
  const base = { node: view.node.name, ...(opts.revision !== undefined && { revision: opts.revision }), nft, conntrack, settings };
  const departures = keptDepartures(gates.live?.departures ?? {}, placement);
  const kept = Object.keys(departures).length > 0 ? { departures } : {};
  if (!Array.isArray(live.guests)) return { ...base, guestsNote: live.guests.note, memory: { placement, arrivals: gates.arrivals, ...kept } };
  const present = live.guests;
  const since = Object.fromEntries(Object.entries(gates.arrivals).map(([g, a]) => [g, a.since]));
  const guests = planGuests(view, present, (g) => gates.waits[g], new Map(Object.entries(live.guestRefusals ?? {})), { ...NO_LIVE, ...gates.live, since });
  // A guest already running here has arrived.
  const running = new Set(present.filter((r) => r.state === 'running').map((r) => r.name));
  const arrivals = Object.fromEntries(Object.entries(gates.arrivals).filter(([g]) => !running.has(g)));
  return { ...base, guests, memory: { placement, arrivals, ...kept } };
}

/** The plan with its nft correction held back (report-only drift): shown, not applied. */
export function holdNft(p: NodePlan): NodePlan {
  return { ...p, nftHeld: true, conntrack: [] };
}

/** The parts of a plan that apply would carry out. */
export function pendingWork(p: NodePlan): { nft: boolean; settings: boolean; guests: boolean } {
  return {
    nft: p.nft.plan.changes.length > 0 && !p.nftHeld,
    settings: p.settings.plan.changes.length > 0,
    guests: p.guests !== undefined && guestChanges(p.guests).length > 0,
  };
}

/** Anything at all to do (what the pre-apply hooks are asked about). */
export function hasChanges(p: NodePlan): boolean {
  const w = pendingWork(p);
  return w.nft || w.settings || w.guests;
}

/** The plan's body: nftables, settings and guests, the diffs labelled as given. */
export function formatPlanBody(p: NodePlan, labels: DiffLabels = LIVE_DESIRED): string {
  const held = p.nftHeld ? 'nftables: held back (drift policy: report); the changes below are not applied.\n' : '';
  const guests = p.guests ? formatGuestPlanText(p.guests) : p.guestsNote ? `guests: not planned: ${p.guestsNote}\n` : '';
  return `${held}${formatNftPlanText(p.nft.plan, labels)}\n${formatCleanupPlanText(p.conntrack)}${formatSettingsPlanText(p.settings.plan, labels)}${guests ? `\n${guests}` : ''}`;
}

export function formatPlanText(p: NodePlan): string {
  const rev = p.revision ? ` at revision ${p.revision}` : '';
  return `cgw-sync plan for node ${p.node}${rev}\n\n${formatPlanBody(p)}`;
}

/** The JSON document printed by `plan --json` and given to hooks (docs/plan-format.md). */
export function planJson(p: NodePlan) {
  return {
    format: PLAN_FORMAT,
    node: p.node,
    revision: p.revision ?? null,
    changed: hasChanges(p),
    nft: { ...nftPlanJson(p.nft.plan), ...(p.nftHeld && { held: true }) },
    conntrack: { cleanup: p.conntrack.map((s) => ({ ...s, summary: describeStale(s) })) },
    settings: settingsPlanJson(p.settings.plan),
    guests: p.guests ? { actions: p.guests.actions } : { actions: [], note: p.guestsNote ?? 'not planned' },
  };
}
