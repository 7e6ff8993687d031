// The agent's rows of the benchmark at one size, measured through the agent's own cycle (fetch
// from a real Git smart-HTTP server, load, read live nft, plan, apply, publish the report) in a
// network namespace made for it, beside the raw nft floor in a second namespace that holds the
// same tables (raw `nft -f` of the agent's own batches, so the agent never sees a hand-made change):
//   one-forward change  a new revision that adds one forward; floor: raw `nft -f` of the very
//                       batch the agent sent, from the same starting point
//   no-op cycle         nothing new; floor: raw `nft -j list table` of the forwards' table
// Rounds alternate: revision, its floor, no-op, its floor, so load on the machine hits both alike.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentConfig } from '../agent/config.js';
import { runOnce, type CycleDeps } from '../agent/cycle.js';
import { startAgent, type Agent } from '../agent/run.js';
import type { NodeStatus } from '../agent/report.js';
import { commitDirectory, createBareRepo } from '../git/bare-repo.js';
import { DEFAULT_GUEST_POLICY } from '../guests/policy.js';
import { createNamespace, deleteNamespace, runIn } from '../netns/netns.js';
import { NftCli } from '../nft/backend.js';
import type { Ruleset } from '../nft/model.js';
import type { NodePlan } from '../plan/plan.js';
import { planNft, planToTransaction } from '../plan/nft-plan.js';
import { benchCommit, benchGit } from './git-cli.js';
import { startGitServerProcess } from './git-server-process.js';
import { AFTER_CONVERGED } from './report.js';
import { median, timed } from './stats.js';
import { forwardsDocument } from './state-repo.js';
import { syntheticState, writeSyntheticStateRepo } from './synthetic.js';

/** Median ms of each cycle phase (the cycle's own stopwatch) beside the median total. */
export interface CycleFigure {
  ms: number;
  phases: Record<string, number>;
  /**
   * Median ms from the start of the cycle until the node was converged: the new ruleset applied
   * and checked (every phase before AFTER_CONVERGED). The whole cycle (`ms`) goes on to publish
   * the report and save the agent's memory.
   */
  convergedMs: number;
  /**
   * The same without the source phase: from the fetched revision to the node converged (load,
   * read, plan, health, apply), the apply as the agent does it, which the raw nft -f floor bounds.
   */
  appliedMs: number;
}

export interface AgentFigures {
  forwards: number;
  rounds: number;
  /** How the cycles were started: the running agent's trigger(), or runOnce (an agent without one). */
  driver: 'trigger' | 'runOnce';
  /** The first cycle: everything applied from an empty namespace (one sample). */
  firstCycleMs: number;
  oneForward: CycleFigure;
  /** Raw `nft -f` of the one-forward batch the agent applied. */
  rawOneForward: number;
  /** The system git's `git fetch` of the same new revision from the same server (the floor of the source phase). */
  rawFetch: number;
  /** The system git's `git push` of a one-file commit to the same server (the floor of publishing a report). */
  rawPush: number;
  noop: CycleFigure;
  /** Raw `nft -j list table ip cgw_nat`. */
  rawList: number;
}

/** The forwards table of state-example's cluster (the synthetic repository keeps its cluster.yaml). */
const FORWARDS_TABLE = ['ip', 'cgw_nat'];

/** A bench node's agent: node1 of the repository, nft in `ns`, no guests, state under `dir`. */
function benchAgentConfig(dir: string, url: string, ns: string): AgentConfig {
  return {
    file: join(dir, 'agent.yaml'),
    node: 'node1',
    source: { url, branch: 'main', path: '.', trustedKeys: [], allowNonDescendant: false, timeoutSeconds: 60 },
    // The bench starts every cycle itself: a schedule that never fires while it runs.
    schedule: { cron: '0 0 1 1 *', jitterSeconds: 0 },
    ownedTables: [],
    drift: 'correct',
    status: { branch: 'status/{node}' },
    hookTimeoutSeconds: 60,
    stateDir: join(dir, 'agent'),
    nft: 'nft',
    netns: ns,
    guests: { ...DEFAULT_GUEST_POLICY, enabled: false, runDir: join(dir, 'run'), stopTimeoutSeconds: 60 },
  };
}

/** node1's guest bridge with the gateway on it, as on a real node: its health round passes the gateway check. */
async function addGuestBridge(ns: string): Promise<void> {
  const { cluster, nodes } = syntheticState(0);
  const dev = nodes[0]!.guestBridge.interface;
  const prefix = cluster.guestSubnet.split('/')[1];
  for (const args of [['link', 'add', dev, 'type', 'bridge'], ['addr', 'add', `${cluster.gatewayIP}/${prefix}`, 'dev', dev], ['link', 'set', dev, 'up']]) await runIn(ns, 'ip', args);
}

