// The one path from a loaded state to an applied node, shared by the agent's cycle and the CLI's
// `plan` and `apply`:
//   resolveNode -> readLive (nft, settings, guests, migration gates) -> planNode
//     -> pre-apply hooks (veto) -> applyNodePlan -> post-apply hooks -> guest report
// Planning is pure and returns the memory updates as data; the caller decides what to keep.
import type { NftBackend } from '../nft/backend.js';
import type { ClusterState } from '../state/types.js';
import { driverFor, type GuestDriver } from '../guests/index.js';
import { resolveNode, type NodeView } from '../render/node-view.js';
import { readLiveNode } from '../reconcile/live.js';
import { applyFailed, applyNodePlan, type ApplyResult } from '../reconcile/apply.js';
import type { GuestOutcome } from '../reconcile/guests.js';
import { hasChanges, planJson, planNode, type GuestMemory, type NodeLive, type NodePlan } from '../plan/plan.js';
import { SettingsHost } from '../settings/host.js';
import type { SettingsPort } from '../settings/reconcile.js';
import { ConntrackCli, type ConntrackPort } from '../conntrack/cli.js';
import { CommandAnnouncer, type GatewayAnnouncer } from '../guests/announce.js';
import type { AgentConfig } from './config.js';
import { runHooks, type HookResult } from './hooks.js';
import { readGates, readReleases, writeReleases } from './migration.js';
import { afterMigration, NO_LIVE_GATES, uriOf, type Departure } from '../reconcile/live-migration.js';
import type { IncomingListen } from '../guests/driver.js';
import type { GuestReport } from './report.js';
import type { Source } from './source.js';
import { statusReader, statusTrust } from './status-source.js';
import { acquireLock, LockBusy, type Lock } from './lock.js';
import { agentPaths } from './memory.js';
import { validateDocument } from '../state/schema.js';
import { tableId, type Ruleset } from '../nft/model.js';
import { planNft, type NftPlan } from '../plan/nft-plan.js';
import { ownedTables, renderView } from '../render/render.js';
import { rememberedFor, rememberedForPair } from '../plan/memo.js';

/** Everything a node's reconcile talks to. */
export interface NodeRuntime {
  config: AgentConfig;
  /** Ends a timed phase of the cycle (reading the live node is one: metrics). */
  lap?: (phase: string) => void;
  nft: NftBackend;
  settings: SettingsPort;
  /** Deletes stale conntrack entries after a forward changes; absent: not deleted (tests with fakes). */
  conntrack?: ConntrackPort;
  /** Announces the gateway to a guest that started (arping in the node's namespace); absent: not announced (tests with fakes). */
  announce?: GatewayAnnouncer;
  /** The node's guest driver (default: the one its hypervisor names). */
  guestDriver?: (view: NodeView) => GuestDriver;
  /** The source's answer to "is this revision at or after that one" (migration gate). */
  isAtOrAfter: Source['isAtOrAfter'];
  /** The source's placement history (migration gate of a guest whose previous node is unknown); absent: none. */
  placementHistory?: Source['placementHistory'];
  /** False: hooks are skipped (`apply --no-hooks`). */
  hooks: boolean;
  /** The long-running agent's memo (its states are never mutated); one-shot commands have none. */
  memo?: NodeMemo;
}

/**
 * What the long-running agent computes once per loaded state and reuses while nothing changes:
 * the node view, its rendered tables, and the nft plan of a (desired, committed ruleset) pair.
 * Keyed by object identity, so a new revision or a new read of the tables misses.
 */
export interface NodeMemo {
  views: WeakMap<ClusterState, Map<string, NodeView>>;
  rendered: WeakMap<NodeView, Map<string, Ruleset>>;
  plans: WeakMap<Ruleset, WeakMap<Ruleset, Map<string, NftPlan>>>;
  /** The tables rendered last: the next revision's render patches their forward maps. */
  latest?: Ruleset;
}

