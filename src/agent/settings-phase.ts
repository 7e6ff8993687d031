// The node-settings part of the status report: the settings changes of the cycle's plan, whether
// they were applied, and (ct-sync) whether cgw-sync's conntrackd is alive and answering.
// Planning and applying settings is part of the one NodePlan (src/plan/plan.ts, src/reconcile/apply.ts).
import type { NodePlan } from '../plan/plan.js';
import type { ApplyResult } from '../reconcile/apply.js';
import type { ConntrackdHealth } from '../settings/host.js';
import type { SettingsPort } from '../settings/reconcile.js';
import { settingsPlanJson } from '../settings/plan.js';

/** The settings part of the status report. Only stable facts: a quiet cycle must not change it. */
export interface SettingsReport {
  /** One line per change planned in this cycle (applied unless vetoed or failed). */
  changes: string[];
  applied: boolean;
  /** ct-sync only: is cgw-sync's conntrackd alive and answering on its socket. */
  conntrackd?: { running: boolean; pid?: number; answering: boolean; error?: string };
}

export async function settingsReport(plan: NodePlan, result: ApplyResult | undefined, host: SettingsPort): Promise<SettingsReport> {
  const report: SettingsReport = { changes: settingsPlanJson(plan.settings.plan).changes.map((c) => c.summary), applied: result?.settings.status === 'done' };
  if (plan.settings.desired.conntrackd) report.conntrackd = summarise(await host.health(plan.settings.paths));
  return report;
}

/** The report's complaint about conntrackd, if any. */
export function conntrackdProblem(r: SettingsReport): string | undefined {
  const ct = r.conntrackd;
  return ct && (!ct.running || !ct.answering) ? `conntrackd is not healthy: ${ct.error ?? 'not running'}` : undefined;
}

function summarise(h: ConntrackdHealth): NonNullable<SettingsReport['conntrackd']> {
  return { running: h.running, ...(h.pid !== undefined && { pid: h.pid }), answering: h.stats !== undefined, ...(h.error && { error: h.error }) };
}
