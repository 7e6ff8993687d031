// One reconcile cycle of a node's agent (`cgw-sync once`; `cgw-sync run` repeats it):
//   source  -> fetch the tracked branch, verify it (signature, no rollback)
//   state   -> load and validate it; refused/invalid/unreachable -> keep the last good revision
//   plan    -> desired vs live, drift vs what this node applied last; guests vs the driver,
//              arrivals gated on the other nodes' reports (safe migration)
//   apply   -> pre-apply hooks (veto), guest stops, one nft transaction, guest starts,
//              post-apply hooks
//   report  -> status.json + REPORT.md on status/<node>, committed only when something changed
// Nothing here is ever half-done: the nft transaction is atomic, memory.json is replaced
// atomically, and a cycle killed at any point is simply run again.
import path from 'node:path';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { NftBackend } from '../nft/backend.js';
import { loadState } from '../state/load.js';
import { formatDiagnostics } from '../state/diagnostics.js';
import type { ClusterState } from '../state/types.js';
import { fetchSource } from '../git/source.js';
import { RemoteUnavailable, scrub, splitUserinfo } from '../git/remote.js';
import { publishStatus } from '../git/status-branch.js';
import { ownershipProblem } from '../render/ownership.js';
import { applyNodeNft, planNodeNft } from '../reconcile/nft.js';
import { planJson } from '../plan/plan.js';
import { nftPlanJson } from '../plan/format.js';
import { statusBranch, type AgentConfig } from './config.js';
import { acquireLock } from './lock.js';
import { agentPaths, loadStateCached, readMemory, saveLastGood, writeMemory, type AgentMemory } from './memory.js';
import { classifyDrift, shadowingChains, type DriftItem } from './drift.js';
import { runHooks, type HookResult } from './hooks.js';
import { commitMessage, significantKey, statusFiles, STATUS_FORMAT, type GuestReport, type NodeStatus, type Outcome, type Outage } from './report.js';
import { applyGuestStarts, applyGuestStops, guestChanges, type GuestOutcome } from '../reconcile/guests.js';
import { guestReport, planGuestPhase, settleArrivals, type GuestPhase } from './guest-phase.js';
import { afterReconcile, type SettingsReport } from './settings-phase.js';

export interface CycleDeps {
  config: AgentConfig;
  nft: NftBackend;
  now?: () => Date;
  /** One structured line per cycle (the agent's log). */
  log?: (line: Record<string, unknown>) => void;
}

/** Run one cycle under the node's lock. Throws LockBusy when another cycle is running. */
export async function runOnce(deps: CycleDeps): Promise<NodeStatus> {
  const lock = await acquireLock(agentPaths(deps.config.stateDir).lock);
  try {
    return await cycle(deps, lock.tookOver ? `took over a stale lock of pid ${lock.tookOver.pid}` : undefined);
  } finally {
    await lock.release();
  }
}

function stopwatch() {
  const t0 = Date.now();
  let last = t0;
  const timings: Record<string, number> = {};
  return {
    timings,
    lap(name: string) {
      const now = Date.now();
      timings[name] = (timings[name] ?? 0) + (now - last);
      last = now;
    },
    total() {
      timings.total = Date.now() - t0;
    },
  };
}

function statusUrl(config: AgentConfig): string | undefined {
  if (config.status.url) return config.status.url;
  return /^https?:\/\//i.test(config.source.url) ? config.source.url : undefined;
}

const credentials = (c: AgentConfig) => ({ tokenFile: c.source.tokenFile, tokenEnv: c.source.tokenEnv, username: c.source.username });

function noteOutage(memory: AgentMemory, at: string, error: string): Outage {
  const o = memory.outage ?? { since: at, failures: 0, lastError: error };
  memory.outage = { ...o, failures: o.failures + 1, lastError: error };
  return memory.outage;
}

/** What one cycle carries from phase to phase. */
interface Cycle {
  config: AgentConfig;
  nft: NftBackend;
  memory: AgentMemory;
  now: () => string;
  sw: ReturnType<typeof stopwatch>;
  errors: string[];
  source: NodeStatus['source'];
}

