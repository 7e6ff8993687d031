// The checkpoint around an apply (nmstate-style): the node's health before the apply, the checks
// after it for a window, and the automatic rollback to the previous applied revision (its state
// is kept in last-good/) when the apply broke something that worked. Restoring goes through the
// same prepareNode/executePlan as any apply (one nft transaction), then is verified by reading back.
import type { AgentConfig } from '../agent/config.js';
import { executePlan, nodeView, prepareNode, type Executed, type NodeRuntime, type Prepared } from '../agent/node.js';
import type { GuestMemory, NodePlan, NodeLive } from '../plan/plan.js';
import { pendingWork } from '../plan/plan.js';
import { summaryLine } from '../plan/format.js';
import { applyChanged, applyFailed } from '../reconcile/apply.js';
import type { GuestActionKind } from '../reconcile/guests.js';
import { runUnchecked } from '../netns/netns.js';
import type { ClusterState } from '../state/types.js';
import type { NodeView } from '../render/node-view.js';
import { checkWindow, describeFailures, nodeHealthChecks, type BuiltinCheck, type CheckResult } from '../health/checks.js';
import { commandProber, runCheckpoint, runHealthRound, type HealthPorts, type Verdict } from '../health/runner.js';
import { gatewayIPv6Addresses } from '../render/ipv6.js';

/** What the edge provides to the checks; tests replace parts of it. */
export interface HealthEdge {
  probe: HealthPorts['probe'];
  /** Addresses (IPv4 and IPv6) on an interface of the node; `since`: as read at or after that time (ms), not earlier. */
  addresses(dev: string, since?: number): Promise<string[]>;
  /** The MAC of an interface, to check a shared gateway MAC's rewrite target; absent: not checked. */
  linkMac?(dev: string, since?: number): Promise<string>;
  sleep?: (ms: number) => Promise<void>;
  /** Answers from what it read before (rememberedHealthEdge): a failing gateway check reads again. */
  remembers?: true;
}

/**
 * The long-running agent's edge: an interface's addresses and MAC as read last, trusted for
 * `maxAgeMs` (the full-read interval, like its sysctls and its committed nft ruleset), so a health
 * round spawns no `ip` process between full reads. cgw-sync changes no address or MAC itself; a
 * change by hand that breaks the gateway is found at the next full read. A failed read is not
 * trusted, and a gateway check failing on what is remembered reads again (healthPorts), so only
 * a pass is ever taken from memory.
 */
export function rememberedHealthEdge(edge: HealthEdge, maxAgeMs: number, now: () => number = Date.now): HealthEdge & { forget(): void } {
  const held = new Map<string, { at: number; value: Promise<string[] | string>; failed?: boolean }>();
  const remembered =
    <T extends string[] | string>(kind: string, read: (dev: string) => Promise<T>) =>
    (dev: string, since?: number): Promise<T> => {
      const key = `${kind}\0${dev}`;
      const h = held.get(key);
      const usable = h && (since === undefined ? !h.failed && now() - h.at < maxAgeMs : h.at >= since);
      if (usable) return h.value as Promise<T>;
      const entry: { at: number; value: Promise<T>; failed?: boolean } = { at: now(), value: read(dev) };
      held.set(key, entry);
      entry.value.catch(() => {
        entry.failed = true;
      });
      return entry.value;
    };
  const { linkMac } = edge;
  return {
    ...edge,
    addresses: remembered('addr', (dev) => edge.addresses(dev, now())),
    ...(linkMac && { linkMac: remembered('link', (dev) => linkMac(dev, now())) }),
    remembers: true,
    forget: () => held.clear(),
  };
}

function nodePrefix(config: AgentConfig): string[] {
  return config.netns ? ['ip', 'netns', 'exec', config.netns] : [];
}

export function hostHealthEdge(config: AgentConfig): HealthEdge {
  const prefix = nodePrefix(config);
  return {
    probe: commandProber(prefix),
    addresses: async (dev) => {
      const [cmd, ...args] = [...prefix, 'ip', '-j', 'addr', 'show', 'dev', dev];
      const r = await runUnchecked(cmd!, args, { timeout: 5000 });
      if (r.exitCode !== 0) throw new Error(r.stderr.trim() || `ip addr failed (exit ${r.exitCode})`);
      const links = JSON.parse(r.stdout || '[]') as Array<{ addr_info?: Array<{ local?: string }> }>;
      return links.flatMap((l) => (l.addr_info ?? []).map((a) => a.local ?? '')).filter(Boolean);
    },
    linkMac: async (dev) => {
      const [cmd, ...args] = [...prefix, 'ip', '-j', 'link', 'show', 'dev', dev];
      const r = await runUnchecked(cmd!, args, { timeout: 5000 });
      if (r.exitCode !== 0) throw new Error(r.stderr.trim() || `ip link failed (exit ${r.exitCode})`);
      return ((JSON.parse(r.stdout || '[]') as Array<{ address?: string }>)[0]?.address ?? '').toLowerCase();
    },
  };
}

