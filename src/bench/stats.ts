// Small pure helpers of the benchmark: medians and sample collection.
import { performance } from 'node:perf_hooks';

/** Median of the samples (the lower middle one for an even count); NaN for none. */
export function median(samples: number[]): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] as number;
}

/** Collect garbage (node --expose-gc) so one step's garbage is not the next measured step's cost. */
export function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/** Wall time of one call in ms, after a gc; `fn`'s result is returned beside it. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  collectGarbage();
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

/** MiB from bytes. */
export const mib = (bytes: number): number => bytes / (1024 * 1024);
