// The cgw-sync command line. Parsing and exit codes live here; every command is a thin layer
// over the state, render, plan and reconcile modules.
import { hostname } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadState } from '../state/load.js';
import { formatDiagnostics } from '../state/diagnostics.js';
import type { ClusterState } from '../state/types.js';
import { NftCli } from '../nft/backend.js';
import { printTable } from '../nft/text.js';
import { renderView } from '../render/render.js';
import { resolveNode, type NodeView } from '../render/node-view.js';
import { guestSnippet } from '../render/stateless.js';
import { formatPlanText, hasChanges, planJson } from '../plan/plan.js';
import { reviewRevisions } from '../plan/review.js';
import { applyErrors, applyFailed, applyNotes } from '../reconcile/apply.js';
import { AgentConfigError, loadAgentConfig, type AgentConfig } from '../agent/config.js';
import { redactDeep, redactText } from '../agent/redact.js';
import { allSecrets, maskSecrets } from '../git/remote.js';
import { conntrackCli, defaultAgentConfig, executePlan, lockNode, prepareNode, settingsHost, settleGuests, type NodeRuntime } from '../agent/node.js';
import { readMemory, writeMemory } from '../agent/memory.js';
import { gitSource } from '../agent/source.js';
import { runOnce, type MemoryCarry } from '../agent/cycle.js';
import { startAgent } from '../agent/run.js';
import { releaseGuest } from '../agent/migration.js';
import { DEFAULT_LAB_PREFIX, LAB_RESTARTABLE, labCheck, labRestart, labStart, labSummary } from '../lab/lab.js';
import { fleetStatus, resumeCommand, suspendCommand } from '../rollout/commands.js';
import { labDown, LabExists } from '../lab/topology.js';
import { formatResults } from '../lab/check.js';

/** Exit codes, as `terraform plan -detailed-exitcode`: 0 nothing to do, 2 changes pending, 1 error. */
export const EXIT = { ok: 0, error: 1, changes: 2 } as const;

const DEFAULT_CONFIG = '/etc/cgw-sync/agent.yaml';

const USAGE = `Usage: cgw-sync <command> [options]

Commands:
  validate            check the state directory; every problem with file:line:column and field
  render              print the node's desired nftables tables; with --guest <name>, what that
                      guest needs inside (stateless-nat: the tagged-port redirect)
  plan | --plan       show what apply would change: nftables, node settings, guests
                      (exit 0: none, 2: changes, 1: error)
  apply               what the agent's cycle does with a state folder, under the agent's node
                      lock: pre-apply hooks, guest stops, one atomic nft transaction, node
                      settings (rolled back with the tables if they fail), guest starts,
                      post-apply hooks; a guest moving here starts only once the old node's
                      report says it stopped (needs a status source: --config)
  once                one agent cycle: fetch, verify, plan, apply, report (for a systemd timer)
  run                 the long-running agent: a cycle at start and on the configured schedule
  guest release <guest> --from <node>
                      let this node's agent start <guest> without <node>'s confirmation
                      that it stopped it (for a node that is dead; see the README)
  plan --all-nodes --rev <rev> [--base <rev>]
                      review a Git revision offline: every node's change as Markdown
  lab up [--prefix P] [--mode M] [--br-netfilter on|off] [--guests netns|qemu] [--state DIR]
                      (root) a two-node cluster in network namespaces: topology, a Git server
                      on 127.0.0.1 with a state repository seeded from DIR (default: the
                      bundled state-example/), one agent per node; waits until both apply it
  lab check [--prefix P]
                      (root) probe the lab from its client and guests; ends "N passed, M failed"
  lab down [--prefix P]
                      (root) remove everything lab up made (also after a crash)
  lab restart git [--prefix P]
                      (root) stop the lab's Git server if it runs and start it again on the
                      same port, so the agents reconnect (fault tests: a Git outage)
  suspend --reason "..."
                      this node's agent plans and reports, and applies nothing (--config)
  resume              lift this node's suspension (--config)
  status --all [--state DIR] [--max-age S] [--json]
                      every node's latest report, one line each (--config for the status
                      source); exit 1 when a node failed, rolled back or is silent > S (3600)

Options:
  --state <dir>       state directory (default: current directory); with --all-nodes the
                      state repository's checkout
  --node <name>       node to act for (default: this host's name)
  --nft <path>        nft binary (default: nft from PATH)
  --json              machine-readable output (render, plan, apply, once)
  --config <file>     agent configuration (once, run, guest: default /etc/cgw-sync/agent.yaml);
                      plan/apply read stateDir, hooks, guests, netns and the status source from it
  --state-dir <dir>   plan/apply: the node's state dir (lock, memory, conntrackd files);
                      default the config's stateDir, else /var/lib/cgw-sync
  --no-hooks          apply: do not run the pre-/post-apply hooks
  --lock-wait <s>     apply: how long to wait for a running agent cycle (default 60)
  --all-nodes         plan every node offline (with --rev)
  --rev <rev>         revision to review (branch, tag, oid)
  --base <rev>        revision to compare with (default: main)
  --path <dir>        folder of the state inside the repository (default: .)
  --prefix <p>        lab: prefix of every namespace the lab owns (default: ${DEFAULT_LAB_PREFIX})
  --mode <m>          lab up: cluster nat.mode in the lab repository (full-nat, ct-sync, stateless-nat)
  --br-netfilter on|off
                      lab up: bridged traffic passes the nodes' ip hooks (default: off)
  --guests netns|qemu lab up: guests as network namespaces (default) or as real qemu VMs
                      (Debian kernel + busybox, built from the package registry, KVM if a probe
                      boot works, TCG otherwise)
  -h, --help          this help
`;