async function cycle(deps: CycleDeps, lockNote: string | undefined): Promise<NodeStatus> {
  const { config } = deps;
  const c: Cycle = {
    config,
    nft: deps.nft,
    memory: await readMemory(config.stateDir),
    now: () => (deps.now ?? (() => new Date()))().toISOString(),
    sw: stopwatch(),
    errors: [],
    source: { url: splitUserinfo(config.source.url).url, branch: config.source.branch, state: 'ok' },
  };
  const candidate = await fetchPhase(c);
  c.sw.lap('fetch');
  const loaded = await statePhase(c, candidate);
  c.sw.lap('load');
  let result: ReconcileResult = { outcome: 'error', drift: [], plan: null, hooks: [], guests: [], corrected: false };
  let settings: SettingsReport | undefined;
  if (!loaded) c.errors.push(c.source.message ?? 'no state to apply yet');
  else {
    try {
      result = await reconcilePhase(c, loaded, candidate);
    } catch (e) {
      // An unexpected failure (nft not readable, a driver crash...): reported like any other.
      c.errors.push(`cycle failed: ${(e as Error).message}`);
    }
    // Node settings (sysctls, conntrackd) after the ruleset: src/agent/settings-phase.ts.
    const s = await afterReconcile(config, loaded.state, result.outcome, c.errors);
    result.outcome = s.outcome;
    settings = s.report;
    c.sw.lap('settings');
  }

  // --- report -----------------------------------------------------------------------------
  const { memory, source, now } = c;
  const gitOk = source.state !== 'unavailable';
  const status: NodeStatus = {
    format: STATUS_FORMAT,
    node: config.node,
    time: now(),
    outcome: result.outcome,
    source,
    ...(memory.applied ? { appliedRevision: memory.applied.revision } : {}),
    plan: result.plan,
    drift: { items: result.drift, corrected: result.corrected },
    guests: result.guests,
    hooks: result.hooks,
    ...(settings && { settings }),
    errors: lockNote ? [...c.errors, lockNote] : c.errors,
    ...(memory.outage ? { outage: gitOk ? { ...memory.outage, until: now() } : memory.outage } : {}),
    timings: c.sw.timings,
  };
  const published = await publish(config, status, memory);
  if (published.startsWith('failed') && gitOk) noteOutage(memory, now(), published.slice('failed: '.length));
  c.sw.lap('publish');
  c.sw.total();
  await writeMemory(config.stateDir, memory);
  deps.log?.({ time: status.time, node: config.node, outcome: status.outcome, revision: status.appliedRevision ?? null, source: source.state, drift: result.drift.map((d) => d.kind), errors: status.errors.length, published, ms: c.sw.timings });
  return status;
}

type Candidate = { revision: string; dir: string } | undefined;

/** Fetch and verify the tracked branch. A refusal or an outage leaves no candidate. */
async function fetchPhase(c: Cycle): Promise<Candidate> {
  const { config, memory, source } = c;
  try {
    const r = await fetchSource({
      url: config.source.url,
      branch: config.source.branch,
      cacheDir: agentPaths(config.stateDir).sourceCache,
      credentials: credentials(config),
      trustedKeys: await readKeys(config.source.trustedKeys),
      lastAppliedOid: memory.applied?.revision,
      allowNonDescendant: config.source.allowNonDescendant,
      timeoutMs: config.source.timeoutSeconds * 1000,
    });
    source.fetched = r.revision;
    if (r.accepted) return { revision: r.revision, dir: path.join(r.dir, config.source.path) };
    Object.assign(source, { state: 'refused', message: `revision ${r.revision} refused (${r.refusal}): ${r.reason}` });
  } catch (e) {
    if (!(e instanceof RemoteUnavailable)) throw e;
    Object.assign(source, { state: 'unavailable', message: e.message });
    noteOutage(memory, c.now(), e.message);
  }
  return undefined;
}

/** The candidate's state if it is valid and ours to apply; else the last good revision's. */
async function statePhase(c: Cycle, candidate: Candidate): Promise<{ state: ClusterState; revision: string } | undefined> {
  const { config, memory, source } = c;
  if (candidate) {
    const r = await loadStateCached(config.stateDir, candidate.revision, candidate.dir);
    const notOwned = r.state && ownershipProblem(r.state, config);
    if (!r.state) Object.assign(source, { state: 'invalid', message: `revision ${candidate.revision} is invalid; nothing of it was applied:\n${formatDiagnostics(r.diagnostics)}` });
    else if (notOwned) Object.assign(source, { state: 'not-owned', message: notOwned });
    else return { state: r.state, revision: candidate.revision };
  }
  if (!memory.applied) return undefined;
  const lastGood = agentPaths(config.stateDir).lastGood;
  const r = await loadState(lastGood);
  if (r.state) return { state: r.state, revision: memory.applied.revision };
  c.errors.push(`the last good state copy in ${lastGood} is unreadable: ${formatDiagnostics(r.diagnostics)}`);
  return undefined;
}

interface ReconcileResult {
  outcome: Outcome;
  drift: DriftItem[];
  plan: NodeStatus['plan'];
  hooks: HookResult[];
  guests: GuestReport[];
  corrected: boolean;
}