/** What the bench's clock saw beyond the cycle's own phases (the trigger, the log line). */
const REST = 'rest';
/** The cycle's fetch of the revision (src/agent/cycle.ts). */
const SOURCE = 'source';

/** A cycle as the bench sees it: its report, and its complete timings (from its log line). */
export interface CycleEnd {
  status: NodeStatus;
  timings: Record<string, number>;
}

function medianFigure(samples: { ms: number; value: CycleEnd }[]): CycleFigure {
  const sum = (t: Record<string, number>) => Object.values(t).reduce((a, b) => a + b, 0);
  const phases = samples.map(({ ms, value }): Record<string, number> => {
    const t = Object.fromEntries(Object.entries(value.timings).filter(([n]) => n !== 'total'));
    return { ...t, [REST]: Math.max(0, ms - sum(t)) };
  });
  const converged = phases.map((p) => sum(Object.fromEntries(Object.entries(p).filter(([n]) => n !== REST && !AFTER_CONVERGED.includes(n)))));
  const applied = phases.map((p, i) => converged[i]! - (p[SOURCE] ?? 0));
  const names = [...new Set(phases.flatMap((p) => Object.keys(p)))];
  return {
    ms: median(samples.map((s) => s.ms)),
    phases: Object.fromEntries(names.map((n) => [n, median(phases.map((p) => p[n] ?? 0))])),
    convergedMs: median(converged),
    appliedMs: median(applied),
  };
}

/** The batch that turns `from` into `to` (both as rendered), as nft text. */
function batchText(to: Ruleset, from: Ruleset, owned: NodePlan['nft']['owned']): string {
  return planToTransaction(planNft(to, from, owned)).toText();
}

/** How the bench drives the agent's cycles. */
interface CycleRunner {
  /** The agent's first cycle (its start). */
  first(): Promise<CycleEnd>;
  /** One more cycle, now. */
  cycle(): Promise<CycleEnd>;
  stop(): Promise<void>;
}

/**
 * The running agent (`cgw-sync run`: startAgent) with whatever it keeps in memory between cycles,
 * each cycle started by its trigger() as a webhook or nft monitor starts one. An agent without
 * trigger() (before it had one) runs each further cycle as its schedule would: runOnce.
 */
function runningAgent(deps: CycleDeps, driver: { kind: AgentFigures['driver'] }): CycleRunner {
  let agent: (Agent & { trigger?: (reason: string) => Promise<void> }) | undefined;
  let waiting: ((end: CycleEnd) => void) | undefined;
  // The next cycle's report, as the agent logs it at the end of the cycle, with all its phases.
  const next = () =>
    new Promise<CycleEnd>((resolve) => {
      waiting = resolve;
    });
  const log: CycleDeps['log'] = (line, status) => {
    const w = waiting;
    if (!status || !w) return;
    waiting = undefined;
    w({ status, timings: (line.ms as Record<string, number> | undefined) ?? status.timings });
  };
  return {
    first: () => {
      const p = next();
      agent = startAgent({ ...deps, log });
      driver.kind = typeof agent.trigger === 'function' ? 'trigger' : 'runOnce';
      return p;
    },
    cycle: async () => {
      const p = next();
      if (agent?.trigger) await agent.trigger('bench');
      else await runOnce({ ...deps, log });
      return p;
    },
    stop: async () => {
      await agent?.stop();
    },
  };
}

/** A cycle that must end with `outcome` (at `revision` when given); the bench stops otherwise. */
async function cycleExpecting(cycle: () => Promise<CycleEnd>, outcome: NodeStatus['outcome'], revision?: string): Promise<{ ms: number; value: CycleEnd }> {
  const r = await timed(cycle);
  const s = r.value.status;
  if (s.outcome !== outcome || (revision && s.appliedRevision !== revision)) {
    throw new Error(`bench agent cycle: expected ${outcome}${revision ? ` at ${revision.slice(0, 12)}` : ''}, got ${s.outcome} at ${s.appliedRevision?.slice(0, 12) ?? 'none'}: ${s.errors.join('; ') || s.source.message || ''}`);
  }
  return r;
}