const OPTIONS = {
  // No default here: `lab up` defaults to the bundled state-example/, every other command to '.'.
  state: { type: 'string' },
  node: { type: 'string' },
  nft: { type: 'string' },
  json: { type: 'boolean', default: false },
  plan: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
  // No default here: once/run/guest default to DEFAULT_CONFIG; plan/apply use it only when given.
  config: { type: 'string' },
  'state-dir': { type: 'string' },
  'no-hooks': { type: 'boolean', default: false },
  'lock-wait': { type: 'string', default: '60' },
  'all-nodes': { type: 'boolean', default: false },
  rev: { type: 'string' },
  base: { type: 'string', default: 'main' },
  path: { type: 'string', default: '.' },
  prefix: { type: 'string', default: DEFAULT_LAB_PREFIX },
  mode: { type: 'string' },
  'br-netfilter': { type: 'string', default: 'off' },
  guests: { type: 'string', default: 'netns' },
  from: { type: 'string' },
  guest: { type: 'string' },
  reason: { type: 'string' },
  all: { type: 'boolean', default: false },
  'max-age': { type: 'string', default: '3600' },
} as const;

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

const stdio: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

class UsageError extends Error {}

async function load(dir: string, io: Io): Promise<ClusterState | undefined> {
  const { state, diagnostics } = await loadState(dir);
  if (diagnostics.length > 0 || !state) {
    io.err(`${formatDiagnostics(diagnostics)}\ncgw-sync: ${diagnostics.length} problem(s) in ${dir}; nothing was changed\n`);
    return undefined;
  }
  return state;
}

function defaultNode(): string {
  return hostname().split('.')[0] as string;
}

export async function main(argv: string[], io: Io = stdio): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    io.err(`cgw-sync: ${(e as Error).message}\n\n${USAGE}`);
    return EXIT.error;
  }
  const { values, positionals } = parsed;
  const command = values.plan ? 'plan' : positionals[0];
  if (values.help || !command) {
    io.out(USAGE);
    return values.help ? EXIT.ok : EXIT.error;
  }
  try {
    switch (command) {
      case 'validate':
        return await validate(values.state ?? '.', io);
      case 'lab':
        return await lab(positionals.slice(1), values, io);
      case 'once':
      case 'run':
        return await agent(command, values.config ?? DEFAULT_CONFIG, values.json, io);
      case 'guest':
        return await guest(positionals.slice(1), values.config ?? DEFAULT_CONFIG, values.from, io);
      case 'render':
      case 'plan':
      case 'apply': {
        if (command === 'plan' && values['all-nodes']) return await review(values.state ?? '.', values.base, values.rev, values.path, io);
        const state = await load(values.state ?? '.', io);
        if (!state) return EXIT.error;
        // A guest's snippet is the same whichever node asks: no --node needed.
        if (command === 'render' && values.guest) return renderGuest(state, values.guest, io);
        if (command === 'render') return render(resolveNode(state, values.node ?? defaultNode()), values.json, io);
        const opts: CliNodeOptions = { nft: values.nft, json: values.json, config: values.config, stateDir: values['state-dir'], hooks: !values['no-hooks'], lockWaitMs: Number(values['lock-wait']) * 1000 };
        if (!(opts.lockWaitMs >= 0)) throw new UsageError('--lock-wait must be a number of seconds');
        const config = await nodeConfig(values.node, opts);
        return await planOrApply(command, state, values.state ?? '.', opts, config, io);
      }
      case 'suspend':
      case 'resume':
      case 'status':
        return await rollout(command, values, io);
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    io.err(`cgw-sync: ${redactText((e as Error).message, allSecrets())}\n`);
    if (e instanceof UsageError) io.err(`\n${USAGE}`);
    return EXIT.error;
  }
}

