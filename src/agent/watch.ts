// The long-running agent's view of its nft tables: the committed ruleset in memory
// (src/nft/committed.ts), kept honest by `nft monitor` in the node's namespace.
//   - a transaction by anyone else touching one of our tables -> forget the memory, cycle now
//     (a burst of events is one cycle; the cycle's read is a full read-back);
//   - a foreign base chain coming or going -> re-read the chain list next cycle (no cycle: a
//     foreign table's changes are not ours to correct);
//   - our own transactions (their nft PIDs, which the backend records) -> nothing;
//   - the monitor dies -> forget the memory, log it, restart it with backoff, cycle once it runs;
//   - every fullReadSeconds -> forget the memory, cycle (a missed event cannot hide drift long).
import type { NftBackend, NftCli } from '../nft/backend.js';
import { CommittedRuleset } from '../nft/committed.js';
import { startNftMonitor, touchedTables, type MonitorBatch, type NftMonitor } from '../nft/monitor.js';
import { backoffDelay, type BackoffPolicy } from '../git/backoff.js';

export const DEFAULT_FULL_READ_SECONDS = 300;
/** Events of one burst (a few hand-typed commands, a script) start one cycle. */
const DEBOUNCE_MS = 50;
/** A monitor that ran this long was healthy: its next failure starts the backoff anew. */
const HEALTHY_RUN_MS = 60_000;
const MONITOR_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2 };

export interface NftWatch {
  /** The backend the agent's cycles use: memory, read in full when needed. */
  nft: CommittedRuleset;
  /** PID of the running monitor process (undefined while it is being restarted). */
  monitorPid(): number | undefined;
  /** Monitor batches seen so far: ours, foreign to our tables, and foreign elsewhere. */
  seen: { own: number; ours: number; elsewhere: number };
  stop(): Promise<void>;
}

export interface WatchOptions {
  fullReadSeconds: number;
  /** Start a cycle now (run.ts trigger: coalesces while one runs). */
  trigger: (reason: string) => unknown;
  log: (line: Record<string, unknown>) => void;
  random?: () => number;
}

/** What a monitor batch means for the agent (pure). */
export function batchVerdict(b: MonitorBatch, own: (pid: number) => boolean, tracked: ReadonlySet<string>): { kind: 'own' } | { kind: 'ours'; tables: string[] } | { kind: 'elsewhere'; chains: boolean } {
  if (b.pid !== undefined && own(b.pid)) return { kind: 'own' };
  const { tables, unknown } = touchedTables(b);
  const hit = [...tables].filter((t) => tracked.has(t));
  // A line nft printed that we could not read may be about our tables: read them to be sure.
  if (unknown || hit.length > 0) return { kind: 'ours', tables: unknown ? [...hit, 'an unreadable event'] : hit };
  return { kind: 'elsewhere', chains: b.events.some((e) => e.object === 'chain') };
}

/** A real nft backend gets memory and a monitor; the full-read interval 0 (or a fake backend) gets neither. */
export function watchable(nft: NftBackend, fullReadSeconds: number | undefined): nft is NftCli {
  return (fullReadSeconds ?? DEFAULT_FULL_READ_SECONDS) > 0 && typeof (nft as NftCli).command === 'function' && typeof (nft as NftCli).wroteAs === 'function';
}

export function watchNft(cli: NftCli, opts: WatchOptions): NftWatch {
  const committed = new CommittedRuleset(cli);
  const seen = { own: 0, ours: 0, elsewhere: 0 };
  let monitor: NftMonitor | undefined;
  let stopped = false;
  let failures = 0;
  let restartTimer: NodeJS.Timeout | undefined;
  let debounce: { timer: NodeJS.Timeout; tables: Set<string> } | undefined;
  const stamp = () => new Date().toISOString();

  const fullReadNow = (reason: string) => {
    committed.invalidate();
    opts.trigger(reason);
  };

  const onBatch = (b: MonitorBatch) => {
    const v = batchVerdict(b, (pid) => cli.wroteAs(pid), committed.tracked());
    seen[v.kind]++;
    if (v.kind === 'own') return;
    if (v.kind === 'elsewhere') {
      if (v.chains) committed.invalidateBaseChains();
      return;
    }
    // Forget at once (a cycle running now must not trust memory), cycle after the burst.
    committed.invalidate();
    if (!debounce) {
      const tables = new Set<string>();
      debounce = { tables, timer: setTimeout(() => {
        debounce = undefined;
        if (!stopped) fullReadNow(`nft: changed by another process: ${[...tables].join(', ')}`);
      }, DEBOUNCE_MS) };
    }
    for (const t of v.tables) debounce.tables.add(t);
  };

  const start = () => {
    if (stopped) return;
    const started = Date.now();
    const m = startNftMonitor(cli.command(['monitor']), onBatch);
    monitor = m;
    void m.exited.then((why) => {
      monitor = undefined;
      if (stopped) return;
      failures = Date.now() - started >= HEALTHY_RUN_MS ? 0 : failures + 1;
      const delay = backoffDelay(failures - 1, MONITOR_BACKOFF, opts.random);
      // Without the monitor, memory cannot be trusted: plan from full reads until it is back.
      committed.trust(false);
      opts.log({ time: stamp(), outcome: 'nft-monitor', event: 'exited', reason: `${why}; restarting in ${delay} ms, reading the tables in full meanwhile`, restartInMs: delay });
      restartTimer = setTimeout(() => {
        restartTimer = undefined;
        start();
        if (monitor) {
          committed.trust(true);
          opts.log({ time: stamp(), outcome: 'nft-monitor', event: 'restarted', pid: monitor.pid, reason: `restarted as pid ${monitor.pid}` });
          fullReadNow('nft monitor restarted: full read');
        }
      }, delay);
    });
  };

  start();
  const interval = setInterval(() => fullReadNow('full read interval'), (opts.fullReadSeconds || DEFAULT_FULL_READ_SECONDS) * 1000);
  return {
    nft: committed,
    seen,
    monitorPid: () => monitor?.pid,
    async stop() {
      stopped = true;
      clearInterval(interval);
      if (restartTimer) clearTimeout(restartTimer);
      if (debounce) clearTimeout(debounce.timer);
      await monitor?.stop();
    },
  };
}
