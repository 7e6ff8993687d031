// The one applier: carries out a NodePlan (src/plan/plan.ts) in a fixed order and returns what
// happened, step by step; it decides nothing itself.
//   0. precheck   what can be known to fail before anything changes (settings keys)
//   1. guest stops (a removed guest goes before the network changes)
//   2. nft        one transaction, read back
//   3. settings   sysctls, conntrackd.conf, conntrackd; read back. If this fails after the nft
//                 transaction committed, the tables are put back to what they were before, in
//                 one transaction, and verified: a failed apply leaves the node as it was.
//   4. conntrack  stale entries of removed or retargeted forwards deleted (src/conntrack), once the
//                 new tables are known to stay; a failure here is reported, nothing is rolled back
//   5. guest starts (after the network, so a new guest's forwards exist before it boots), each
//                 started guest then told its gateway (src/guests/announce.ts)
import type { NftBackend } from '../nft/backend.js';
import type { Ruleset } from '../nft/model.js';
import type { TableRef } from '../nft/transaction.js';
import { planNft, planToTransaction } from '../plan/nft-plan.js';
import { summaryLine } from '../plan/format.js';
import { pendingWork, type NodePlan } from '../plan/plan.js';
import type { GuestDriver } from '../guests/driver.js';
import type { NodeView } from '../render/node-view.js';
import { applyNodeSettings, settingsPrecheck, type SettingsPort } from '../settings/reconcile.js';
import { applyNodeNft } from './nft.js';
import { applyGuestStarts, applyGuestStops, type GuestOutcome } from './guests.js';
import { cleanStale, type ConntrackPort } from '../conntrack/cli.js';
import { formatCleanupOutcomes, type CleanupOutcome } from '../conntrack/cleanup.js';
import { announcementLines, announceStarted, type Announcement, type GatewayAnnouncer } from '../guests/announce.js';

export interface Effectors {
  nft: NftBackend;
  settings: SettingsPort;
  /** Absent: guests are not touched (the plan's guest part is then only shown). */
  guests?: { driver: GuestDriver; view: NodeView; stopTimeoutMs: number };
  /** Deletes stale conntrack entries in the node's namespace; absent: the plan's cleanup is only shown. */
  conntrack?: ConntrackPort;
  /** Announces the gateway to a guest that started (gratuitous ARP); absent: not announced (tests with fakes). */
  announce?: GatewayAnnouncer;
  /** Runs just before the nft transaction (the agent records what it is about to put in place). */
  beforeNft?: () => Promise<void>;
  /** planNft for the read-back (the agent's remembered one: its health round plans the same pair again). */
  diff?: typeof planNft;
}

export type StepResult = { status: 'skipped' } | { status: 'done' } | { status: 'failed'; error: string };

export interface ApplyResult {
  precheck: StepResult;
  guestStops: GuestOutcome[];
  nft: StepResult;
  settings: StepResult;
  /** The nft tables put back after a settings failure. */
  rollback: StepResult;
  /** Stale entries deleted per forward after the transaction, and the deletions that failed. */
  conntrack: { cleaned: CleanupOutcome[]; errors: string[] };
  guestStarts: GuestOutcome[];
  /** The gateway announced to each guest that started. */
  announcements: Announcement[];
}

const SKIPPED: StepResult = { status: 'skipped' };
const DONE: StepResult = { status: 'done' };
const failed = (e: unknown): StepResult => ({ status: 'failed', error: (e as Error).message });

async function step(run: boolean, fn: () => Promise<unknown>): Promise<StepResult> {
  if (!run) return SKIPPED;
  try {
    await fn();
    return DONE;
  } catch (e) {
    return failed(e);
  }
}

/** Put the owned tables back to `previous` in one transaction, then check that they are. */
export async function restoreTables(previous: Ruleset, owned: TableRef[], backend: NftBackend): Promise<void> {
  const back = planNft(previous, await backend.list(owned), owned);
  if (back.changes.length > 0) await backend.run(planToTransaction(back));
  const left = planNft(previous, await backend.list(owned), owned);
  if (left.changes.length > 0) throw new Error(`the tables differ from the previous ones after the rollback: ${summaryLine(left)}`);
}

export async function applyNodePlan(plan: NodePlan, fx: Effectors): Promise<ApplyResult> {
  const work = pendingWork(plan);
  const problem = work.settings ? settingsPrecheck(plan.settings) : undefined;
  const result: ApplyResult = { precheck: problem ? { status: 'failed', error: problem } : work.settings ? DONE : SKIPPED, guestStops: [], nft: SKIPPED, settings: SKIPPED, rollback: SKIPPED, conntrack: { cleaned: [], errors: [] }, guestStarts: [], announcements: [] };
  if (problem) return result;
  const guests = fx.guests && plan.guests && { ...fx.guests, plan: plan.guests };
  if (guests) result.guestStops = await applyGuestStops(guests.plan, guests);
  result.nft = await step(work.nft, async () => {
    await fx.beforeNft?.();
    await applyNodeNft(plan.nft, fx.nft, fx.diff);
  });
  if (result.nft.status === 'failed') return result;
  result.settings = await step(work.settings, () => applyNodeSettings(plan.settings, fx.settings));
  if (result.settings.status === 'failed') {
    result.rollback = await step(result.nft.status === 'done', () => restoreTables(plan.nft.live, plan.nft.owned, fx.nft));
    return result;
  }
  if (result.nft.status === 'done' && fx.conntrack && plan.conntrack.length > 0) {
    const c = await cleanStale(plan.conntrack, fx.conntrack);
    result.conntrack = { cleaned: c.outcomes, errors: c.errors };
  }
  if (guests) result.guestStarts = await applyGuestStarts(guests.plan, guests);
  if (guests && fx.announce) result.announcements = await announceStarted(result.guestStarts, guests.view, fx.announce);
  return result;
}

/** Every failure in a result, as report lines. */
export function applyErrors(r: ApplyResult): string[] {
  const errors: string[] = [];
  if (r.precheck.status === 'failed') errors.push(`node settings: ${r.precheck.error}`);
  if (r.nft.status === 'failed') errors.push(`apply failed, the previous ruleset is intact: ${r.nft.error}`);
  if (r.settings.status === 'failed') errors.push(`node settings: ${r.settings.error}`);
  if (r.rollback.status === 'done') errors.push('the nft tables were put back to the previous ruleset (rolled back after the settings failure)');
  if (r.rollback.status === 'failed') errors.push(`rollback of the nft tables failed: ${r.rollback.error}`);
  for (const e of r.conntrack.errors) errors.push(`conntrack cleanup failed (the new tables are in place): ${e}`);
  for (const o of [...r.guestStops, ...r.guestStarts].filter((x) => !x.ok)) errors.push(`guest ${o.guest}: ${o.action} failed: ${o.detail}`);
  errors.push(...announcementLines(r.announcements).errors);
  return errors;
}

/** What the apply cleaned and announced, as report lines. */
export function applyNotes(r: ApplyResult): string[] {
  return [...formatCleanupOutcomes(r.conntrack.cleaned), ...announcementLines(r.announcements).notes];
}

/** The apply failed as a whole (what was planned did not take effect). Guest failures are per guest. */
export function applyFailed(r: ApplyResult): boolean {
  return [r.precheck, r.nft, r.settings].some((s) => s.status === 'failed');
}

/** Something on the node was changed. */
export function applyChanged(r: ApplyResult): boolean {
  return (r.nft.status === 'done' && r.rollback.status === 'skipped') || r.settings.status === 'done' || [...r.guestStops, ...r.guestStarts].some((o) => o.ok);
}
