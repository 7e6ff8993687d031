// `cgw-sync run`: the long-running agent. Reconciles at start and on the cron schedule (with a
// random jitter so nodes do not hit the Git server together), never two cycles at once (cron's
// waitForCompletion in-process, the lock file across processes), and stops cleanly on SIGTERM
// or SIGINT: a running cycle is finished, never cut off mid-apply.
import { CronJob } from 'cron';
import { LockBusy } from './lock.js';
import { flushAgentCache, runOnce, type CycleDeps, type MemoryCarry } from './cycle.js';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffPolicy } from '../git/backoff.js';
import { DEFAULT_FULL_READ_SECONDS, watchable, watchNft, type NftWatch } from './watch.js';

export interface Agent {
  /** Resolves when the agent has stopped (after stop() or a signal). */
  done: Promise<void>;
  stop(): Promise<void>;
  /** Cycles started so far (for tests and the log). */
  cycles(): number;
  /**
   * Start a cycle now (a webhook, a foreign nft change). While one runs, triggers are coalesced
   * into one more cycle right after it. Resolves when the cycle that covers this trigger ended.
   */
  trigger(reason: string): Promise<void>;
  /** The committed ruleset in memory and its nft monitor (absent: full reads every cycle). */
  watch?: NftWatch;
}

export function startAgent(deps: CycleDeps, opts: { handleSignals?: boolean; random?: () => number; backoff?: BackoffPolicy } = {}): Agent {
  const random = opts.random ?? Math.random;
  const log = deps.log ?? (() => {});
  let running: Promise<unknown> | undefined;
  let stopping = false;
  let count = 0;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  let jitterTimer: NodeJS.Timeout | undefined;
  let wakeJitter: (() => void) | undefined;
  // While Git is unreachable, retry sooner than the schedule, backing off (the last good
  // revision stays enforced meanwhile).
  let gitFailures = 0;
  // Memory carried from cycle to cycle, for when memory.json cannot be written (full disk).
  const carry: MemoryCarry = { unsaved: false };
  let retryTimer: NodeJS.Timeout | undefined;
  // Triggers that arrived while a cycle ran: one more cycle covers them all.
  let pending: { reasons: string[]; done: Promise<void>; resolve: () => void } | undefined;
  // Plan against the ruleset committed last, kept honest by nft monitor (src/agent/watch.ts).
  const fullReadSeconds = deps.config.schedule.fullReadSeconds ?? DEFAULT_FULL_READ_SECONDS;
  const watch = watchable(deps.nft, fullReadSeconds)
    ? watchNft(deps.nft, { fullReadSeconds, trigger: (reason) => trigger(reason), log: (line) => log({ ...line, node: deps.config.node }), random })
    : undefined;
  const cycleDeps: CycleDeps = watch ? { ...deps, nft: watch.nft } : deps;

  const cycle = async (jitterSeconds: number, reason = 'schedule') => {
    if (jitterSeconds > 0) {
      // An interruptible wait: stop() must not hang on a pending jitter delay.
      await new Promise<void>((resolve) => {
        wakeJitter = resolve;
        jitterTimer = setTimeout(resolve, random() * jitterSeconds * 1000);
      });
    }
    if (stopping || running) return;
    count++;
    if (retryTimer) clearTimeout(retryTimer);
    running = runOnce({ ...cycleDeps, carry, reason }).then((status) => {
      gitFailures = status.source.state === 'unavailable' ? gitFailures + 1 : 0;
      if (gitFailures > 0 && !stopping) retryTimer = setTimeout(() => void cycle(0, 'retry: Git was unreachable'), backoffDelay(gitFailures - 1, opts.backoff ?? DEFAULT_BACKOFF, random));
    }, (e: unknown) => {
      deps.observe?.({ outcome: e instanceof LockBusy ? 'skipped' : 'error' });
      if (e instanceof LockBusy) log({ time: new Date().toISOString(), node: deps.config.node, outcome: 'skipped', reason: e.message });
      else log({ time: new Date().toISOString(), node: deps.config.node, outcome: 'error', error: (e as Error).message });
    });
    await running;
    running = undefined;
    const next = pending;
    pending = undefined;
    if (next) void cycle(0, next.reasons.join(', ')).then(next.resolve);
  };

  const trigger = (reason: string): Promise<void> => {
    if (stopping) return Promise.resolve();
    if (!running) return cycle(0, reason);
    if (!pending) {
      let resolve!: () => void;
      const done = new Promise<void>((r) => {
        resolve = r;
      });
      pending = { reasons: [], done, resolve };
    }
    if (!pending.reasons.includes(reason)) pending.reasons.push(reason);
    return pending.done;
  };

  const job = CronJob.from({
    cronTime: deps.config.schedule.cron,
    onTick: () => cycle(deps.config.schedule.jitterSeconds),
    waitForCompletion: true,
    start: false,
    errorHandler: (e) => log({ time: new Date().toISOString(), node: deps.config.node, outcome: 'error', error: String(e) }),
  });

  const stop = async () => {
    if (stopping) return done;
    stopping = true;
    await job.stop();
    if (jitterTimer) clearTimeout(jitterTimer);
    if (retryTimer) clearTimeout(retryTimer);
    wakeJitter?.();
    await running;
    pending?.resolve();
    await flushAgentCache(carry).catch(() => undefined);
    await watch?.stop();
    if (opts.handleSignals) {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    }
    log({ time: new Date().toISOString(), node: deps.config.node, outcome: 'stopped', cycles: count });
    resolveDone();
    return done;
  };
  const onSignal = () => void stop();
  if (opts.handleSignals) {
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }

  // Reconcile at start (no jitter: a freshly booted node should converge at once), then schedule.
  void cycle(0, 'start').then(() => {
    if (!stopping) job.start();
  });
  return { done, stop, cycles: () => count, trigger, ...(watch && { watch }) };
}
