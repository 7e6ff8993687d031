// The guest part of an agent cycle: pick the node's driver, list what runs, gate arrivals on the
// other nodes' status reports (agent/migration.ts), plan, and describe the result for the report.
import fs from 'node:fs';
import git from 'isomorphic-git';
import type { ClusterState } from '../state/types.js';
import { driverFor, guestRefusals, type GuestDriver } from '../guests/index.js';
import { readStatusBranch } from '../git/status-branch.js';
import { findNode } from '../render/render.js';
import { planGuests, NO_GATE, type GuestOutcome, type GuestPlan } from '../reconcile/guests.js';
import type { AgentConfig } from './config.js';
import { agentPaths, type AgentMemory } from './memory.js';
import { buildMigrationGate, placementOf, readReleases, updateArrivals, writeReleases } from './migration.js';
import type { GuestReport, NodeStatus } from './report.js';

export interface GuestPhase {
  driver: GuestDriver;
  plan: GuestPlan;
}

export function guestDriver(config: AgentConfig, state: ClusterState): GuestDriver {
  const node = findNode(state, config.node);
  // In the lab a node is a namespace: guests attach to its bridge and are named per node,
  // `<node ns>.<guest>` ('.' cannot occur in a node name, so no node's prefix matches another's).
  return driverFor(node, { runRoot: config.guests.runDir, nodeNs: config.netns, netnsPrefix: config.netns ? `${config.netns}.` : undefined, policy: config.guests });
}

export async function planGuestPhase(
  config: AgentConfig,
  state: ClusterState,
  revision: string,
  memory: AgentMemory,
  statusUrl: string | undefined,
): Promise<GuestPhase> {
  const driver = guestDriver(config, state);
  const present = await driver.list();
  memory.arrivals = updateArrivals(memory.placement, state, config.node, revision, memory.arrivals ?? {});
  // A guest already running here has arrived.
  for (const r of present) if (r.state === 'running') delete memory.arrivals[r.name];
  let gate = NO_GATE;
  if (Object.keys(memory.arrivals).length > 0) {
    const cacheDir = agentPaths(config.stateDir).sourceCache;
    gate = await buildMigrationGate({
      node: config.node,
      state,
      arrivals: memory.arrivals,
      releases: await readReleases(config.stateDir),
      readStatus: async (other) => {
        if (!statusUrl) return null;
        const branch = config.status.branch.replaceAll('{node}', other);
        const r = await readStatusBranch(statusUrl, other, { branch, credentials: { tokenFile: config.source.tokenFile, tokenEnv: config.source.tokenEnv, username: config.source.username } });
        const text = r?.files['status.json'];
        return text ? (JSON.parse(text) as NodeStatus) : null;
      },
      isAtOrAfter: async (rev, since) => rev === since || git.isDescendent({ fs, dir: cacheDir, oid: rev, ancestor: since, depth: -1 }).catch(() => false),
    });
  }
  memory.placement = placementOf(state);
  return { driver, plan: planGuests(state, config.node, present, gate, await guestRefusals(state, config.node, config.guests)) };
}

/** After the cycle: forget arrivals that started, and releases that were used. */
export async function settleArrivals(config: AgentConfig, memory: AgentMemory, outcomes: GuestOutcome[]): Promise<void> {
  const started = outcomes.filter((o) => o.ok && (o.action === 'start' || o.action === 'restart')).map((o) => o.guest);
  if (started.length === 0) return;
  for (const g of started) delete memory.arrivals?.[g];
  const releases = await readReleases(config.stateDir);
  if (started.some((g) => releases[g])) {
    for (const g of started) delete releases[g];
    await writeReleases(config.stateDir, releases);
  }
}

/**
 * What the report says about guests: every guest present on the node after the cycle (other
 * nodes read this to decide whether they may start a guest), plus the planned actions' results.
 */
export async function guestReport(phase: GuestPhase, outcomes: GuestOutcome[]): Promise<GuestReport[]> {
  const present = await phase.driver.list().catch(() => phase.plan.present);
  const report = new Map<string, GuestReport>();
  for (const r of present) report.set(r.name, { name: r.name, state: r.state, ...(r.managed ? {} : { detail: 'not started by cgw-sync' }) });
  for (const a of phase.plan.actions) {
    const outcome = outcomes.find((o) => o.guest === a.guest && o.action === a.action);
    // A present guest's state is the driver's (the truth other nodes gate on); an absent one's
    // comes from what happened to it.
    const absentState = outcome && !outcome.ok ? 'failed' : a.action === 'stop' ? 'stopped' : a.action === 'wait' ? 'waiting' : 'absent';
    const detail = outcome ? (outcome.ok ? outcome.detail : `${a.action} failed: ${outcome.detail}`) : `${a.action}: ${a.reason}`;
    report.set(a.guest, { name: a.guest, state: report.get(a.guest)?.state ?? absentState, detail });
  }
  return [...report.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
}
