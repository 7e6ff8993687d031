// One reconcile cycle of a node's agent (`cgw-sync once`; `cgw-sync run` repeats it):
//   source   -> fetch the tracked revision, verify it (signature, no rollback)
//   load     -> load and validate it; refused/invalid/unreachable -> keep the last good revision
//   readLive -> nft tables, sysctls, conntrackd, guests, other nodes' reports (src/agent/node.ts)
//   planNode -> one NodePlan (pure); drift vs what this node applied last; report-only drift
//               holds back the nft correction
//   hooks    -> pre-apply (veto) with the whole plan
//   apply    -> applyNodePlan: guest stops, one nft transaction, settings, guest starts
//   outcome  -> derived once from what happened (src/agent/outcome.ts)
//   report   -> status.json + REPORT.md, published when something changed; cycles whose report
//               could not be published are carried by the next one
// Nothing here is ever half-done: the nft transaction is atomic (and rolled back if the settings
// fail after it), memory.json is replaced atomically, and a cycle killed at any point is run again.
import path from 'node:path';
import type { NftBackend } from '../nft/backend.js';
import type { CommittedRuleset } from '../nft/committed.js';
import { LoadMemory, type LoadResult } from '../state/load.js';
import { statSync } from 'node:fs';
import { formatDiagnostics } from '../state/diagnostics.js';
import type { ClusterState } from '../state/types.js';
import { RemoteUnavailable, splitUserinfo } from '../git/remote.js';
import { ownershipProblem } from '../render/ownership.js';
import { nftPlanJson } from '../plan/format.js';
import { holdNft, type NodePlan } from '../plan/plan.js';
import { applyErrors, applyNotes } from '../reconcile/apply.js';
import type { ConntrackPort } from '../conntrack/cli.js';
import type { GatewayAnnouncer } from '../guests/announce.js';
import type { SettingsPort } from '../settings/reconcile.js';
import type { GuestDriver } from '../guests/driver.js';
import type { NodeView } from '../render/node-view.js';
import type { AgentConfig } from './config.js';
import { acquireLock } from './lock.js';
import { agentPaths, DeferredStateCache, loadLastGood, loadStateCached, readMemory, rememberChange, saveLastGood, writeMemory, type AgentMemory } from './memory.js';
import { decideDrift, type DriftDecision } from './drift.js';
import { redactStatus, significantKey, type EarlierCycle, type GuestReport, type NodeStatus, type Outage, STATUS_FORMAT } from './report.js';
import { executePlan, guestReport, memoPlanNft, nodeMemo, prepareNode, settingsHost, settleGuests, type Executed, type NodeMemo, type NodeRuntime, type Prepared } from './node.js';
import { conntrackdProblem, settingsReport, type SettingsReport } from './settings-phase.js';
import { cycleOutcome, reportedOutcome, settled } from './outcome.js';
import { gitSource, type Source } from './source.js';
import type { Intrusion } from '../git/status-branch.js';
import { findIntrusion, ownKeyProblem, publishReport, readReports, statusReader, statusTrust, statusUrl, unverifiedNote, type PublishResult } from './status-source.js';
import { statusBranchName } from '../git/status-branch.js';
import { earlierNodes, waveGate, waveOf } from '../rollout/waves.js';
import { readLocalSuspension, suspensionOf, type Suspension } from '../rollout/suspend.js';
import { windowGate } from '../rollout/windows.js';
import { hasChanges } from '../plan/plan.js';
import { guardApply, healthBefore, heldHealth, hostHealthEdge, rememberedHealthEdge, rollbackReason, type Guarded, type HealthEdge, type HeldHealth } from '../rollout/checkpoint.js';
import { rememberedSysctls } from '../settings/host.js';
import { DEFAULT_FULL_READ_SECONDS } from './watch.js';
import { statStamp } from '../fs/stamp.js';

/** One cycle as the metrics see it; a cycle that could not run (lock busy, crash) has no status. */
export interface CycleObservation {
  outcome: NodeStatus['outcome'] | 'skipped';
  status?: NodeStatus;
  /** Milliseconds per phase and in total (the report's copy was taken before publishing). */
  timings?: Record<string, number>;
  /** The plan of the state enforced, and how many forwards of it enter this node. */
  planned?: { plan: NodePlan; forwards: number };
}