// --- the built-in checks, pure over what was read --------------------------------------------

export function readbackVerdict(plan: NodePlan): Verdict {
  const w = pendingWork({ ...plan, nftHeld: false });
  if (!w.nft && !w.settings && !w.guests) return { ok: true, detail: 'nothing to change' };
  const parts = [w.nft && `nftables: ${summaryLine(plan.nft.plan)}`, w.settings && `settings: ${plan.settings.plan.changes.length} change(s)`, w.guests && 'guests differ'].filter(Boolean);
  return { ok: false, detail: `the node differs from its state: ${parts.join('; ')}` };
}

/** The gateway's addresses are on the guest bridge; with a shared gateway MAC, the bridge has the MAC the state says (`mac`, when read). */
export function gatewayVerdict(view: NodeView, addresses: string[] | Error, mac?: string | Error): Verdict {
  // Dual stack: the gateway's IPv6 addresses too, in the form `ip` lists them.
  const gateways = [view.state.cluster.gatewayIP, ...gatewayIPv6Addresses(view.state)];
  const dev = view.node.guestBridge.interface;
  if (addresses instanceof Error) return { ok: false, detail: `cannot read ${dev}: ${addresses.message}` };
  const missing = gateways.filter((g) => !addresses.includes(g));
  if (missing.length > 0) return { ok: false, detail: `${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not on ${dev}` };
  const want = view.node.guestBridge.mac;
  if (mac instanceof Error) return { ok: false, detail: `cannot read the MAC of ${dev}: ${mac.message}` };
  if (mac !== undefined && mac !== want) return { ok: false, detail: `${dev} has MAC ${mac}, the state's guestBridge.mac is ${want}: frames to the shared gateway MAC would not reach this node` };
  return { ok: true, detail: `${gateways.join(', ')} on ${dev}` };
}

/** Whether the gateway check must read the bridge's MAC: only with a shared gateway MAC. */
export function checksBridgeMac(view: NodeView): boolean {
  return view.state.cluster.gatewayMAC !== undefined && view.node.guestBridge.mac !== undefined;
}

/** Every guest the node should run (not waiting for a migration gate, not refused) runs. */
export function guestsVerdict(plan: NodePlan, live: NodeLive): Verdict {
  if (!plan.guests || !Array.isArray(live.guests)) return { ok: true, detail: plan.guestsNote ? `not checked: ${plan.guestsNote}` : 'not checked' };
  // Placed here and rightly not running yet: waiting for a gate or a live migration, or refused.
  const excused = new Set(plan.guests.actions.filter((a) => NOT_YET.has(a.action)).map((a) => a.guest));
  const running = new Set(live.guests.filter((g) => g.state === 'running').map((g) => g.name));
  const missing = placedHere(plan).filter((g) => !excused.has(g) && !running.has(g));
  return missing.length === 0 ? { ok: true, detail: 'all running' } : { ok: false, detail: `not running: ${missing.join(', ')}` };
}

const NOT_YET = new Set<GuestActionKind>(['wait', 'refused', 'incoming', 'cancel-incoming']);

function placedHere(plan: NodePlan): string[] {
  return Object.entries(plan.memory.placement).filter(([, n]) => n === plan.node).map(([g]) => g).sort();
}

/** The ports of one node's checks, for the state it should enforce. */
export function healthPorts(rt: NodeRuntime, edge: HealthEdge, state: ClusterState, revision: string, memory: Partial<GuestMemory>): HealthPorts {
  return {
    probe: edge.probe,
    builtins: async (): Promise<Record<BuiltinCheck, Verdict>> => {
      const view = nodeView(rt, state);
      const dev = view.node.guestBridge.interface;
      const round = Date.now();
      const readBridge = (since?: number) => {
        const mac = checksBridgeMac(view) && edge.linkMac ? edge.linkMac(dev, since).catch((e: Error) => e) : undefined;
        return Promise.all([edge.addresses(dev, since).catch((e: Error) => e), mac]);
      };
      // The bridge is read while the node is read and planned: independent reads, one wait.
      const bridge = readBridge();
      const fresh = await prepareNode(rt, state, revision, memory);
      let gateway = gatewayVerdict(fresh.view, ...(await bridge));
      // A failure is never taken from what the edge remembers: read in this round, or read now.
      if (!gateway.ok && edge.remembers) gateway = gatewayVerdict(fresh.view, ...(await readBridge(round)));
      return { readback: readbackVerdict(fresh.plan), gateway, guests: guestsVerdict(fresh.plan, fresh.live) };
    },
  };
}

/** The report's health part. Only failing checks are listed (their details are stable). */
export interface HealthReport {
  state: 'healthy' | 'unhealthy';
  checks: number;
  failing: CheckResult[];
}

/** A health round the long-running agent ran between applies, and when. */
export interface HeldHealth {
  at: number;
  revision: string;
  report: HealthReport;
}

