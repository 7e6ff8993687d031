// Push-to-converged in the lab: `cgw-sync lab up [--webhook]` (labStart, as the CLI runs it) with the
// seed's nodes, then commits pushed to the lab's Git server over HTTP with the git CLI, each timed from the
// start of `git push` until every node's status branch reports that revision applied (the
// status refs polled at a short interval, no fixed waits). `lab down` in a finally.
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { labStart, type LabStartOptions } from '../lab/lab.js';
import { readNodeStatus } from '../lab/status.js';
import { labDown } from '../lab/topology.js';
import { waitUntil } from '../proc/process.js';
import { benchCommit, benchGit } from './git-cli.js';
import { median } from './stats.js';
import { forwardsDocument } from './state-repo.js';

export interface PushFigures {
  pushes: number;
  /** Median from `git push` to every node reporting the revision applied. */
  ms: number;
  /** Median of `git push` alone (the floor: nothing can converge before the push is in). */
  pushMs: number;
  /** Each agent process after the pushes: current and peak RSS (from /proc). */
  agentRss: Record<string, { rssMiB: number; peakMiB: number }>;
}

/** Whether this build's agents take a push webhook: the agent configuration's schema knows `webhook`. */
export function webhookSupported(): boolean {
  const schema = JSON.parse(readFileSync(new URL('../../schema/agent.schema.json', import.meta.url), 'utf8')) as { properties?: Record<string, unknown> };
  return schema.properties?.webhook !== undefined;
}

const CONVERGE_TIMEOUT_MS = 60_000;
const POLL_MS = 10;

/** VmRSS and VmHWM of a process, MiB. */
async function processRss(pid: number): Promise<{ rssMiB: number; peakMiB: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rssMiB: kib('VmRSS') / 1024, peakMiB: kib('VmHWM') / 1024 };
}

/** With `webhook`, the Git server sends each agent a push webhook (lab up --webhook); else they poll every 2 s. */
export async function measurePushToConverged(pushes: number, webhook: boolean, progress: (line: string) => void): Promise<PushFigures> {
  const prefix = `cgwb${process.pid}${webhook ? 'w' : 's'}-`;
  const runRoot = await mkdtemp(join(tmpdir(), 'cgw-bench-lab-'));
  const clone = join(runRoot, 'clone');
  try {
    progress(`lab up${webhook ? ' --webhook' : ''} (prefix ${prefix})`);
    // `webhook` is a lab option only where webhooks exist (webhookSupported).
    const opts: LabStartOptions & { webhook?: boolean } = { prefix, runRoot, ...(webhook && { webhook }), progress: (line) => progress(`lab: ${line}`) };
    const lab = await labStart(opts);
    const git = (args: string[]) => benchGit(args, clone);
    await benchGit(['clone', '--quiet', lab.url, clone]);
    const nodes = lab.plan.nodes.map((n) => n.name);
    const totals: number[] = [];
    const pushTimes: number[] = [];
    for (let i = 0; i < pushes; i++) {
      const extra = { name: `bench-push-${i}`, protocol: 'tcp' as const, port: 30000 + i, target: { guest: 'guest1', port: 22 } };
      await writeFile(join(clone, 'forwards', `${extra.name}.yaml`), forwardsDocument([extra]));
      const revision = await benchCommit(clone, `bench: forward ${extra.name}`);
      const t0 = performance.now();
      await git(['push', '--quiet', 'origin', 'HEAD:main']);
      pushTimes.push(performance.now() - t0);
      const applied = async () => (await Promise.all(nodes.map((n) => readNodeStatus(lab.repo, n)))).every((s) => s?.appliedRevision === revision && s.outcome !== 'error');
      if (!(await waitUntil(applied, CONVERGE_TIMEOUT_MS, POLL_MS))) throw new Error(`lab nodes did not report ${revision.slice(0, 12)} applied within ${CONVERGE_TIMEOUT_MS} ms`);
      totals.push(performance.now() - t0);
      progress(`push ${i + 1}/${pushes}: converged on all ${nodes.length} nodes after ${totals[i]!.toFixed(0)} ms`);
    }
    const agents = lab.record.processes.filter((p) => p.name.startsWith('agent '));
    const agentRss = Object.fromEntries(await Promise.all(agents.map(async (p) => [p.name.replace(/^agent /, ''), await processRss(p.pid)] as const)));
    return { pushes, ms: median(totals), pushMs: median(pushTimes), agentRss };
  } finally {
    await labDown(prefix, { runRoot }).catch((e: Error) => progress(`lab down failed: ${e.message}`));
    await rm(runRoot, { recursive: true, force: true });
  }
}