export function nodeMemo(): NodeMemo {
  return { views: new WeakMap(), rendered: new WeakMap(), plans: new WeakMap() };
}

/** planNft, remembered in the memo (the agent diffs the same pair every cycle while nothing changes). */
export function memoPlanNft(memo: NodeMemo | undefined): typeof planNft {
  if (!memo) return planNft;
  return (desired, live, owned) => rememberedForPair(memo.plans, desired, live, owned.map(tableId).join(','), () => planNft(desired, live, owned));
}

/** renderView, remembered per view in the memo, patched from the ruleset rendered last. */
function memoRender(memo: NodeMemo, view: NodeView): Ruleset {
  const desired = rememberedFor(memo.rendered, view, '', () => renderView(view, memo.latest));
  memo.latest = desired;
  return desired;
}

export function settingsHost(config: AgentConfig): SettingsHost {
  return new SettingsHost(config.netns ? { prefix: ['ip', 'netns', 'exec', config.netns], netns: config.netns } : {});
}

/** arping and ndptool in the node's namespace, for the gateway announcement to a guest that started. */
export function gatewayAnnouncer(config: AgentConfig): CommandAnnouncer {
  return new CommandAnnouncer({ prefix: config.netns ? ['ip', 'netns', 'exec', config.netns] : [] });
}

/** The conntrack tool in the node's namespace. */
export function conntrackCli(config: AgentConfig): ConntrackCli {
  return new ConntrackCli({ prefix: config.netns ? ['ip', 'netns', 'exec', config.netns] : [] });
}

export function guestDriver(config: AgentConfig, view: NodeView): GuestDriver {
  // In the lab a node is a namespace: guests attach to its bridge and are named per node,
  // `<node ns>.<guest>` ('.' cannot occur in a node name, so no node's prefix matches another's).
  return driverFor(view.node, { runRoot: config.guests.runDir, nodeNs: config.netns, netnsPrefix: config.netns ? `${config.netns}.` : undefined, policy: config.guests, qemu: config.guests.qemu });
}

/** The node's view of a state (remembered in the agent's memo). */
export function nodeView(rt: Pick<NodeRuntime, 'config' | 'memo'>, state: ClusterState): NodeView {
  const { config, memo } = rt;
  const resolve = () => resolveNode(state, config.node, config.stateDir);
  return memo ? rememberedFor(memo.views, state, `${config.node}\0${config.stateDir}`, resolve) : resolve();
}

export interface Prepared {
  view: NodeView;
  live: NodeLive;
  plan: NodePlan;
  driver?: GuestDriver;
}

/** The edge before planning, then the pure plan. `memory` is only read. */
export async function prepareNode(rt: NodeRuntime, state: ClusterState, revision: string | undefined, memory: Partial<GuestMemory>): Promise<Prepared> {
  const { config } = rt;
  const { memo } = rt;
  const view = nodeView(rt, state);
  let driver: GuestDriver | string = 'guests are disabled in the agent configuration';
  if (config.guests.enabled) {
    try {
      driver = (rt.guestDriver ?? ((v: NodeView) => guestDriver(config, v)))(view);
    } catch (e) {
      driver = (e as Error).message;
    }
  }
  const history = rt.placementHistory;
  // Listed and planned alike: a table of a role the state switched off is deleted where granted.
  const owned = ownedTables(state, config.ownedTables);
  const live = await readLiveNode(view, { nft: rt.nft, settings: rt.settings, guests: driver, guestPolicy: config.guests, owned });
  rt.lap?.('read');
  const gates = Array.isArray(live.guests)
    ? await readGates({
        node: view.node.name,
        state,
        revision: revision ?? 'unknown',
        memory,
        running: live.guests.filter((g) => g.state === 'running').map((g) => g.name),
        departing: live.guests.filter((g) => g.managed && g.state === 'running' && state.guests.some((x) => x.name === g.name && x.node !== view.node.name)).map((g) => g.name),
        releases: await readReleases(config.stateDir),
        readStatus: statusReader(config, statusTrust(state)),
        isAtOrAfter: rt.isAtOrAfter,
        ...(history && revision !== undefined && { placementHistory: () => history(revision) }),
        ...(config.file && { configFile: config.file }),
      })
    : { arrivals: memory.arrivals ?? {}, waits: {}, live: { ...NO_LIVE_GATES, departures: memory.departures ?? {}, arrived: [] } };
  const memoized = memo && { desired: memoRender(memo, view), diff: memoPlanNft(memo) };
  const plan = planNode(view, live, gates, { ...(revision !== undefined && { revision }), owned, ...memoized });
  return { view, live, plan, ...(typeof driver !== 'string' && { driver }) };
}