/** `rounds` rounds, or fewer when the clock passes `until` (ms since the epoch; at least one round). */
export async function measureAgent(forwards: number, rounds: number, progress: (line: string) => void, until = Number.POSITIVE_INFINITY): Promise<AgentFigures> {
  const ns = `cgwbench-${process.pid}-${randomBytes(2).toString('hex')}`;
  const floorNs = `${ns}-raw`;
  const dir = await mkdtemp(join(tmpdir(), 'cgw-bench-agent-'));
  const seed = join(dir, 'seed');
  await writeSyntheticStateRepo(seed, forwards);
  await mkdir(join(dir, 'srv'));
  const repo = await createBareRepo(join(dir, 'srv'), 'state.git', { seedDir: seed, message: `bench: ${forwards} forwards` });
  // A second repository on the same server, for the floor of a push.
  const pushSeed = join(dir, 'push-seed');
  await mkdir(pushSeed);
  await writeFile(join(pushSeed, 'README'), 'pushed to by the benchmark\n');
  await createBareRepo(join(dir, 'srv'), 'floor.git', { seedDir: pushSeed, message: 'bench: push floor' });
  const made: string[] = [];
  const server = await startGitServerProcess(join(dir, 'srv'));
  let agent: CycleRunner | undefined;
  try {
    const fetchClone = join(dir, 'fetch-clone');
    const pushClone = join(dir, 'push-clone');
    await benchGit(['clone', '--quiet', server.repoUrl('state.git'), fetchClone]);
    await benchGit(['clone', '--quiet', server.repoUrl('floor.git'), pushClone]);
    for (const n of [ns, floorNs]) {
      await createNamespace(n);
      made.push(n);
    }
    await addGuestBridge(ns);
    let plan: NodePlan | undefined;
    const onPlan = (p: NodePlan) => {
      plan = p;
    };
    const driver = { kind: 'runOnce' as AgentFigures['driver'] };
    agent = runningAgent({ config: benchAgentConfig(dir, server.repoUrl('state.git'), ns), nft: new NftCli({ prefix: ['ip', 'netns', 'exec', ns] }), onPlan }, driver);
    progress(`${forwards} forwards: first cycle (everything from an empty namespace ${ns})`);
    const first = await cycleExpecting(agent.first, 'applied');
    const raw = (args: string[]) => runIn(floorNs, 'nft', args);
    const file = join(dir, 'batch.nft');
    const rawApply = async (to: Ruleset, from: Ruleset, owned: NodePlan['nft']['owned']) => {
      await writeFile(file, batchText(to, from, owned));
      return (await timed(() => raw(['-f', file]))).ms;
    };
    await rawApply(plan!.nft.desired, { tables: [] }, plan!.nft.owned);
    const ones: { ms: number; value: CycleEnd }[] = [];
    const noops: { ms: number; value: CycleEnd }[] = [];
    const rawOnes: number[] = [];
    const rawLists: number[] = [];
    const rawFetches: number[] = [];
    const rawPushes: number[] = [];
    for (let i = 0; i < rounds && (i === 0 || Date.now() < until); i++) {
      progress(`${forwards} forwards: round ${i + 1}/${rounds}`);
      const before = plan!.nft.desired;
      // A new revision with one forward more (public ports 10000.. are the synthetic ones).
      const extra = { name: `bench-extra-${i}`, protocol: 'tcp' as const, port: 10000 + forwards + i, target: { guest: 'guest1', port: 1 + (i % 1000) } };
      await writeFile(join(seed, 'forwards', `bench-extra-${i}.yaml`), forwardsDocument([extra]));
      const revision = await commitDirectory(repo, seed, { message: `bench: forward ${extra.name}` });
      ones.push(await cycleExpecting(agent.cycle, 'applied', revision));
      rawOnes.push(await rawApply(plan!.nft.desired, before, plan!.nft.owned));
      rawFetches.push((await timed(() => benchGit(['fetch', '--quiet', 'origin', 'main'], fetchClone))).ms);
      await writeFile(join(pushClone, `round-${i}`), `${revision}\n`);
      await benchCommit(pushClone, `bench: push floor ${i}`);
      rawPushes.push((await timed(() => benchGit(['push', '--quiet', 'origin', 'HEAD:main'], pushClone))).ms);
      noops.push(await cycleExpecting(agent.cycle, 'converged', revision));
      rawLists.push((await timed(() => raw(['-j', 'list', 'table', ...FORWARDS_TABLE]))).ms);
    }
    return {
      forwards,
      rounds: ones.length,
      driver: driver.kind,
      firstCycleMs: first.ms,
      oneForward: medianFigure(ones),
      rawOneForward: median(rawOnes),
      rawFetch: median(rawFetches),
      rawPush: median(rawPushes),
      noop: medianFigure(noops),
      rawList: median(rawLists),
    };
  } finally {
    await agent?.stop();
    await server.stop();
    for (const n of made) await deleteNamespace(n);
    await rm(dir, { recursive: true, force: true });
  }
}
