// A node's health checks, as data: the built-in ones (always on) and the state's (cluster-wide,
// per node, per forward entering the node), plus the checkpoint's verdict on a round of results.
// Pure; src/health/runner.ts runs them on the node.
import type { NodeView } from '../render/node-view.js';
import type { ProbeSettings } from '../state/types.js';

/** Checks the node answers from what it reads itself (no network probe). */
export type BuiltinCheck = 'readback' | 'gateway' | 'guests';

/** One network probe, its address already resolved and restricted by the state checks. */
export interface NetworkProbe extends ProbeSettings {
  ip: string;
  port: number;
}

export type HealthCheck = { name: string; builtin: BuiltinCheck } | { name: string; probe: NetworkProbe };

export interface CheckResult {
  name: string;
  ok: boolean;
  /** What was seen; stable between rounds (no timings), so a report does not change needlessly. */
  detail: string;
}

export const DEFAULT_WINDOW_SECONDS = 10;
export const DEFAULT_INTERVAL_SECONDS = 1;

export function checkWindow(view: NodeView): { windowMs: number; intervalMs: number } {
  const h = view.state.cluster.health;
  return { windowMs: (h?.windowSeconds ?? DEFAULT_WINDOW_SECONDS) * 1000, intervalMs: (h?.intervalSeconds ?? DEFAULT_INTERVAL_SECONDS) * 1000 };
}

/** Each view's checks, made once: the agent checks the same view before the next apply and after this one. */
const checksOf = new WeakMap<NodeView, HealthCheck[]>();

/** The node's checks (a frozen list, shared between callers). */
export function nodeHealthChecks(view: NodeView): HealthCheck[] {
  let checks = checksOf.get(view);
  if (!checks) {
    checks = Object.freeze(healthChecksOf(view)) as HealthCheck[];
    checksOf.set(view, checks);
  }
  return checks;
}

function healthChecksOf(view: NodeView): HealthCheck[] {
  const { node, state } = view;
  const builtins: HealthCheck[] = [
    { name: 'read-back plan is empty', builtin: 'readback' },
    { name: `gateway ${state.cluster.gatewayIP} on ${node.guestBridge.interface}`, builtin: 'gateway' },
    { name: 'guests of this node run', builtin: 'guests' },
  ];
  const declared = [...(state.cluster.health?.checks ?? []), ...(node.healthChecks ?? [])].map(({ name, ...probe }): HealthCheck => ({ name, probe }));
  // A forward is probed at its target as this node reaches it (the guest's IP and target port):
  // the node's own connection to its public IP would not pass its prerouting DNAT. The target
  // comes from the state's own guests, never from the check.
  const forwards = view.forwards
    .filter((f) => f.health && view.guestIP.has(f.target.guest))
    .map((f): HealthCheck => ({ name: `forward ${f.name}`, probe: { ...f.health!, ip: view.guestIP.get(f.target.guest)!, port: f.target.port } }));
  return [...builtins, ...declared, ...forwards];
}

/**
 * Which failures after an apply the apply caused: a check that passed before it (or did not
 * exist, or could not be run before, like the read-back plan) and fails now. A check that
 * already failed before the apply is not the apply's fault: reported, never rolled back.
 */
export function causedFailures(before: CheckResult[] | undefined, after: CheckResult[]): CheckResult[] {
  const failedBefore = new Set((before ?? []).filter((r) => !r.ok).map((r) => r.name));
  return after.filter((r) => !r.ok && !failedBefore.has(r.name));
}

/** "name: detail; name: detail" for reports and halts. */
export function describeFailures(results: CheckResult[]): string {
  return results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.detail}`).join('; ');
}