export interface Executed {
  hooks: HookResult[];
  /** The pre-apply hook that vetoed; nothing was changed. */
  vetoedBy?: string;
  /** What the applier did; absent when there was nothing to do or the plan was vetoed. */
  result?: ApplyResult;
}

/** Hooks and the applier. A plan with nothing to do runs neither. */
export async function executePlan(rt: NodeRuntime, p: Prepared, opts: { beforeNft?: () => Promise<void> } = {}): Promise<Executed> {
  const { config } = rt;
  const { plan } = p;
  if (!hasChanges(plan)) return { hooks: [] };
  const hooksDir = rt.hooks ? config.hooksDir : undefined;
  const ctx = { node: config.node, revision: plan.revision ?? '', planJson: planJson(plan), timeoutMs: config.hookTimeoutSeconds * 1000, env: config.hookEnv };
  const pre = await runHooks(hooksDir, 'pre-apply', ctx);
  const veto = pre.find((h) => !h.ok);
  if (veto) return { hooks: pre, vetoedBy: veto.hook };
  const result = await applyNodePlan(plan, {
    nft: rt.nft,
    settings: rt.settings,
    ...(rt.conntrack && { conntrack: rt.conntrack }),
    ...(rt.announce && { announce: rt.announce }),
    ...(p.driver && { guests: { driver: p.driver, view: p.view, stopTimeoutMs: config.guests.stopTimeoutSeconds * 1000 } }),
    ...(opts.beforeNft && { beforeNft: opts.beforeNft }),
    diff: memoPlanNft(rt.memo),
  });
  const post = applyFailed(result) ? [] : await runHooks(hooksDir, 'post-apply', ctx);
  return { hooks: [...pre, ...post], result };
}

function outcomesOf(e: Executed): GuestOutcome[] {
  return e.result ? [...e.result.guestStops, ...e.result.guestStarts] : [];
}

/** The departures after the apply: each live migration carried out counts (handed over, or one failure more). */
export function departuresAfter(plan: NodePlan, executed: Executed): Record<string, Departure> {
  const departures = { ...plan.memory.departures };
  for (const o of outcomesOf(executed).filter((x) => x.action === 'migrate-out')) {
    const to = plan.guests?.actions.find((a) => a.guest === o.guest && a.action === 'migrate-out')?.to;
    if (to) departures[o.guest] = afterMigration(departures[o.guest], to, o.ok, o.detail);
  }
  return departures;
}

/** After the apply: the guest memory to keep (arrivals that started are done), and spent releases. */
export async function settleGuests(stateDir: string, plan: NodePlan, executed: Executed): Promise<GuestMemory> {
  const started = outcomesOf(executed).filter((o) => o.ok && (o.action === 'start' || o.action === 'restart')).map((o) => o.guest);
  const arrivals = Object.fromEntries(Object.entries(plan.memory.arrivals).filter(([g]) => !started.includes(g)));
  const departures = departuresAfter(plan, executed);
  if (started.length > 0) {
    const releases = await readReleases(stateDir);
    if (started.some((g) => releases[g])) {
      for (const g of started) delete releases[g];
      await writeReleases(stateDir, releases);
    }
  }
  // Always set (also empty), so a departure the state no longer needs leaves memory.json.
  return { placement: plan.memory.placement, arrivals, departures };
}