/**
 * The last round's report while it still stands for a cycle that changes nothing: same revision,
 * younger than maxAgeMs. Undefined: run a round now. Healthy or not, between applies a node's
 * health is checked once per interval (a failing check is not re-run every cycle either); an
 * apply always runs its checkpoint (the caller).
 */
export function heldHealth(held: HeldHealth | undefined, revision: string, now: number, maxAgeMs: number): HealthReport | undefined {
  if (!held || held.revision !== revision) return undefined;
  return now - held.at < maxAgeMs ? held.report : undefined;
}

export function healthReport(results: CheckResult[]): HealthReport {
  const failing = results.filter((r) => !r.ok);
  return { state: failing.length ? 'unhealthy' : 'healthy', checks: results.length, failing };
}

export interface RollbackReport {
  /** The revision that was rolled back (and is now held). */
  revision: string;
  /** The revision restored. */
  restored: string;
  failing: CheckResult[];
  /** How long the checkpoint ran before deciding (ms). */
  checkedMs: number;
  /**
   * From the end of the new revision's apply to the end of the restore (ms): about how long its
   * ruleset was live, i.e. how long the traffic it broke stayed broken on this node. Absent in
   * reports of older versions.
   */
  liveMs?: number;
  /** Restore and verification. */
  ok: boolean;
  errors: string[];
}

/** One line for reports and halts: "<check>: <detail>; ...". */
export const rollbackReason = (r: Pick<RollbackReport, 'failing'>) => describeFailures(r.failing);

export interface GuardInputs {
  rt: NodeRuntime;
  edge: HealthEdge;
  prepared: Prepared;
  state: ClusterState;
  revision: string;
  memory: Partial<GuestMemory>;
  /** The previous applied revision's state and id, when a rollback to it is possible. */
  previous?: { state: ClusterState; revision: string };
}

/**
 * The health before an apply: the previous revision's checks, as the node runs it now (the
 * read-back and guest checks are left out: the pending apply is what they would report). A check
 * that passes here and fails after the apply (by name) was broken by the new revision.
 */
export async function healthBefore(g: GuardInputs): Promise<CheckResult[] | undefined> {
  if (!g.previous) return undefined;
  const { state, revision } = g.previous;
  const view = nodeView(g.rt, state);
  const checks = nodeHealthChecks(view).filter((c) => !('builtin' in c) || c.builtin === 'gateway');
  return runHealthRound(checks, healthPorts(g.rt, g.edge, state, revision, g.memory));
}

export interface Guarded {
  health: HealthReport;
  rollback?: RollbackReport;
  /** The rollback's own apply (guest memory is settled from it). */
  restored?: { prepared: Prepared; executed: Executed };
}

/** The rollback decided, before the restore's nft transaction: what is rolled back to what, and why. */
export type RollbackStart = Pick<RollbackReport, 'revision' | 'restored' | 'failing'>;

/**
 * After the apply (or instead of one): the checkpoint, and the rollback when the apply broke a
 * check. `beforeRestore` runs once the rollback is decided, before the restore is applied: the
 * caller makes the hold durable there, so an agent killed during the restore does not try the
 * revision again on its next start but restores the previous one.
 */
export async function guardApply(g: GuardInputs, executed: Executed, before: CheckResult[] | undefined, beforeRestore?: (r: RollbackStart) => Promise<void>): Promise<Guarded> {
  const appliedAt = Date.now();
  const checks = nodeHealthChecks(g.prepared.view);
  const ports = healthPorts(g.rt, g.edge, g.state, g.revision, g.memory);
  const r = executed.result;
  // Nothing to roll back to (first apply, drift correction, no change): one round, reported.
  if (!r || applyFailed(r) || !applyChanged(r) || !g.previous) return { health: healthReport(await runHealthRound(checks, ports)) };
  const cp = await runCheckpoint(checks, ports, before, checkWindow(g.prepared.view), g.edge.sleep);
  if (cp.caused.length === 0) return { health: healthReport(cp.results) };
  const { state, revision } = g.previous;
  // No hooks: a pre-apply hook must not be able to veto putting back what worked.
  const rt: NodeRuntime = { ...g.rt, hooks: false };
  const prepared = await prepareNode(rt, state, revision, g.memory);
  const restoredExec = await executePlan(rt, prepared, { beforeNft: () => beforeRestore?.({ revision: g.revision, restored: revision, failing: cp.caused }) ?? Promise.resolve() });
  const liveMs = Date.now() - appliedAt;
  const errors: string[] = [];
  if (restoredExec.result && applyFailed(restoredExec.result)) errors.push('the restore failed');
  const after = await runHealthRound(nodeHealthChecks(prepared.view), healthPorts(g.rt, g.edge, state, revision, g.memory));
  const readback = after.find((x) => x.name === checks[0]!.name);
  if (readback && !readback.ok) errors.push(`after the restore: ${readback.detail}`);
  return {
    health: healthReport(after),
    rollback: { revision: g.revision, restored: revision, failing: cp.caused, checkedMs: cp.ms, liveMs, ok: errors.length === 0, errors },
    restored: { prepared, executed: restoredExec },
  };
}