async function validate(dir: string, io: Io): Promise<number> {
  const state = await load(dir, io);
  if (!state) return EXIT.error;
  io.out(`${dir}: valid (${state.nodes.length} nodes, ${state.guests.length} guests, ${state.forwards.length} forwards)\n`);
  return EXIT.ok;
}

function render(view: NodeView, json: boolean, io: Io): number {
  const rs = renderView(view);
  io.out(json ? `${JSON.stringify(rs, null, 2)}\n` : rs.tables.map(printTable).join('\n'));
  return EXIT.ok;
}

/** `render --guest <name>`: what the guest itself needs in this mode (stateless-nat: tagged ports). */
function renderGuest(state: ClusterState, name: string, io: Io): number {
  const guest = state.guests.find((g) => g.name === name);
  if (!guest) throw new UsageError(`unknown guest "${name}" (known: ${state.guests.map((g) => g.name).join(', ')})`);
  if (state.cluster.nat.mode !== 'stateless-nat') {
    io.out(`# ${state.cluster.nat.mode}: guest ${name} needs no configuration from cgw-sync\n`);
    return EXIT.ok;
  }
  io.out(guestSnippet(state, guest));
  return EXIT.ok;
}

/** The agent configuration `plan`/`apply` act with: --config's, or the defaults; flags win. */
async function nodeConfig(node: string | undefined, opts: CliNodeOptions): Promise<AgentConfig> {
  const base = opts.config ? await loadAgentConfig(opts.config) : defaultAgentConfig(defaultNode());
  return { ...base, node: node ?? base.node, ...(opts.stateDir && { stateDir: path.resolve(opts.stateDir) }), ...(opts.nft && { nft: opts.nft }) };
}

interface CliNodeOptions {
  nft?: string;
  json: boolean;
  config?: string;
  stateDir?: string;
  hooks: boolean;
  lockWaitMs: number;
}

/**
 * `plan` and `apply`: the agent's path (src/agent/node.ts) on a state folder. `apply` takes the
 * agent's node lock, runs its hooks and reconciles guests; the guest memory (migration gate) is
 * the agent's, in the same state dir.
 */
