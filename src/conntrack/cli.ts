// Deleting stale conntrack entries on a node with the `conntrack` tool, run through the node's
// command prefix (e.g. `ip netns exec <node>`) like nft. The filters go to the kernel; no table is
// ever read into JS.
import { runUnchecked } from '../netns/netns.js';
import { cleanupArgs, type CleanupOutcome, type StaleForward } from './cleanup.js';

/** What the applier needs: delete the entries of one stale forward, say how many went. */
export interface ConntrackPort {
  deleteStale(s: StaleForward): Promise<number>;
}

const DELETED = /(\d+) flow entries have been deleted/;

export class ConntrackCli implements ConntrackPort {
  constructor(private readonly opts: { prefix?: string[]; conntrack?: string } = {}) {}

  async deleteStale(s: StaleForward): Promise<number> {
    const argv = [...(this.opts.prefix ?? []), this.opts.conntrack ?? 'conntrack', ...cleanupArgs(s)];
    const r = await runUnchecked(argv[0] as string, argv.slice(1));
    // conntrack exits 1 when nothing matched; the summary line on stderr says how many went.
    const m = DELETED.exec(r.stderr);
    if (!m) throw new Error(`${argv.join(' ')} failed (exit ${r.exitCode}): ${r.stderr.trim() || r.stdout.trim()}`);
    return Number(m[1]);
  }
}

/** Delete every stale forward's entries; one failure does not stop the others. */
export async function cleanStale(stale: StaleForward[], port: ConntrackPort): Promise<{ outcomes: CleanupOutcome[]; errors: string[] }> {
  const outcomes: CleanupOutcome[] = [];
  const errors: string[] = [];
  for (const s of stale) {
    try {
      outcomes.push({ ...s, deleted: await port.deleteStale(s) });
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  return { outcomes, errors };
}
