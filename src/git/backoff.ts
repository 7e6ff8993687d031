// Retry delays for an unreachable Git server: exponential growth, a cap, and jitter so that
// several nodes that lost the server at the same moment do not all come back at the same moment.

export interface BackoffPolicy {
  /** Delay after the first failure. */
  initialMs: number;
  /** Upper bound for any delay. */
  maxMs: number;
  /** Growth per further failure. */
  factor: number;
  /** Fraction (0..1) by which a delay may be shortened at random. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 5_000, maxMs: 300_000, factor: 2, jitter: 0.2 };

/**
 * Delay before retry number `attempt` (0 = right after the first failure).
 * Pure: `random` is injectable (returns [0, 1)), so tests are deterministic.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const n = Math.max(0, Math.floor(attempt));
  const raw = Math.min(policy.maxMs, policy.initialMs * policy.factor ** n);
  const jitter = Math.min(1, Math.max(0, policy.jitter));
  return Math.round(raw * (1 - jitter * random()));
}
