// `npm run bench`: cgw-sync at 10,000 forwards against the raw nft floor measured in the same
// run, inside a network namespace the benchmark creates and deletes (root needed). Prints
// ratios, never asserts: speed goals live here, not in tests.
import { performance } from 'node:perf_hooks';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createNamespace, deleteNamespace, runIn } from '../netns/netns.js';
import { NftCli } from '../nft/backend.js';
import { renderNode, ownedTables } from '../render/render.js';
import { DEFAULT_GUEST_POLICY } from '../guests/policy.js';
import { planNft, planToTransaction } from '../plan/nft-plan.js';
import { applyNodeNft, planNodeNft } from '../reconcile/nft.js';
import { Transaction } from '../nft/transaction.js';
import { syntheticState } from './synthetic.js';
import { cp, mkdir } from 'node:fs/promises';
import { createBareRepo } from '../git/bare-repo.js';
import { startGitHttpServer } from '../git/http-server.js';
import { runOnce } from '../agent/cycle.js';
import type { AgentConfig } from '../agent/config.js';
import type { ClusterState } from '../state/types.js';

const FORWARDS = Number(process.env.CGW_BENCH_FORWARDS ?? 10_000);
const ROUNDS = Number(process.env.CGW_BENCH_ROUNDS ?? 7);

/** Median wall time in ms of `rounds` runs of fn; `setup` runs before each, untimed. */
async function median(fn: () => Promise<unknown>, setup: () => Promise<unknown> = async () => {}, rounds = ROUNDS): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    await setup();
    // Garbage left by the setup (e.g. parsing a 10,000-element listing) is not the measured step's cost.
    (globalThis as { gc?: () => void }).gc?.();
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] as number;
}

function row(what: string, ours: number, floorName: string, floor: number, target?: string): string {
  const ratio = floor > 0 ? (ours / floor).toFixed(2) : 'n/a';
  return `${what.padEnd(44)} ${ours.toFixed(1).padStart(8)} ms   ${floorName.padEnd(30)} ${floor.toFixed(1).padStart(8)} ms   ratio ${ratio}x${target ? `   (target ${target})` : ''}`;
}

async function main(): Promise<void> {
  const ns = `cgwbench-${process.pid}-${randomBytes(2).toString('hex')}`;
  const dir = await mkdtemp(join(tmpdir(), 'cgw-bench-'));
  await createNamespace(ns);
  const prefix = ['ip', 'netns', 'exec', ns];
  const nft = new NftCli({ prefix });
  const raw = (args: string[]) => runIn(ns, 'nft', args);
  const flush = () => raw(['flush', 'ruleset']);
  try {
    const state = syntheticState(FORWARDS);
    const changed = syntheticState(FORWARDS + 1);
    const owned = ownedTables(state);
    const fullBatch = planToTransaction(planNft(renderNode(state, 'node1'), { tables: [] }, owned)).toText();
    const fullFile = join(dir, 'full.nft');
    await writeFile(fullFile, fullBatch);
    const lines: string[] = [`cgw-sync benchmark: ${FORWARDS} forwards, median of ${ROUNDS} runs, nft in namespace ${ns}`, ''];

    // Apply from empty: our whole apply (read, plan, one transaction, read back) vs raw `nft -f`.
    const rawFull = await median(() => raw(['-f', fullFile]), flush);
    const ourFull = await median(async () => applyNodeNft(await planNodeNft(state, 'node1', nft), nft), flush);
    lines.push(row('apply from empty (read+plan+tx+verify)', ourFull, 'raw nft -f (same ruleset)', rawFull));

    // A converged node: the raw listing is the floor for any read of live state.
    await flush();
    await raw(['-f', fullFile]);
    const rawList = await median(() => raw(['-j', 'list', 'table', 'ip', 'cgw_nat']));
    const renderPlan = await median(async () => planNft(renderNode(state, 'node1'), await nft.list(owned), owned), async () => {});
    const live = await nft.list(owned);
    const pureRenderPlan = await median(async () => planNft(renderNode(state, 'node1'), live, owned));
    lines.push(row('render+plan (pure, live already read)', pureRenderPlan, 'raw nft -j list table', rawList));
    lines.push(row('no-op plan (read live + render + plan)', renderPlan, 'raw nft -j list table', rawList, '<= 1.5x'));

    // One forward more: the transaction alone vs raw `nft -f` of the same one-element batch,
    // then the whole apply command including its read and read-back.
    const oneTx = new Transaction().add({ op: 'add-elements', table: { family: 'ip', name: 'cgw_nat' }, map: 'fwd_tcp', elements: [{ key: 10000 + FORWARDS, value: { concat: ['10.5.5.201', 1] } }] });
    const oneFile = join(dir, 'one.nft');
    await writeFile(oneFile, oneTx.toText());
    const removeOne = () => raw(['delete', 'element', 'ip', 'cgw_nat', 'fwd_tcp', `{ ${10000 + FORWARDS} }`]).catch(() => undefined);
    const rawOne = await median(() => raw(['-f', oneFile]), removeOne);
    let planned = await planNodeNft(changed, 'node1', nft);
    const ourOneTx = await median(() => nft.run(planToTransaction(planned.plan)), async () => {
      await removeOne();
      planned = await planNodeNft(changed, 'node1', nft);
    });
    const ourOneFull = await median(async () => applyNodeNft(await planNodeNft(changed, 'node1', nft), nft), removeOne);
    lines.push(row('one-forward change: apply transaction', ourOneTx, 'raw nft -f (one element)', rawOne, '< 50 ms and <= 1.5x'));
    lines.push(row('one-forward change: whole apply command', ourOneFull, 'raw list + raw -f + raw list', 2 * rawList + rawOne));

    // The agent: one full no-op cycle (fetch with nothing new, read live, plan, no report commit).
    await flush();
    const cycleMs = await agentNoopCycle(state, dir, ns);
    lines.push(row('agent no-op cycle (fetch+read+plan, no commit)', cycleMs, 'raw nft -j list table', rawList, '< 300 ms'));
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await deleteNamespace(ns);
    await rm(dir, { recursive: true, force: true });
  }
}