export interface CycleDeps {
  config: AgentConfig;
  nft: NftBackend;
  /** Default: the Git source of the configuration (src/agent/source.ts). */
  source?: Source;
  /** Default: sysctl and conntrackd through the node's namespace. */
  settings?: SettingsPort;
  /** Deletes stale conntrack entries after a forward changes (the agent: conntrackCli); absent: none are deleted. */
  conntrack?: ConntrackPort;
  /** Announces the gateway to a guest that started (the agent: gatewayAnnouncer); absent: not announced. */
  announce?: GatewayAnnouncer;
  /** Default: the driver the node's hypervisor names. */
  guestDriver?: (view: NodeView) => GuestDriver;
  now?: () => Date;
  /** One structured line per cycle (the agent's log), with the cycle's whole report. */
  log?: (line: Record<string, unknown>, status?: NodeStatus) => void;
  /** Sees each cycle's NodePlan as it goes to the hooks and the applier (tests, debugging). */
  onPlan?: (plan: NodePlan) => void;
  /** Sees how each cycle ended (metrics): its report, and what it planned when it got that far. */
  observe?: (o: CycleObservation) => void;
  /**
   * The memory a long-running agent carries between its cycles: used instead of memory.json when
   * the last save failed (full disk), so unpublished events and the outage are not lost.
   */
  carry?: MemoryCarry;
  /** The health checks' edge (network probes, interface addresses); default: through the node's namespace. */
  health?: Partial<HealthEdge>;
  /** What started this cycle (start, schedule, a trigger's reason), for the log. */
  reason?: string;
}

export interface MemoryCarry {
  memory?: AgentMemory;
  /** The last cycle could not save memory.json: the carried copy is newer than the file. */
  unsaved: boolean;
  /** The long-running agent's in-process caches, made by its first cycle. */
  cache?: AgentCache;
}

/**
 * What a long-running agent keeps in the process so that a cycle with nothing new neither reads
 * YAML nor renders nor diffs: the validated states by revision (a revision never changes), the
 * node memo (view, rendered tables, plans), and which memory.json it wrote last (so it is read
 * again only when someone else replaced it, and not rewritten when nothing in it changed).
 */
interface AgentCache {
  memo: NodeMemo;
  states: Map<string, ClusterState>;
  /** The files of the last load, read and checked: a new revision reads again only what changed. */
  loads: LoadMemory;
  /** The stamp (src/fs/stamp.ts) of the memory.json it wrote: another writer's replaces it. */
  written?: { file: string; fingerprint: string };
  /** The source, which remembers the revision it accepted and checked out last. */
  source?: Source;
  /** The settings port, which trusts the sysctls it read until the next full read. */
  settings?: SettingsPort & { forget(): void };
  /** The last health round between applies (run again when due: see healthBetweenApplies). */
  health?: HeldHealth;
  /** The health edge, which trusts the bridge's addresses and MAC it read until the next full read. */
  edge?: HealthEdge & { forget(): void };
  /** state-cache.json of the revision applied last, written while the agent is idle. */
  stateCache?: DeferredStateCache;
}

/**
 * How long the long-running agent trusts what it read without a process (sysctls, the health
 * round between applies): the full read-back interval of its nft memory (0: read every cycle).
 */
function fullReadMs(config: AgentConfig): number {
  return (config.schedule.fullReadSeconds ?? DEFAULT_FULL_READ_SECONDS) * 1000;
}

/** Whether the nft backend reads the node's tables in full next (an nft backend without memory always does). */
function fullReadDue(nft: NftBackend): boolean {
  const f = (nft as Partial<Pick<CommittedRuleset, 'fullReadDue'>>).fullReadDue;
  return typeof f !== 'function' || f.call(nft);
}

/** What the agent trusts between full reads, forgotten: the next cycle reads the sysctls and the bridge, and runs the health round. */
function forgetReads(cache: AgentCache): void {
  cache.settings?.forget();
  cache.edge?.forget();
  delete cache.health;
}

/** Valid states kept: the revision enforced and one candidate. */
const STATES_KEPT = 2;