async function planOrApply(command: 'plan' | 'apply', state: ClusterState, dir: string, opts: CliNodeOptions, config: AgentConfig, io: Io): Promise<number> {
  const source = gitSource({ ...config, source: { ...config.source, url: path.resolve(dir), trustedKeys: [] } });
  const { revision } = await source.fetch(undefined);
  const rt: NodeRuntime = {
    config,
    nft: new NftCli({ nft: config.nft, prefix: config.netns ? ['ip', 'netns', 'exec', config.netns] : [] }),
    settings: settingsHost(config),
    conntrack: conntrackCli(config),
    isAtOrAfter: source.isAtOrAfter,
    hooks: opts.hooks,
  };
  if (command === 'plan') {
    const { plan } = await prepareNode(rt, state, revision, await readMemory(config.stateDir));
    io.out(opts.json ? `${JSON.stringify(planJson(plan), null, 2)}\n` : formatPlanText(plan));
    return hasChanges(plan) ? EXIT.changes : EXIT.ok;
  }
  const lock = await lockNode(config.stateDir, opts.lockWaitMs, (m) => io.err(`cgw-sync: ${m}\n`));
  try {
    const memory = await readMemory(config.stateDir);
    const prepared = await prepareNode(rt, state, revision, memory);
    const executed = await executePlan(rt, prepared);
    await writeMemory(config.stateDir, { ...memory, ...(await settleGuests(config.stateDir, prepared.plan, executed)) });
    const { plan } = prepared;
    const errors = [...(executed.vetoedBy ? [`pre-apply hook ${executed.vetoedBy} vetoed the apply; nothing was changed`] : []), ...(executed.result ? applyErrors(executed.result) : [])];
    const ok = !executed.vetoedBy && !(executed.result && applyFailed(executed.result));
    if (opts.json) io.out(`${JSON.stringify({ ...planJson(plan), applied: !!executed.result && ok, converged: ok, result: executed.result ?? null, hooks: executed.hooks, errors }, null, 2)}\n`);
    else {
      const text = hasChanges(plan) ? formatPlanText(plan) : `No changes: node ${plan.node} has converged.\n`;
      const waits = plan.guests?.actions.filter((a) => a.action === 'wait') ?? [];
      const tail = ok && executed.result ? '\nApplied: guest stops, one nft transaction, node settings, guest starts; the node has converged.\n' : '';
      const cleaned = executed.result ? applyNotes(executed.result).map((l) => `${l}\n`).join('') : '';
      io.out(`${text}${tail}${cleaned}${waits.map((w) => `not started: ${w.guest}: ${w.reason}\n`).join('')}`);
      if (errors.length) io.err(errors.map((e) => `cgw-sync: ${e}\n`).join(''));
    }
    return ok ? EXIT.ok : EXIT.error;
  } finally {
    await lock.release();
  }
}

async function review(repoDir: string, base: string, rev: string | undefined, subPath: string, io: Io): Promise<number> {
  if (!rev) throw new UsageError('plan --all-nodes needs --rev <revision>');
  const r = await reviewRevisions(repoDir, base, rev, subPath);
  // A CI job's environment (its tokens) must not reach a pull request comment, whatever the state did.
  io.out(maskSecrets(r.markdown, allSecrets()));
  if (r.diagnostics.length) return EXIT.error;
  return r.changed ? EXIT.changes : EXIT.ok;
}

function logLine(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(redactDeep(line))}\n`);
}

async function agent(command: 'once' | 'run', configFile: string, json: boolean, io: Io): Promise<number> {
  let config: AgentConfig;
  try {
    config = await loadAgentConfig(configFile);
  } catch (e) {
    if (e instanceof AgentConfigError) {
      io.err(`${e.message}\ncgw-sync: invalid agent configuration ${e.file}; nothing was changed\n`);
      return EXIT.error;
    }
    throw e;
  }
  for (const w of config.warnings ?? []) io.err(`cgw-sync: warning: ${w}\n`);
  const prefix = config.netns ? ['ip', 'netns', 'exec', config.netns] : [];
  const deps = { config, nft: new NftCli({ nft: config.nft, prefix }), conntrack: conntrackCli(config), log: logLine };
  if (command === 'run') {
    await startAgent(deps, { handleSignals: true }).done;
    return EXIT.ok;
  }
  const carry: MemoryCarry = { unsaved: false };
  const status = await runOnce({ ...deps, carry, log: json ? undefined : logLine });
  if (json) io.out(`${JSON.stringify(status, null, 2)}\n`);
  // A node that could not save what it did says so in its exit code too; so does a revision that
  // is in Git but was not applied (invalid, refused, not ours): it needs a person, even though the
  // node still converged on its last good revision.
  const stateRefused = ['invalid', 'refused', 'not-owned'].includes(status.source.state);
  return (status.outcome === 'converged' || status.outcome === 'applied') && !carry.unsaved && !stateRefused ? EXIT.ok : EXIT.error;
}

async function guest(args: string[], configFile: string, from: string | undefined, io: Io): Promise<number> {
  const [verb, name] = args;
  if (verb !== 'release' || !name || !from) throw new UsageError('usage: cgw-sync guest release <guest> --from <node> [--config FILE]');
  const config = await loadAgentConfig(configFile);
  await releaseGuest(config.stateDir, name, from);
  io.out(`released ${name} from ${from}: node ${config.node} will start it without ${from}'s confirmation (make sure ${from} is really down)\n`);
  return EXIT.ok;
}

const NAT_MODES = ['full-nat', 'ct-sync', 'stateless-nat'] as const;