/**
 * What the report says about guests: every guest present on the node after the cycle (other
 * nodes read this to decide whether they may start a guest), plus the planned actions' results.
 */
export async function guestReport(p: Prepared, executed: Executed): Promise<GuestReport[]> {
  if (!p.plan.guests || !p.driver) return [];
  const outcomes = outcomesOf(executed);
  const present = await p.driver.list().catch(() => p.plan.guests?.present ?? []);
  const report = new Map<string, GuestReport>();
  for (const r of present) report.set(r.name, { name: r.name, state: r.state, ...(r.managed ? {} : { detail: 'not started by cgw-sync' }) });
  for (const a of p.plan.guests.actions) {
    const outcome = outcomes.find((o) => o.guest === a.guest && o.action === a.action);
    // A present guest's state is the driver's (the truth other nodes gate on); an absent one's
    // comes from what happened to it.
    const absentState = outcome && !outcome.ok ? 'failed' : a.action === 'stop' ? 'stopped' : a.action === 'wait' ? 'waiting' : a.action === 'migrate-out' ? 'migrated' : 'absent';
    const detail = outcome ? (outcome.ok ? outcome.detail : `${a.action} failed: ${outcome.detail}`) : `${a.action}: ${a.reason}`;
    report.set(a.guest, { ...report.get(a.guest), name: a.guest, state: report.get(a.guest)?.state ?? absentState, detail });
  }
  // Live migration: the destination's listener, and the source's word on each move (the other side acts on these).
  for (const r of present.filter((x) => x.incoming)) {
    const inc = r.incoming as IncomingListen;
    const entry = report.get(r.name) as GuestReport;
    report.set(r.name, { ...entry, incoming: { uri: uriOf(inc), port: inc.port, attempt: inc.attempt, revision: inc.revision } });
  }
  for (const [g, d] of Object.entries(departuresAfter(p.plan, executed))) {
    const entry = report.get(g) ?? { name: g, state: d.handedOver ? 'migrated' : 'absent', detail: d.handedOver ? `handed over to ${d.to} by live migration` : `placed on ${d.to}` };
    report.set(g, { ...entry, migration: { to: d.to, failures: d.failures, ...(d.handedOver && { handedOver: true }), ...(d.error && { error: d.error }) } });
  }
  return [...report.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
}

/**
 * The configuration `plan` and `apply` use without --config: the schema's defaults (state dir,
 * guests, no hooks, no status source), for the node this host is.
 */
export function defaultAgentConfig(node: string): AgentConfig {
  const data = { apiVersion: 'cgw-sync/v1', kind: 'AgentConfig', source: { url: '.' } };
  const problems = validateDocument('AgentConfig', data);
  if (problems.length) throw new Error(`the built-in agent defaults are invalid: ${problems.map((p) => p.message).join('; ')}`);
  return { ...(data as unknown as AgentConfig), file: '', node };
}

/**
 * Take the node's lock (the one the agent's cycle takes), waiting up to `waitMs` for a running
 * cycle to finish; then fail with the holder named.
 */
export async function lockNode(stateDir: string, waitMs: number, onWait: (message: string) => void = () => {}, pollMs = 100): Promise<Lock> {
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    try {
      return await acquireLock(agentPaths(stateDir).lock);
    } catch (e) {
      if (e instanceof LockBusy && !told) {
        onWait(`waiting up to ${Math.round(waitMs / 1000)} s for the node lock: ${e.message}`);
        told = true;
      }
      if (!(e instanceof LockBusy) || Date.now() >= deadline) {
        if (e instanceof LockBusy) throw new Error(`${e.message}; waited ${Math.round(waitMs / 1000)} s, giving up (nothing was changed)`);
        throw e;
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }
}
