// The agent's node-settings phase (issue 6): sysctls and, in ct-sync, conntrackd, reconciled like
// the ruleset: render, read, plan, apply, read back. conntrackd's files live under
// <stateDir>/conntrackd, so several agents on one host (the lab) never share them; commands run
// in the agent's namespace when it has one, like nft.
import type { ClusterState } from '../state/types.js';
import type { AgentConfig } from './config.js';
import type { Outcome } from './report.js';
import { SettingsHost, type ConntrackdHealth } from '../settings/host.js';
import { conntrackdPaths, settingsDir } from '../settings/model.js';
import { applyNodeSettings, planNodeSettings } from '../settings/reconcile.js';
import { settingsPlanJson } from '../settings/plan.js';

/** The settings part of the status report. Only stable facts: a quiet cycle must not change it. */
export interface SettingsReport {
  /** One line per change planned in this cycle (applied unless held or failed). */
  changes: string[];
  applied: boolean;
  /** ct-sync only: is cgw-sync's conntrackd alive and answering on its socket. */
  conntrackd?: { running: boolean; pid?: number; answering: boolean; error?: string };
}

export interface SettingsPhaseResult {
  report: SettingsReport;
  /** Something was changed on the node. */
  changed: boolean;
  error?: string;
}

export function settingsHost(config: AgentConfig): SettingsHost {
  return new SettingsHost({ prefix: config.netns ? ['ip', 'netns', 'exec', config.netns] : [] });
}

/**
 * Plan and apply the node settings. They are always brought to the desired state (the drift
 * policy applies to the nftables tables): a conntrackd that died must come back, and a failed
 * apply must be retried on the next cycle whatever the revision.
 */
export async function settingsPhase(config: AgentConfig, state: ClusterState, host = settingsHost(config)): Promise<SettingsPhaseResult> {
  const paths = conntrackdPaths(settingsDir(config.stateDir));
  const planned = await planNodeSettings(state, config.node, host, paths);
  const changes = settingsPlanJson(planned.plan).changes.map((c) => c.summary);
  const pending = changes.length > 0;
  let error: string | undefined;
  if (pending) {
    try {
      await applyNodeSettings(planned, host);
    } catch (e) {
      error = `node settings: ${(e as Error).message}`;
    }
  }
  const report: SettingsReport = { changes, applied: pending && !error };
  if (planned.desired.conntrackd) report.conntrackd = summarise(await host.health(paths));
  return { report, changed: report.applied, ...(error && { error }) };
}

/**
 * Run the phase after the nft/guest reconcile of a cycle, unless that was vetoed or failed (then
 * nothing is changed, as promised). Returns the report and the cycle's combined outcome.
 */
export async function afterReconcile(config: AgentConfig, state: ClusterState, outcome: Outcome, errors: string[]): Promise<{ report?: SettingsReport; outcome: Outcome }> {
  if (outcome === 'vetoed' || outcome === 'error') return { outcome };
  try {
    const r = await settingsPhase(config, state);
    if (r.error) errors.push(r.error);
    if (r.report.conntrackd && (!r.report.conntrackd.running || !r.report.conntrackd.answering)) {
      errors.push(`conntrackd is not healthy: ${r.report.conntrackd.error ?? 'not running'}`);
    }
    return { report: r.report, outcome: r.error ? 'error' : r.changed && outcome === 'converged' ? 'applied' : outcome };
  } catch (e) {
    errors.push(`node settings not reconciled: ${(e as Error).message}`);
    return { outcome: 'error' };
  }
}

function summarise(h: ConntrackdHealth): NonNullable<SettingsReport['conntrackd']> {
  return { running: h.running, ...(h.pid !== undefined && { pid: h.pid }), answering: h.stats !== undefined, ...(h.error && { error: h.error }) };
}