/** The state as a state repository: state-example's cluster, nodes and guests, and `state`'s forwards. */
async function writeStateRepo(state: ClusterState, dir: string): Promise<void> {
  const example = new URL('../../state-example/', import.meta.url);
  for (const part of ['cluster.yaml', 'nodes', 'guests']) await cp(new URL(part, example), join(dir, part), { recursive: true });
  await mkdir(join(dir, 'forwards'), { recursive: true });
  const items = state.forwards.map((f) => `  - { name: ${f.name}, protocol: ${f.protocol}, port: ${f.port}, target: { guest: ${f.target.guest}, port: ${f.target.port} } }`);
  await writeFile(join(dir, 'forwards', 'bench.yaml'), `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${items.join('\n')}\n`);
}

async function agentNoopCycle(state: ClusterState, dir: string, ns: string): Promise<number> {
  const seed = join(dir, 'seed');
  await writeStateRepo(state, seed);
  await mkdir(join(dir, 'srv'));
  await createBareRepo(join(dir, 'srv'), 'state.git', { seedDir: seed, message: 'bench' });
  const server = await startGitHttpServer({ projectRoot: join(dir, 'srv') });
  try {
    const config: AgentConfig = {
      file: join(dir, 'agent.yaml'),
      node: 'node1',
      source: { url: server.repoUrl('state.git'), branch: 'main', path: '.', trustedKeys: [], allowNonDescendant: false, timeoutSeconds: 30 },
      schedule: { cron: '* * * * *', jitterSeconds: 0 },
      ownedTables: [],
      drift: 'correct',
      status: { branch: 'status/{node}' },
      hookTimeoutSeconds: 60,
      stateDir: join(dir, 'agent'),
      nft: 'nft',
      netns: ns,
      guests: { ...DEFAULT_GUEST_POLICY, enabled: false, runDir: join(dir, 'run'), stopTimeoutSeconds: 60 },
    };
    const deps = { config, nft: new NftCli({ prefix: ['ip', 'netns', 'exec', ns] }) };
    const first = await runOnce(deps);
    if (first.outcome !== 'applied') throw new Error(`bench agent did not apply: ${first.errors.join('; ')}`);
    return await median(async () => {
      const s = await runOnce(deps);
      if (s.outcome !== 'converged') throw new Error(`no-op cycle was ${s.outcome}`);
    });
  } finally {
    await server.stop();
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