/** `lab up | check | down | restart`: a thin layer over src/lab/lab.ts. */
async function lab(
  [sub, target]: string[],
  values: { prefix: string; mode?: string; 'br-netfilter': string; guests: string; state?: string },
  io: Io,
): Promise<number> {
  if (sub !== 'up' && sub !== 'check' && sub !== 'down' && sub !== 'restart') throw new UsageError('lab needs one of: up, check, down, restart');
  if (sub === 'restart' && !(LAB_RESTARTABLE as readonly string[]).includes(target ?? '')) throw new UsageError(`usage: cgw-sync lab restart ${LAB_RESTARTABLE.join('|')} [--prefix P]`);
  if (process.getuid?.() !== 0) throw new Error('lab needs root: it creates network namespaces');
  const prefix = values.prefix;
  const prefixOpt = prefix === DEFAULT_LAB_PREFIX ? '' : ` --prefix ${prefix}`;
  if (sub === 'restart') {
    io.out(`lab ${prefix}: the Git server listens again at ${await labRestart(prefix, target)}\n`);
    return EXIT.ok;
  }
  if (sub === 'down') {
    const removed = await labDown(prefix);
    io.out(removed.length ? `lab ${prefix} removed: ${removed.join(' ')}\n` : `no namespaces with prefix ${prefix} were left; its recorded processes and directory are gone too\n`);
    return EXIT.ok;
  }
  if (sub === 'check') {
    const report = await labCheck(prefix);
    const failed = report.results.filter((r) => !r.ok).length;
    io.out(`lab ${prefix}: checking against the state at main ${report.revision.slice(0, 12)}\n${formatResults(report.results)}\n`);
    io.out(`${report.results.length - failed} passed, ${failed} failed\n`);
    return failed === 0 ? EXIT.ok : EXIT.error;
  }
  const mode = values.mode;
  if (mode !== undefined && !(NAT_MODES as readonly string[]).includes(mode)) throw new UsageError(`--mode must be one of ${NAT_MODES.join(', ')}`);
  const brnf = values['br-netfilter'];
  if (brnf !== 'on' && brnf !== 'off') throw new UsageError('--br-netfilter must be on or off');
  const guests = values.guests;
  if (guests !== 'netns' && guests !== 'qemu') throw new UsageError('--guests must be netns or qemu');
  try {
    const up = await labStart({
      prefix,
      stateDir: values.state,
      mode: mode as (typeof NAT_MODES)[number] | undefined,
      brNetfilter: brnf === 'on',
      guests,
      progress: (line) => io.out(`lab: ${line}\n`),
    });
    io.out(`\n${labSummary(up)}`);
    return EXIT.ok;
  } catch (e) {
    if (!(e instanceof LabExists)) throw e;
    io.err(`cgw-sync: ${e.message}\n  \`cgw-sync lab check${prefixOpt}\` tests the running lab.\n`);
    return EXIT.error;
  }
}

/** `suspend`, `resume`, `status --all`: a thin layer over src/rollout/commands.ts. */
async function rollout(command: 'suspend' | 'resume' | 'status', values: { config?: string; reason?: string; all: boolean; state?: string; json: boolean; 'max-age': string }, io: Io): Promise<number> {
  const config = await loadAgentConfig(values.config ?? DEFAULT_CONFIG);
  if (command === 'suspend') {
    if (values.reason === undefined) throw new UsageError('usage: cgw-sync suspend --reason "..." [--config FILE]');
    io.out(await suspendCommand(config, values.reason));
    return EXIT.ok;
  }
  if (command === 'resume') {
    io.out(await resumeCommand(config));
    return EXIT.ok;
  }
  const maxAgeSeconds = Number(values['max-age']);
  if (!values.all || !(maxAgeSeconds >= 0)) throw new UsageError('usage: cgw-sync status --all [--state DIR] [--max-age SECONDS] [--json] [--config FILE]');
  const r = await fleetStatus(config, { ...(values.state !== undefined && { stateDir: values.state }), json: values.json, maxAgeSeconds });
  io.out(r.text);
  if (r.problems.length && !values.json) io.err(`cgw-sync: ${r.problems.length} node(s) need attention: ${r.problems.join('; ')}\n`);
  return r.problems.length ? EXIT.error : EXIT.ok;
}
