// Measurements of the agent's two hot paths, each with full reads (as the one-shot commands and
// the agent before the committed ruleset in memory) and with the memory (as `cgw-sync run` now):
//   - one-forward change: plan against the live tables, one transaction, read back;
//   - a no-op cycle: fetch with nothing new, plan, nothing to apply or publish.
// Root and a namespace whose nft holds nothing else are the caller's (src/bench/main.ts).
import type { AgentConfig } from '../agent/config.js';
import { runOnce } from '../agent/cycle.js';
import { startAgent } from '../agent/run.js';
import type { NftBackend, NftCli } from '../nft/backend.js';
import { CommittedRuleset } from '../nft/committed.js';
import { ownedTables, renderNode } from '../render/render.js';
import { planNft } from '../plan/nft-plan.js';
import { applyNodeNft } from '../reconcile/nft.js';
import type { ClusterState } from '../state/types.js';

/** The caller's timer (src/bench/main.ts `median`): median ms of fn over its rounds, `setup` untimed before each. */
export type Median = (fn: () => Promise<unknown>, setup?: () => Promise<unknown>) => Promise<number>;

export interface OneForwardTimes {
  /** Read the tables, plan, one transaction, read them back (the one-shot `apply`). */
  fullReads: number;
  /** Plan against the committed ruleset in memory, one transaction read back through its echo. */
  memory: number;
  /** The same with the new revision's tables rendered too (the agent renders a revision once). */
  memoryWithRender: number;
}

/**
 * One forward more, timed by `median`, between `base` and `changed` (untimed: back to `base`).
 * Leaves the node at `base`.
 */
export async function oneForwardChange(nft: NftCli, node: string, base: ClusterState, changed: ClusterState, median: Median): Promise<OneForwardTimes> {
  const owned = ownedTables(base);
  const desiredBase = renderNode(base, node);
  const desiredChanged = renderNode(changed, node);
  const apply = async (backend: NftBackend, desired: ReturnType<typeof renderNode>) => {
    const live = await backend.list(owned);
    await applyNodeNft({ desired, live, owned, plan: planNft(desired, live, owned) }, backend);
  };
  const toBase = (backend: NftBackend) => () => apply(backend, desiredBase);
  await toBase(nft)();
  const fullReads = await median(() => apply(nft, desiredChanged), toBase(nft));
  const memory = new CommittedRuleset(nft);
  await memory.list(owned);
  const inMemory = await median(() => apply(memory, desiredChanged), toBase(memory));
  const withRender = await median(() => apply(memory, renderNode(changed, node)), toBase(memory));
  await toBase(memory)();
  if (planNft(desiredBase, await nft.list(owned), owned).changes.length > 0) throw new Error('the node did not end at the base state: the measurement is void');
  return { fullReads, memory: inMemory, memoryWithRender: withRender };
}

export interface NoopCycleTimes {
  /** runOnce as `cgw-sync once` does it: memory.json, the state cache file, a full nft read. */
  fullReads: number;
  /** A cycle of the running agent (`cgw-sync run`) started by trigger(): everything in memory. */
  memory: number;
}

/**
 * No-op cycles of an agent whose config points at a state repository it has converged to (or
 * will at its first cycle). The config's schedule must not fire during the measurement.
 */
export async function noopCycle(config: AgentConfig, nft: NftCli, median: Median): Promise<NoopCycleTimes> {
  const converged = async (run: () => Promise<{ outcome: string; errors: string[] }>) => {
    const s = await run();
    if (s.outcome !== 'converged' && s.outcome !== 'applied') throw new Error(`bench agent cycle was ${s.outcome}: ${s.errors.join('; ')}`);
  };
  const once = () => runOnce({ config, nft });
  await converged(once);
  const fullReads = await median(() => converged(once));
  let last: { outcome: string; errors: string[] } | undefined;
  const agent = startAgent({
    config,
    nft,
    log: (_line, status) => {
      if (status) last = status;
    },
  });
  try {
    const cycle = async () => {
      await agent.trigger('bench');
      if (last?.outcome !== 'converged') throw new Error(`bench agent no-op cycle was ${last?.outcome}: ${last?.errors.join('; ')}`);
    };
    // The start cycle (a full read) and one more: the memory is warm.
    await agent.trigger('bench warm-up');
    const memory = await median(cycle);
    return { fullReads, memory };
  } finally {
    await agent.stop();
  }
}