/** Plan (nft, drift, guests), then apply: pre-apply hooks, guest stops, nft, guest starts, post-apply hooks. */
async function reconcilePhase(c: Cycle, loaded: { state: ClusterState; revision: string }, candidate: Candidate): Promise<ReconcileResult> {
  const { config, nft, memory, sw, errors } = c;
  const { state, revision } = loaded;
  const planned = await planNodeNft(state, config.node, nft);
  // Drift is measured against what this node put in place last. A cycle killed after its nft
  // transaction but before saving memory left `applying`: live tables equal to it are ours.
  const interrupted = memory.applying && classifyDrift(memory.applying.desired, planned.live, planned.owned).length === 0;
  const baseline = interrupted ? memory.applying?.desired : memory.applied?.desired;
  delete memory.applying;
  const drift = baseline ? classifyDrift(baseline, planned.live, planned.owned) : [];
  drift.push(...shadowingChains(planned.desired, await nft.listBaseChains(), planned.owned));
  const handDrift = drift.some((d) => d.kind !== 'foreign-chain-shadows');
  const { changed, summary, tables } = nftPlanJson(planned.plan);
  sw.lap('plan');

  let guests: GuestPhase | undefined;
  if (config.guests.enabled) {
    try {
      guests = await planGuestPhase(config, state, revision, memory, statusUrl(config));
    } catch (e) {
      errors.push(`guests not reconciled: ${(e as Error).message}`);
    }
  }
  const guestWork = guests ? guestChanges(guests.plan).length > 0 : false;
  sw.lap('guests');

  const newRevision = revision !== memory.applied?.revision;
  // Report-only drift holds back the nft correction only; guests still follow the state
  // (a migration must be able to finish).
  const nftHeld = changed && !newRevision && config.drift === 'report' && handDrift;
  const nftWork = changed && !nftHeld;
  const hooks: HookResult[] = [];
  const guestOutcomes: GuestOutcome[] = [];
  let outcome: Outcome = nftHeld ? 'drift-reported' : 'converged';
  let corrected = false;
  if (nftWork || guestWork) {
    const plan = { node: config.node, revision, nft: planned, ...(guests ? { guests: guests.plan } : {}) };
    const ctx = { node: config.node, revision, planJson: planJson(plan), timeoutMs: config.hookTimeoutSeconds * 1000 };
    hooks.push(...(await runHooks(config.hooksDir, 'pre-apply', ctx)));
    sw.lap('hooks');
    if (hooks.some((h) => !h.ok)) {
      outcome = 'vetoed';
      errors.push(`pre-apply hook ${hooks.find((h) => !h.ok)?.hook} vetoed the apply; nothing was changed`);
    } else {
      const gctx = guests && { state, node: config.node, driver: guests.driver, stopTimeoutMs: config.guests.stopTimeoutSeconds * 1000 };
      if (guests && gctx) guestOutcomes.push(...(await applyGuestStops(guests.plan, gctx)));
      if (nftWork) {
        try {
          memory.applying = { revision, desired: planned.desired };
          await writeMemory(config.stateDir, memory);
          await applyNodeNft(planned, nft);
          corrected = handDrift;
        } catch (e) {
          errors.push(`apply failed, the previous ruleset is intact: ${(e as Error).message}`);
          outcome = 'error';
        }
        delete memory.applying;
      }
      sw.lap('apply');
      if (guests && gctx && outcome !== 'error') guestOutcomes.push(...(await applyGuestStarts(guests.plan, gctx)));
      sw.lap('guests');
      for (const o of guestOutcomes.filter((x) => !x.ok)) errors.push(`guest ${o.guest}: ${o.action} failed: ${o.detail}`);
      if (outcome !== 'error') {
        if (!nftHeld) outcome = 'applied';
        hooks.push(...(await runHooks(config.hooksDir, 'post-apply', ctx)));
      }
      sw.lap('hooks');
    }
  }
  let guestLines: GuestReport[] = [];
  if (guests) {
    await settleArrivals(config, memory, guestOutcomes);
    guestLines = await guestReport(guests, guestOutcomes);
  }
  if (outcome === 'applied' || outcome === 'converged') {
    if (candidate && revision === candidate.revision && (newRevision || !memory.applied)) await saveLastGood(config.stateDir, candidate.dir);
    memory.applied = { revision, at: memory.applied?.revision === revision ? memory.applied.at : c.now(), desired: planned.desired };
  }
  return { outcome, drift, plan: { changed, summary, tables }, hooks, guests: guestLines, corrected };
}

async function readKeys(files: string[]): Promise<string[]> {
  return Promise.all(files.map((f) => readFile(f, 'utf8')));
}

/**
 * Commit the report if it says something new, or records the end of a Git outage.
 * Returns what happened; "failed: <message>" when the server could not be reached.
 */
async function publish(config: AgentConfig, status: NodeStatus, memory: AgentMemory): Promise<string> {
  const key = significantKey(status);
  if (key === memory.lastReportKey && !status.outage?.until) return 'unchanged';
  const files = statusFiles(status);
  if (config.status.dir) {
    await mkdir(config.status.dir, { recursive: true });
    for (const [name, text] of Object.entries(files)) await writeFile(path.join(config.status.dir, name), text);
  }
  const url = statusUrl(config);
  if (!url) {
    memory.lastReportKey = key;
    return config.status.dir ? 'committed' : 'nowhere';
  }
  try {
    await publishStatus({ url, node: config.node, branch: statusBranch(config), workDir: agentPaths(config.stateDir).statusRepo, credentials: credentials(config), timeoutMs: config.source.timeoutSeconds * 1000 }, files, commitMessage(status));
  } catch (e) {
    if (!(e instanceof RemoteUnavailable) && !(e instanceof Error && e.name === 'StatusPushRejected')) throw e;
    return `failed: ${scrub((e as Error).message)}`;
  }
  memory.lastReportKey = key;
  // The outage (if any) is now on record with its end: forget it.
  if (status.outage?.until) delete memory.outage;
  return 'committed';
}
