// A node's whole plan: everything `apply` would change on one node, and how it prints.
// Today it holds the nftables part; guests and node files join it as they are reconciled.
import type { NftPlanned } from '../reconcile/nft.js';
import { formatNftPlanText, nftPlanJson } from './format.js';
import { formatGuestPlanText, guestChanges, type GuestPlan } from '../reconcile/guests.js';
import type { SettingsPlanned } from '../settings/reconcile.js';
import { formatSettingsPlanText, settingsPlanJson } from '../settings/plan.js';

export const PLAN_FORMAT = 'cgw-sync.plan/v1';

export interface NodePlan {
  node: string;
  /** Git revision or content hash of the state the plan was made from, when known. */
  revision?: string;
  nft: NftPlanned;
  /** Node settings (sysctls, conntrackd); absent when not planned. */
  settings?: SettingsPlanned;
  /** Absent when guests are not planned (disabled, or the driver could not list them: see guestsNote). */
  guests?: GuestPlan;
  guestsNote?: string;
}

export function hasChanges(p: NodePlan): boolean {
  return (
    p.nft.plan.changes.length > 0 ||
    (p.settings !== undefined && p.settings.plan.changes.length > 0) ||
    (p.guests !== undefined && guestChanges(p.guests).length > 0)
  );
}

export function formatPlanText(p: NodePlan): string {
  const rev = p.revision ? ` at revision ${p.revision}` : '';
  const guests = p.guests ? formatGuestPlanText(p.guests) : p.guestsNote ? `guests: not planned: ${p.guestsNote}\n` : '';
  const settings = p.settings ? `\n${formatSettingsPlanText(p.settings.plan)}` : '';
  return `cgw-sync plan for node ${p.node}${rev}\n\n${formatNftPlanText(p.nft.plan)}${settings}${guests ? `\n${guests}` : ''}`;
}

/** The JSON document printed by `plan --json` (documented in docs/plan-format.md). */
export function planJson(p: NodePlan) {
  return {
    format: PLAN_FORMAT,
    node: p.node,
    revision: p.revision ?? null,
    changed: hasChanges(p),
    nft: nftPlanJson(p.nft.plan),
    ...(p.settings && { settings: settingsPlanJson(p.settings.plan) }),
    guests: p.guests ? { actions: p.guests.actions } : { actions: [], note: p.guestsNote ?? 'not planned' },
  };
}
