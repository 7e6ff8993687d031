// A file's stat stamp, as Git keeps one per index entry: a file whose stamp is unchanged since it
// was read (or copied) has the same bytes, and need not be read again. The one exception is
// Git's "racily clean" file: a rewrite of the same size within the same timestamp tick as the
// stamp leaves the stamp unchanged. So a stamp is only trusted when the file had not changed for
// RACY_MS when it was taken; a file changed later than that is read every time until it settles.
import type { BigIntStats } from 'node:fs';

/** How long a file must have stayed unchanged before its stamp is trusted (far above any timestamp tick). */
export const RACY_MS = 2000;

export interface Stamp {
  /** Inode, size, modification and change time (ctime cannot be set back by utimes). */
  stamp: string;
  size: bigint;
  /** Unchanged for RACY_MS at `now`: the stamp may be trusted. */
  settled: boolean;
}

/** The stamp string alone: equal for the same file unchanged (or changed within one timestamp tick). */
export function statStamp(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/** The stamp of a file from its bigint stat; `now` in ms since the epoch (Date.now()). */
export function stampOf(st: BigIntStats, now: number): Stamp {
  const changed = st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs;
  return {
    stamp: statStamp(st),
    size: st.size,
    settled: Number(changed / 1_000_000n) < now - RACY_MS,
  };
}
