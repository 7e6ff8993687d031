// Reconciling a node's settings, the same three steps as the ruleset (src/reconcile/nft.ts):
// render + read + plan (pure, src/plan/plan.ts planNode), apply exactly that plan, read back and
// confirm convergence.
import type { NodeSettings } from './model.js';
import type { ConntrackdPaths } from './conntrackd.js';
import { planSettings, type LiveSettings, type SettingsPlan } from './plan.js';
import type { ConntrackdHealth } from './host.js';

/** What reconciling settings needs from a node: SettingsHost on a real one, FakeSettings in tests. */
export interface SettingsPort {
  readLive(desired: NodeSettings, paths: ConntrackdPaths): Promise<LiveSettings>;
  apply(plan: SettingsPlan, desired: NodeSettings, paths: ConntrackdPaths): Promise<void>;
  health(paths: ConntrackdPaths): Promise<ConntrackdHealth>;
}

export interface SettingsPlanned {
  desired: NodeSettings;
  live: LiveSettings;
  paths: ConntrackdPaths;
  plan: SettingsPlan;
}

export function planNodeSettings(desired: NodeSettings, live: LiveSettings, paths: ConntrackdPaths): SettingsPlanned {
  return { desired, live, paths, plan: planSettings(desired, live) };
}

/**
 * What can be known to fail before anything changes: a sysctl the plan must write whose key does
 * not exist and will not appear by itself (a per-interface key of a missing interface). Checked
 * before the nft transaction, so such a plan changes nothing at all. `net.netfilter.*` keys are
 * exempt: loading a ruleset that uses conntrack creates them.
 */
export function settingsPrecheck(planned: SettingsPlanned): string | undefined {
  const missing = planned.plan.changes.flatMap((c) => (c.kind === 'sysctl' && c.from === undefined && !c.key.startsWith('net.netfilter.') ? [c.key] : []));
  return missing.length ? `sysctl ${missing.join(', ')}: no such key on this node (is the interface missing?); nothing was changed` : undefined;
}

export async function applyNodeSettings(planned: SettingsPlanned, host: SettingsPort): Promise<void> {
  if (planned.plan.changes.length === 0) return;
  await host.apply(planned.plan, planned.desired, planned.paths);
  const after = planSettings(planned.desired, await host.readLive(planned.desired, planned.paths));
  if (after.changes.length > 0) {
    throw new Error(`node settings did not converge; still pending: ${after.changes.map((c) => (c.kind === 'sysctl' ? `sysctl ${c.key}` : c.kind)).join(', ')}`);
  }
}
