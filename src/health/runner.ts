// Runs a node's health checks (src/health/checks.ts) at the edge: network probes as a small
// process in the node's network namespace, built-ins through the node's own readers; and the
// checkpoint after an apply: rounds of checks until none fails because of the apply, or the
// window ends.
import { runUnchecked } from '../netns/netns.js';
import { causedFailures, type BuiltinCheck, type CheckResult, type HealthCheck, type NetworkProbe } from './checks.js';
import { PROBE_PROGRAM } from './probe-program.js';

export type Verdict = Omit<CheckResult, 'name'>;

export interface HealthPorts {
  probe(p: NetworkProbe): Promise<Verdict>;
  /** All built-in checks at once (they share one read of the node). */
  builtins(): Promise<Record<BuiltinCheck, Verdict>>;
}

/** Grace on top of a probe's own timeout before its process is killed. */
const KILL_GRACE_MS = 2_000;
/** Probes running at once on a node. */
const CONCURRENCY = 8;

/** Network probes run by `prefix` (e.g. ip netns exec <ns>; [] on a real node). */
export function commandProber(prefix: string[]): HealthPorts['probe'] {
  return async (p) => {
    const timeoutMs = p.timeoutSeconds * 1000;
    const arg = JSON.stringify({ type: p.type, ip: p.ip, port: p.port, send: p.send, expect: p.expect, path: p.path, status: p.status, timeoutMs });
    const [cmd, ...args] = [...prefix, process.execPath, '-e', PROBE_PROGRAM, arg];
    const r = await runUnchecked(cmd!, args, { timeout: timeoutMs + KILL_GRACE_MS });
    try {
      const v = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as Verdict;
      return { ok: v.ok === true, detail: String(v.detail) };
    } catch {
      return { ok: false, detail: `the probe did not run (exit ${r.exitCode}): ${r.stderr.trim().slice(0, 200) || 'no output'}` };
    }
  };
}

async function mapLimited<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** One round: every check once, results in check order. A check that throws has failed. */
export async function runHealthRound(checks: HealthCheck[], ports: HealthPorts): Promise<CheckResult[]> {
  const builtins = checks.some((c) => 'builtin' in c) ? await ports.builtins().catch((e: Error) => e) : undefined;
  return mapLimited(checks, CONCURRENCY, async (c): Promise<CheckResult> => {
    if ('builtin' in c) {
      if (builtins instanceof Error) return { name: c.name, ok: false, detail: `could not read the node: ${builtins.message}` };
      return { name: c.name, ...builtins![c.builtin] };
    }
    return { name: c.name, ...(await ports.probe(c.probe).catch((e: Error) => ({ ok: false, detail: e.message }))) };
  });
}

export interface CheckpointResult {
  /** The last round's results. */
  results: CheckResult[];
  /** Failures the apply caused, in the last round; empty: the apply is confirmed. */
  caused: CheckResult[];
  rounds: number;
  ms: number;
}

/**
 * After an apply: rounds of checks every intervalMs until none fails because of the apply
 * (confirmed at once when the first round passes), or until windowMs has passed.
 */
export async function runCheckpoint(
  checks: HealthCheck[],
  ports: HealthPorts,
  before: CheckResult[] | undefined,
  window: { windowMs: number; intervalMs: number },
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
): Promise<CheckpointResult> {
  const t0 = Date.now();
  for (let rounds = 1; ; rounds++) {
    const results = await runHealthRound(checks, ports);
    const caused = causedFailures(before, results);
    const elapsed = Date.now() - t0;
    if (caused.length === 0 || elapsed + window.intervalMs > window.windowMs) return { results, caused, rounds, ms: elapsed };
    await sleep(window.intervalMs);
  }
}
