// `cgw-sync verify --rev <rev>`: proof before merge. The revision's state runs in a throwaway lab
// (src/lab/: its nodes as namespaces with their interfaces and addresses, its guests as netns
// guests running the lab responder, its NAT mode), each node's ruleset and settings applied
// through the agent's own path (prepareNode/executePlan) inside the node's namespace; then the
// probes of `lab check` (src/lab/lab.ts probeLab): every forward on every node it enters, each
// guest's outbound, the gateway ARP rule, the reply paths.
//
// The state is untrusted (it comes from a pull request) and verify runs as root: what it may
// build is decided first (src/verify/contain.ts), everything lives in namespaces named
// `<prefix>...` (default `cgwv<pid>-`) under a scratch folder, and exactly that is torn down at
// the end: also on failure, and on SIGINT/SIGTERM (the current step finishes, then teardown).
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AgentConfig } from '../agent/config.js';
import { conntrackCli, defaultAgentConfig, executePlan, prepareNode, settingsHost, type NodeRuntime } from '../agent/node.js';
import { NftCli } from '../nft/backend.js';
import { applyErrors, applyFailed } from '../reconcile/apply.js';
import { run } from '../netns/netns.js';
import { stateAt } from '../plan/review.js';
import { formatDiagnostics } from '../state/diagnostics.js';
import type { ClusterState } from '../state/types.js';
import { probeLab } from '../lab/lab.js';
import type { LabNode } from '../lab/plan.js';
import type { ProbeResult } from '../lab/probes.js';
import { assertNoLab, labDown, labUp } from '../lab/topology.js';
import { containForVerify } from './contain.js';

export type VerifyVerdict = 'passed' | 'failed' | 'invalid' | 'refused' | 'interrupted' | 'error';

export interface VerifyReport {
  /** The revision as asked for, and the commit it resolved to (when it did). */
  rev: string;
  revision?: string;
  verdict: VerifyVerdict;
  /** invalid: the problems, `file:line:column: field: message` lines. */
  diagnostics?: string;
  /** refused: why verify cannot run this state. */
  refusals?: string[];
  /** error: what went wrong (an unknown revision, a fetch, a lab step the kernel refused). */
  error?: string;
  lab?: { nodes: string[]; guests: number; forwards: number; mode: string; brNetfilter: boolean; prefix: string };
  /** What of the state was replaced or not exercised. */
  notes: string[];
  /** One per node apply, then one per probe. */
  results: ProbeResult[];
  ms: number;
}

export interface VerifyOptions {
  /** A repository checkout, or an http(s) URL (fetched into the scratch folder). */
  repo: string;
  rev: string;
  /** Folder of the state inside the repository. */
  path?: string;
  /** Namespace prefix (default `cgwv<pid>-`): must name no existing namespace. */
  prefix?: string;
  brNetfilter?: boolean;
  /** Each probe's timeout (seconds). */
  timeoutS?: number;
  /** Catch SIGINT/SIGTERM: finish the current step, tear down, report `interrupted` (the CLI sets it). */
  handleSignals?: boolean;
  progress?: (line: string) => void;
}

/** At most this many probes at once (each is a process; CI runners have 2 cores). */
const PROBE_CONCURRENCY = 8;

class Interrupted extends Error {}

const isUrl = (s: string) => /^https?:\/\//i.test(s);