/** Run one cycle under the node's lock. Throws LockBusy when another cycle is running. */
export async function runOnce(deps: CycleDeps): Promise<NodeStatus> {
  const lock = await acquireLock(agentPaths(deps.config.stateDir).lock);
  try {
    // A stale lock (its owner crashed) is normal recovery, not an error.
    return await cycle(deps, lock.tookOver ? [`took over a stale lock of pid ${lock.tookOver.pid}`] : []);
  } finally {
    await lock.release();
    deps.carry?.cache?.stateCache?.idle();
  }
}

/** What a stopping agent still owes the disk: the state cache of the revision it applied last. */
export async function flushAgentCache(carry: MemoryCarry): Promise<void> {
  await carry.cache?.stateCache?.flush();
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

/** memory.json, unless the carried copy is newer (the last save failed) or the file cannot be read. */
async function currentMemory(stateDir: string, carry: MemoryCarry | undefined): Promise<AgentMemory> {
  if (carry?.unsaved && carry.memory) return carry.memory;
  const written = carry?.cache?.written;
  if (carry?.memory && written && fileStamp(agentPaths(stateDir).memory) === written.file) return carry.memory;
  return readMemory(stateDir).catch((e: Error) => {
    if (carry?.memory) return carry.memory;
    throw e;
  });
}

/** Synchronous: one stat at each end of every cycle, not worth a trip through the thread pool. */
function fileStamp(file: string): string | undefined {
  try {
    const s = statSync(file, { bigint: true, throwIfNoEntry: false });
    return s && statStamp(s);
  } catch {
    return undefined; // unreadable: not the file this process wrote
  }
}

/** The memory as JSON, each ruleset by object identity (the same rendered tables are not serialized to compare). */
function memoryFingerprint(memory: AgentMemory): string {
  return JSON.stringify(memory, (key, value: unknown) => (key === 'desired' && value !== null && typeof value === 'object' ? `ruleset#${rulesetId(value)}` : value));
}

const rulesetIds = new WeakMap<object, number>();
let nextRulesetId = 1;

function rulesetId(v: object): number {
  let id = rulesetIds.get(v);
  if (id === undefined) {
    id = nextRulesetId++;
    rulesetIds.set(v, id);
  }
  return id;
}

/** memory.json, unless this process wrote exactly this memory last and the file is still the one it wrote. */
async function saveMemory(stateDir: string, memory: AgentMemory, cache: AgentCache | undefined): Promise<void> {
  const file = agentPaths(stateDir).memory;
  const fingerprint = cache ? memoryFingerprint(memory) : '';
  if (cache?.written?.fingerprint === fingerprint && fileStamp(file) === cache.written.file) return;
  await writeMemory(stateDir, memory);
  if (!cache) return;
  const stamp = fileStamp(file);
  cache.written = stamp === undefined ? undefined : { file: stamp, fingerprint };
}

/**
 * A load (YAML or state-cache.json) remembered in the process for the agent: only valid states, few
 * of them. Keyed by revision alone: a revision names its content (a commit, or a folder's content
 * hash), so the checkout and its last-good/ copy are one state, loaded once.
 */
async function loadRemembered(cache: AgentCache | undefined, revision: string, load: () => Promise<LoadResult>): Promise<LoadResult> {
  const key = revision;
  const held = cache?.states.get(key);
  if (held) return { state: held, diagnostics: [] };
  const r = await load();
  if (cache && r.state) {
    cache.states.delete(key);
    cache.states.set(key, r.state);
    while (cache.states.size > STATES_KEPT) cache.states.delete(cache.states.keys().next().value as string);
  }
  return r;
}

function noteOutage(memory: AgentMemory, at: string, error: string): Outage {
  const o = memory.outage ?? { since: at, failures: 0, lastError: error };
  memory.outage = { ...o, failures: o.failures + 1, lastError: error };
  return memory.outage;
}

/** What one cycle carries from phase to phase. */
interface Cycle {
  config: AgentConfig;
  source: Source;
  memory: AgentMemory;
  now: () => string;
  sw: ReturnType<typeof stopwatch>;
  errors: string[];
  notes: string[];
  sourceStatus: NodeStatus['source'];
  onPlan?: CycleDeps['onPlan'];
  health: HealthEdge;
  /** The candidate revision is held (rolled back before): why, for the report. */
  held?: NonNullable<AgentMemory['held']>;
  /** The candidate waits for (or is halted by) the earlier waves. */
  rollout?: NonNullable<NodeStatus['rollout']>;
  /** Suspended: plan, check and report; apply nothing. */
  suspended?: Suspension;
  /** A change window holds new revisions back (and says what to do with drift). */
  window?: NonNullable<NodeStatus['window']>;
  /** The long-running agent's in-process caches (absent for one-shot cycles). */
  cache?: AgentCache;
  /** The source repository's branch tips, as advertised to this cycle's fetch (when that was all it took). */
  advertised?: Record<string, string>;
}

/**
 * The status branch lives in the source repository and this cycle's fetch saw its tip there at
 * the commit this node pushed last: no intrusion, and no second request to find that out.
 */
function ownTipAdvertised(c: Cycle): boolean {
  const tip = c.memory.statusTip;
  if (!tip || !c.advertised || statusUrl(c.config) !== c.config.source.url) return false;
  return c.advertised[`refs/heads/${statusBranchName(c.config.node, c.config.status.branch)}`] === tip;
}

type Candidate = { revision: string; dir: string } | undefined;
type Loaded = { state: ClusterState; revision: string };

/** What the reconcile part of a cycle found and did; the outcome is derived from it. */
interface Reconciled {
  prepared: Prepared;
  drift: DriftDecision;
  executed: Executed;
  guests: GuestReport[];
  settings: SettingsReport;
  guarded: Guarded;
}

async function cycle(deps: CycleDeps, notes: string[]): Promise<NodeStatus> {
  const { config } = deps;
  if (deps.carry) deps.carry.cache ??= { memo: nodeMemo(), states: new Map(), loads: new LoadMemory() };
  const cache = deps.carry?.cache;
  if (cache) {
    cache.source ??= gitSource(config);
    cache.settings ??= rememberedSysctls(deps.settings ?? settingsHost(config), fullReadMs(config));
    cache.stateCache ??= new DeferredStateCache(config.stateDir);
    cache.edge ??= rememberedHealthEdge({ ...hostHealthEdge(config), ...deps.health }, fullReadMs(config));
    cache.stateCache.pause();
  }
  const source = deps.source ?? cache?.source ?? gitSource(config);
  const settings = cache?.settings ?? deps.settings ?? settingsHost(config);
  const c: Cycle = {
    ...(cache && { cache }),
    config,
    source,
    memory: await currentMemory(config.stateDir, deps.carry),
    now: () => (deps.now ?? (() => new Date()))().toISOString(),
    sw: stopwatch(),
    errors: [],
    notes,
    sourceStatus: { url: splitUserinfo(config.source.url).url, branch: config.source.branch, state: 'ok' },
    onPlan: deps.onPlan,
    health: cache?.edge ?? { ...hostHealthEdge(config), ...deps.health },
  };
  const cacheFailure = cache?.stateCache?.takeFailure();
  if (cacheFailure) c.notes.push(`could not save the state cache: ${cacheFailure}`);
  const rt: NodeRuntime = { config, nft: deps.nft, settings, ...(deps.conntrack && { conntrack: deps.conntrack }), ...(deps.announce && { announce: deps.announce }), isAtOrAfter: source.isAtOrAfter, ...(source.placementHistory && { placementHistory: source.placementHistory }), hooks: true, ...(deps.guestDriver && { guestDriver: deps.guestDriver }), ...(cache && { memo: cache.memo }) };
  // The node's tables are read in full this cycle: read what else is trusted in memory too.
  if (cache && fullReadDue(deps.nft)) forgetReads(cache);
  const candidate = await fetchPhase(c);
  c.sw.lap('source');
  const loaded = await statePhase(c, candidate);
  c.suspended = suspensionOf(loaded?.state, config.node, await readLocalSuspension(config.stateDir));
  c.sw.lap('load');
  let rec: Reconciled | undefined;
  let failure: string | undefined;
  if (!loaded) failure = c.sourceStatus.message ?? (c.rollout ? `nothing applied yet: wave ${c.rollout.wave} is ${c.rollout.halted ? `halted: ${c.rollout.halted}` : c.rollout.waiting}` : 'no state to apply yet');
  else {
    try {
      rec = await reconcilePhase(c, rt, loaded);
    } catch (e) {
      // An unexpected failure (nft not readable, a driver crash...): reported like any other.
      failure = `cycle failed: ${(e as Error).message}`;
    }
  }
  const outcome = cycleOutcome({ ...(rec && { plan: rec.prepared.plan, executed: rec.executed, rolledBack: !!rec.guarded.rollback, suspended: !!c.suspended }), ...(failure && { failure }) });
  if (failure) c.errors.push(failure);
  if (rec && loaded) await remember(c, rec, loaded, candidate, outcome);
  c.sw.lap('remember');
  const unverified = loaded && unverifiedNote(loaded.state, config.node);
  if (unverified) c.notes.push(unverified);
  const keyProblem = loaded && (await ownKeyProblem(config, loaded.state));
  if (keyProblem) c.errors.push(keyProblem);
  // Every cycle, not only when the report changes: a forged tip must not stand until then.
  const intrusion = ownTipAdvertised(c) ? undefined : await findIntrusion(config, c.memory.statusTip);
  if (intrusion) c.notes.push(intrusionNote(intrusion));
  c.sw.lap('checks');

  // --- report -----------------------------------------------------------------------------
  const { memory, sourceStatus, now } = c;
  const gitOk = sourceStatus.state !== 'unavailable';
  const nft = rec && nftPlanJson(rec.prepared.plan.nft.plan);
  // Redacted here, so that what is published, logged and returned (--json) is the same safe text.
  const status: NodeStatus = redactStatus({
    format: STATUS_FORMAT,
    node: config.node,
    time: now(),
    outcome,
    source: sourceStatus,
    ...(memory.applied ? { appliedRevision: memory.applied.revision, appliedAt: memory.applied.at } : {}),
    plan: nft ? { changed: nft.changed, summary: nft.summary, tables: nft.tables } : null,
    drift: { items: rec?.drift.items ?? [], corrected: !!rec && rec.drift.byHand && rec.executed.result?.nft.status === 'done' },
    guests: rec?.guests ?? [],
    hooks: rec?.executed.hooks ?? [],
    ...(rec && { settings: rec.settings }),
    ...(rec && { health: rec.guarded.health }),
    ...(rec?.guarded.rollback && { rollback: rec.guarded.rollback }),
    ...(c.held && { held: c.held }),
    ...(c.rollout && { rollout: c.rollout }),
    ...(c.suspended && { suspended: c.suspended }),
    // Only while a new revision waits for it (a closed window alone is not news).
    ...(c.window && sourceStatus.fetched !== memory.applied?.revision && { window: c.window }),
    errors: c.errors,
    ...(c.notes.length && { notes: c.notes }),
    ...(memory.unpublished?.length && { earlier: memory.unpublished }),
    ...(memory.outage ? { outage: gitOk ? { ...memory.outage, until: now() } : memory.outage } : {}),
    ...(intrusion && { intrusion: { ...intrusion, at: now() } }),
    timings: c.sw.timings,
  });
  const published = await publishIfNew(config, status, memory);
  if (published.kind === 'failed' && gitOk) noteOutage(memory, now(), published.error);
  if (published.kind === 'failed') {
    rememberUnpublished(memory, status);
    // The next report carries this cycle as it was; what once/run say now is that it failed.
    Object.assign(status, { outcome: reportedOutcome(status.outcome, published), errors: [...status.errors, `the report could not be published: ${published.error}`] });
  }
  c.sw.lap('publish');
  let saved = true;
  try {
    await saveMemory(config.stateDir, memory, cache);
  } catch (e) {
    // The node is enforced already; say so loudly (log, exit code), and keep the memory in the
    // process so the next report carries what happened.
    saved = false;
    status.errors.push(`could not save ${agentPaths(config.stateDir).memory}: ${(e as Error).message}`);
  }
  // The report carries the phases up to its own making; the log and the metrics all of them.
  c.sw.lap('save');
  c.sw.total();
  deps.observe?.({ outcome: status.outcome, status, timings: c.sw.timings, ...(rec && { planned: { plan: rec.prepared.plan, forwards: rec.prepared.view.forwards.length } }) });
  if (deps.carry) Object.assign(deps.carry, { memory, unsaved: !saved });
  deps.log?.({ time: status.time, node: config.node, ...(deps.reason && { trigger: deps.reason }), outcome: status.outcome, revision: status.appliedRevision ?? null, source: sourceStatus.state, drift: status.drift.items.map((d) => d.kind), errors: status.errors.length, published: published.kind === 'failed' ? `failed: ${published.error}` : published.kind, ...(!saved && { saved: false }), ms: c.sw.timings }, status);
  return status;
}

/** Fetch and verify the tracked branch. A refusal or an outage leaves no candidate. */
async function fetchPhase(c: Cycle): Promise<Candidate> {
  const { config, memory, sourceStatus } = c;
  try {
    const r = await c.source.fetch(memory.applied?.revision);
    sourceStatus.fetched = r.revision;
    if (r.accepted && r.advertised) c.advertised = r.advertised;
    if (r.accepted) return { revision: r.revision, dir: path.join(r.dir, config.source.path) };
    Object.assign(sourceStatus, { state: 'refused', message: `revision ${r.revision} refused (${r.refusal}): ${r.reason}` });
  } catch (e) {
    if (!(e instanceof RemoteUnavailable)) throw e;
    Object.assign(sourceStatus, { state: 'unavailable', message: e.message });
    noteOutage(memory, c.now(), e.message);
  }
  return undefined;
}

/** The candidate's state if it is valid and ours to apply; else the last good revision's. */
async function statePhase(c: Cycle, candidate: Candidate): Promise<Loaded | undefined> {
  const { config, memory, sourceStatus } = c;
  if (candidate && memory.held?.revision === candidate.revision) {
    // Rolled back before: not tried again until the tracked branch moves.
    c.held = memory.held;
  } else if (candidate) {
    delete memory.held;
    const r = await loadRemembered(c.cache, candidate.revision, () => loadStateCached(config.stateDir, candidate.revision, candidate.dir, c.cache?.loads));
    const notOwned = r.state && ownershipProblem(r.state, config);
    if (!r.state) Object.assign(sourceStatus, { state: 'invalid', message: `revision ${candidate.revision} is invalid; nothing of it was applied:\n${formatDiagnostics(r.diagnostics)}` });
    else if (notOwned) Object.assign(sourceStatus, { state: 'not-owned', message: notOwned });
    else if (await rolloutOpen(c, r.state, candidate.revision)) return { state: r.state, revision: candidate.revision };
  }
  if (!memory.applied) return undefined;
  const lastGood = agentPaths(config.stateDir).lastGood;
  const r = await loadRemembered(c.cache, memory.applied.revision, () => loadLastGood(config.stateDir, c.cache?.loads));
  if (r.state) return { state: r.state, revision: memory.applied.revision };
  c.errors.push(`the last good state copy in ${lastGood} is unreadable: ${formatDiagnostics(r.diagnostics)}`);
  return undefined;
}

/**
 * Change windows and waves: whether this node may apply a new revision now (the revision it
 * already enforces always may: drift correction is not held by waves; a closed window says what
 * to do with drift). Records why not for the report.
 */
async function rolloutOpen(c: Cycle, state: ClusterState, revision: string): Promise<boolean> {
  const window = windowGate(state.cluster.windows ?? [], new Date(c.now()));
  if (!window.open) c.window = { waiting: window.reason, drift: window.drift };
  if (revision === c.memory.applied?.revision) return true;
  if (!window.open) return false;
  const wave = waveOf(state, c.config.node) + 1;
  const others = earlierNodes(state, c.config.node);
  if (others.length === 0) return true;
  const read = statusReader(c.config, statusTrust(state));
  const gate = waveGate({ state, node: c.config.node, revision, ...(await readReports(read, others)), now: new Date(c.now()) });
  if (gate.go) return true;
  c.rollout = { wave, revision, ...(gate.halted ? { halted: gate.reason } : { waiting: read ? gate.reason : `${gate.reason} (no status source is configured to read their reports from)` }) };
  return false;
}

/** readLive -> planNode -> drift decision -> hooks -> applyNodePlan, and what to report of it. */
async function reconcilePhase(c: Cycle, rt: NodeRuntime, loaded: Loaded): Promise<Reconciled> {
  const { config, memory, sw } = c;
  const prepared = await prepareNode({ ...rt, lap: sw.lap }, loaded.state, loaded.revision, memory);
  const { nft } = prepared.plan;
  // A cycle killed after its nft transaction but before saving memory left `applying`: live
  // tables equal to it are ours, not drift.
  const interrupted = memory.applying && decideDrift({ baseline: memory.applying.desired, live: nft.live, desired: nft.desired, owned: nft.owned, baseChains: [], policy: 'correct', newRevision: false, nftChanges: false }).items.length === 0;
  const baseline = interrupted ? memory.applying?.desired : memory.applied?.desired;
  const drift = decideDrift({
    baseline,
    live: nft.live,
    desired: nft.desired,
    owned: nft.owned,
    baseChains: prepared.live.baseChains,
    policy: config.drift,
    diff: memoPlanNft(rt.memo),
    newRevision: loaded.revision !== memory.applied?.revision,
    nftChanges: nft.plan.changes.length > 0,
  });
  delete memory.applying;
  // The live tables are the baseline's: the plan is what the desired ruleset changes in it, and
  // memory.json records that change instead of the whole ruleset.
  if (baseline && !drift.byHand) rememberChange(config.stateDir, baseline, nft.desired, nft.plan);
  // A closed change window whose policy is `report` holds drift corrections back too.
  if (drift.hold || (c.window?.drift === 'report' && drift.byHand && nft.plan.changes.length > 0)) prepared.plan = holdNft(prepared.plan);
  c.onPlan?.(prepared.plan);
  sw.lap('plan');
  const guard = { rt, edge: c.health, prepared, state: loaded.state, revision: loaded.revision, memory, ...(hasChanges(prepared.plan) && { previous: await previousRevision(c, loaded) }) };
  const before = await healthBefore(guard);
  sw.lap('health');
  const executed = c.suspended ? { hooks: [] } : await executePlan(rt, prepared, {
    beforeNft: async () => {
      // Enforcing must not depend on the disk: a failed write is reported, the apply goes on.
      await writeMemory(config.stateDir, { ...memory, applying: { revision: loaded.revision, desired: nft.desired } }).catch((e: Error) => c.errors.push(`could not record the transaction in ${agentPaths(config.stateDir).memory}: ${e.message}`));
    },
  });
  sw.lap('apply');
  if (executed.vetoedBy) c.errors.push(`pre-apply hook ${executed.vetoedBy} vetoed the apply; nothing was changed`);
  if (executed.result) {
    c.errors.push(...applyErrors(executed.result));
    c.notes.push(...applyNotes(executed.result));
  }
  // The hold is on disk before the restore runs (the transaction record stays: the live tables
  // may still be the new revision's): a restart after a kill mid-rollback restores, never retries.
  const idle = !executed.result && !executed.vetoedBy && !hasChanges(prepared.plan);
  const held = idle ? heldHealth(c.cache?.health, loaded.revision, Date.now(), fullReadMs(config)) : undefined;
  const roundAt = Date.now();
  const guarded = held ? { health: held } : await guardApply(guard, executed, before, async (rb) => {
    memory.held = { revision: rb.revision, at: c.now(), reason: rollbackReason(rb) };
    await writeMemory(config.stateDir, { ...memory, applying: { revision: loaded.revision, desired: nft.desired } }).catch((e: Error) => c.errors.push(`could not record the rollback in ${agentPaths(config.stateDir).memory}: ${e.message}`));
  });
  if (c.cache && !held) c.cache.health = guarded.rollback ? undefined : { at: roundAt, revision: loaded.revision, report: guarded.health };
  sw.lap('health');
  if (guarded.rollback) c.errors.push(`rolled back ${guarded.rollback.revision} to ${guarded.rollback.restored}: ${rollbackReason(guarded.rollback)}`, ...guarded.rollback.errors);
  const settings = await settingsReport(prepared.plan, executed.result, rt.settings);
  const unhealthy = conntrackdProblem(settings);
  if (unhealthy) c.errors.push(unhealthy);
  const guests = await guestReport(prepared, executed);
  sw.lap('report');
  return { prepared, drift, executed, guests, settings, guarded };
}

/** The previous applied revision's state (last-good/), when a new revision could be rolled back to it. */
async function previousRevision(c: Cycle, loaded: Loaded): Promise<{ state: ClusterState; revision: string } | undefined> {
  const applied = c.memory.applied;
  if (!applied || applied.revision === loaded.revision) return undefined;
  const r = await loadRemembered(c.cache, applied.revision, () => loadLastGood(c.config.stateDir, c.cache?.loads));
  return r.state && { state: r.state, revision: applied.revision };
}

/** What the node keeps for the next cycle, once the outcome is known. */
async function remember(c: Cycle, rec: Reconciled, loaded: Loaded, candidate: Candidate, outcome: NodeStatus['outcome']): Promise<void> {
  const { config, memory } = c;
  const { plan } = rec.prepared;
  const restored = rec.guarded.restored;
  Object.assign(memory, await settleGuests(config.stateDir, restored?.prepared.plan ?? plan, restored?.executed ?? rec.executed));
  const rb = rec.guarded.rollback;
  if (rb) memory.held = { revision: rb.revision, at: c.now(), reason: rollbackReason(rb) };
  if (!settled(outcome)) return;
  const newRevision = loaded.revision !== memory.applied?.revision;
  if (candidate && loaded.revision === candidate.revision && (newRevision || !memory.applied)) {
    await saveLastGood(config.stateDir, candidate.dir).catch((e: Error) => c.errors.push(`could not save the last good state: ${e.message}`));
    // The running agent's state cache (for its next start): after the apply, and not in this cycle.
    c.cache?.stateCache?.set(candidate.revision, candidate.dir, loaded.state);
  }
  memory.applied = { revision: loaded.revision, at: newRevision ? c.now() : (memory.applied?.at ?? c.now()), desired: plan.nft.desired };
}

function intrusionNote(i: Intrusion): string {
  const what = i.oid ? `commit ${i.oid.slice(0, 12)} at the tip of ${i.branch}` : `${i.branch} gone`;
  return `intrusion: found ${what}, which this node did not make (${i.reason}; it pushed ${i.expected.slice(0, 12)} last); its own report is put back on top`;
}

type PublishOutcome = PublishResult | { kind: 'unchanged' };

/** Commit the report if it says something new, or records the end of a Git outage. */
async function publishIfNew(config: AgentConfig, status: NodeStatus, memory: AgentMemory): Promise<PublishOutcome> {
  const key = significantKey(status);
  if (key === memory.lastReportKey && !status.outage?.until && !status.intrusion) return { kind: 'unchanged' };
  // After an intrusion the node's own signed report goes on top of the foreign commit, even when
  // its content is unchanged: the branch keeps its history (no force-push), its tip is the node's.
  const r = await publishReport(config, status, { always: !!status.intrusion });
  if (r.kind === 'failed') return r;
  if (r.kind === 'committed' && r.oid) memory.statusTip = r.oid;
  memory.lastReportKey = key;
  // The outage (if any) and the cycles carried by this report are now on record: forget them.
  if (status.outage?.until) delete memory.outage;
  delete memory.unpublished;
  return r;
}

const MAX_UNPUBLISHED = 50;

/** Keep what a cycle whose report failed to publish did, for the next report that goes out. */
function rememberUnpublished(memory: AgentMemory, s: NodeStatus): void {
  if (s.drift.items.length === 0 && s.errors.length === 0 && s.outcome !== 'applied') return;
  const e: EarlierCycle = { time: s.time, outcome: s.outcome, ...(s.appliedRevision && { appliedRevision: s.appliedRevision }), drift: s.drift, errors: s.errors };
  memory.unpublished = [...(memory.unpublished ?? []), e].slice(-MAX_UNPUBLISHED);
}
