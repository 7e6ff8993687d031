// Reconciling a node's settings, the same three steps as the ruleset (src/reconcile/nft.ts):
// render + read + plan (pure), apply exactly that plan, read back and confirm convergence.
import type { ClusterState } from '../state/types.js';
import { renderSettings, type NodeSettings } from './model.js';
import type { ConntrackdPaths } from './conntrackd.js';
import { planSettings, type LiveSettings, type SettingsPlan } from './plan.js';
import type { SettingsHost } from './host.js';

export interface SettingsPlanned {
  desired: NodeSettings;
  live: LiveSettings;
  paths: ConntrackdPaths;
  plan: SettingsPlan;
}

export async function planNodeSettings(state: ClusterState, node: string, host: SettingsHost, paths: ConntrackdPaths): Promise<SettingsPlanned> {
  const desired = renderSettings(state, node, paths);
  const live = await host.readLive(desired, paths);
  return { desired, live, paths, plan: planSettings(desired, live) };
}

export async function applyNodeSettings(planned: SettingsPlanned, host: SettingsHost): Promise<void> {
  if (planned.plan.changes.length === 0) return;
  await host.apply(planned.plan, planned.desired, planned.paths);
  const after = planSettings(planned.desired, await host.readLive(planned.desired, planned.paths));
  if (after.changes.length > 0) {
    throw new Error(`node settings did not converge; still pending: ${after.changes.map((c) => (c.kind === 'sysctl' ? `sysctl ${c.key}` : c.kind)).join(', ')}`);
  }
}