/** A local repository holding the revision: the checkout itself, or a fetch of the URL's branches and tags. */
async function localRepo(repo: string, scratch: string): Promise<string> {
  if (!isUrl(repo)) return path.resolve(repo);
  const dir = path.join(scratch, 'repo');
  const env = { GIT_TERMINAL_PROMPT: '0', GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' };
  await run('git', ['init', '-q', dir], { env });
  await run('git', ['-C', dir, 'fetch', '-q', '--no-tags', repo, '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*'], { env, timeout: 120_000 });
  return dir;
}

/** The agent's runtime for one lab node: everything inside its namespace, state under the scratch folder, no hooks, no guests (the lab runs them). */
function nodeRuntime(node: LabNode, scratch: string): NodeRuntime {
  const base = defaultAgentConfig(node.name);
  const config: AgentConfig = { ...base, stateDir: path.join(scratch, 'nodes', node.name), netns: node.ns, guests: { ...base.guests, enabled: false } };
  return {
    config,
    nft: new NftCli({ nft: config.nft, prefix: ['ip', 'netns', 'exec', node.ns] }),
    settings: settingsHost(config),
    conntrack: conntrackCli(config),
    isAtOrAfter: async (rev, since) => rev === since,
    hooks: false,
  };
}

/** Apply the state on one lab node the way the agent does; one result line. */
async function applyOn(node: LabNode, state: ClusterState, revision: string, scratch: string): Promise<ProbeResult> {
  const name = `apply on ${node.name}: ruleset and node settings of ${revision.slice(0, 12)}`;
  try {
    const rt = nodeRuntime(node, scratch);
    await mkdir(rt.config.stateDir, { recursive: true });
    const prepared = await prepareNode(rt, state, revision, {});
    const executed = await executePlan(rt, prepared);
    const errors = executed.result ? applyErrors(executed.result) : [];
    const ok = !!executed.result && !applyFailed(executed.result) && errors.length === 0;
    return { name, ok, detail: ok ? 'applied in one nft transaction' : errors.join('; ') || 'nothing was applied' };
  } catch (e) {
    return { name, ok: false, detail: (e as Error).message };
  }
}

export async function verifyRevision(opts: VerifyOptions): Promise<VerifyReport> {
  const started = Date.now();
  const say = opts.progress ?? (() => {});
  const prefix = opts.prefix ?? `cgwv${process.pid}-`;
  const brNetfilter = opts.brNetfilter ?? false;
  const report: VerifyReport = { rev: opts.rev, verdict: 'failed', notes: [], results: [], ms: 0 };
  const done = () => ({ ...report, ms: Date.now() - started });

  let signalled: string | undefined;
  let teardown: Promise<unknown> | undefined;
  const scratch = await mkdtemp(path.join(tmpdir(), 'cgw-verify-'));
  const runRoot = path.join(scratch, 'run');
  let built = false;
  const tearDown = () => {
    teardown ??= (built ? labDown(prefix, { runRoot }) : Promise.resolve()).finally(() => rm(scratch, { recursive: true, force: true }));
    return teardown;
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) {
      // A second signal: tear down now and leave.
      void tearDown().finally(() => process.exit(1));
      return;
    }
    signalled = sig;
    say(`${sig}: stopping after the current step, then removing the lab`);
  };
  const checkpoint = () => {
    if (signalled) throw new Interrupted(`interrupted by ${signalled}`);
  };
  if (opts.handleSignals) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  try {
    const repoDir = await localRepo(opts.repo, scratch);
    const loaded = await stateAt(repoDir, opts.rev, opts.path ?? '.');
    report.revision = loaded.oid;
    if (!loaded.state) {
      report.verdict = 'invalid';
      report.diagnostics = formatDiagnostics(loaded.diagnostics);
      return done();
    }
    const contained = containForVerify(loaded.state, { prefix, brNetfilter });
    if (!contained.ok) {
      report.verdict = 'refused';
      report.refusals = contained.refusals;
      return done();
    }
    const { state, plan, notes } = contained.contained;
    report.notes = notes;
    report.lab = { nodes: plan.nodes.map((n) => n.name), guests: state.guests.length, forwards: state.forwards.length, mode: state.cluster.nat.mode, brNetfilter, prefix };
    checkpoint();
    // Never build over (or tear down) namespaces this run did not make.
    await assertNoLab(prefix, { runRoot });
    built = true;
    say(`lab ${prefix}: ${plan.nodes.length} node(s), ${state.guests.length} guest(s), ${state.cluster.nat.mode}`);
    await labUp(state, { prefix, brNetfilter, runRoot, startGuests: true, publicSubnet: plan.public.subnet, clientIP: plan.client.ip });
    checkpoint();
    for (const node of plan.nodes) {
      report.results.push(await applyOn(node, state, loaded.oid, scratch));
      checkpoint();
    }
    say(`probing ${plan.nodes.length} node(s)`);
    report.results.push(...(await probeLab(state, plan, { timeoutS: opts.timeoutS, concurrency: PROBE_CONCURRENCY })));
    report.verdict = report.results.every((r) => r.ok) ? 'passed' : 'failed';
    return done();
  } catch (e) {
    // Still a report: the pull request says why there is no proof.
    report.verdict = e instanceof Interrupted ? 'interrupted' : 'error';
    if (e instanceof Interrupted) report.notes.push(e.message);
    else report.error = (e as Error).message;
    return done();
  } finally {
    await tearDown();
    if (opts.handleSignals) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}
