// The cgw-sync command line. Parsing and exit codes live here; every command is a thin layer
// over the state, render, plan and reconcile modules.
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { loadState } from '../state/load.js';
import { formatDiagnostics } from '../state/diagnostics.js';
import type { ClusterState } from '../state/types.js';
import { printTable } from '../nft/text.js';
import { renderView } from '../render/render.js';
import { resolveNode, type NodeView } from '../render/node-view.js';
import { guestSnippet } from '../render/stateless.js';
import type { AgentConfig } from '../agent/config.js';
import type { CycleDeps, MemoryCarry } from '../agent/cycle.js';
import type { NodeStatus } from '../agent/report.js';
import type { NodeRuntime } from '../agent/node.js';
import { DEFAULT_LAB_PREFIX, LAB_RESTARTABLE, labNodesProblem, MAX_LAB_NODES as MAX_LAB_NODES_CLI } from '../lab/names.js';
import { commandHelp, overview, parseCommand, UsageError, type CommandSpec, type Io, type OptionSpec, type Parsed, type Values } from './args.js';

import { cycleLine, logLine as humanLogLine } from './human.js';

// Heavy modules (Git, OpenPGP, execa, cron, the agent, the lab) are imported by the commands that
// use them, so `validate`, `render` and `--help` start without loading them.
const loadAgentConfig = async (file: string) => (await import('../agent/config.js')).loadAgentConfig(file);
const secrets = async () => (await import('../git/remote.js')).allSecrets();

export type { Io } from './args.js';

/** Exit codes, as `terraform plan -detailed-exitcode`: 0 nothing to do, 2 changes pending, 1 error. */
export const EXIT = { ok: 0, error: 1, changes: 2 } as const;

const DEFAULT_CONFIG = '/etc/cgw-sync/agent.yaml';

const NAT_MODES = ['full-nat', 'ct-sync', 'stateless-nat'] as const;

/** Options several commands share; a command may reword the help. */
const OPT = {
  state: { type: 'string', value: 'DIR', help: 'state directory (default: current directory)' },
  node: { type: 'string', value: 'NAME', help: "node to act for (default: this host's name up to the first dot)" },
  nft: { type: 'string', value: 'PATH', help: 'nft binary (default: the config\'s nft, else nft from PATH)' },
  json: { type: 'boolean', help: 'machine-readable output' },
  agentConfig: { type: 'string', value: 'FILE', help: `agent configuration (default: ${DEFAULT_CONFIG})` },
  nodeConfig: { type: 'string', value: 'FILE', help: 'agent configuration: stateDir, hooks, guests, netns and the status source come from it' },
  stateDir: { type: 'string', value: 'DIR', help: "the node's state dir: lock, memory, conntrackd files (default: the config's stateDir, else /var/lib/cgw-sync)" },
  log: { type: 'string', value: 'human|json', default: 'human', help: 'one line per cycle: the outcome and why (human), or a JSON object (json)' },
  statePath: { type: 'string', value: 'DIR', help: 'folder of the state inside the repository (default: .)' },
  prefix: { type: 'string', value: 'P', default: DEFAULT_LAB_PREFIX, help: `prefix of every namespace the lab owns (default: ${DEFAULT_LAB_PREFIX})` },
} satisfies Record<string, OptionSpec>;

const COMMANDS: CommandSpec[] = [
  {
    name: 'validate',
    summary: 'check the state directory; every problem with file:line:column and field',
    options: { state: OPT.state },
    exits: { 0: 'valid', 1: 'invalid' },
    run: async (v, _a, io) => validate(str(v, 'state') ?? '.', io),
  },
  {
    name: 'render',
    summary: "print the node's desired nftables tables",
    details: 'With --guest NAME: what that guest needs inside (stateless-nat: the tagged-port redirect).',
    options: { state: OPT.state, node: OPT.node, json: OPT.json, guest: { type: 'string', value: 'NAME', help: 'what this guest needs inside instead (no --node needed)' } },
    exits: { 0: 'printed', 1: 'invalid state, unknown node or guest' },
    run: async (v, _a, io) => {
      const state = await load(str(v, 'state') ?? '.', io);
      if (!state) return EXIT.error;
      // A guest's snippet is the same whichever node asks: no --node needed.
      const guestName = str(v, 'guest');
      if (guestName) return renderGuest(state, guestName, io);
      return render(resolveNode(state, str(v, 'node') ?? defaultNode()), !!v.json, io);
    },
  },
  {
    name: 'plan',
    summary: 'show what apply would change: nftables, node settings, guests (also: cgw-sync --plan)',
    details: [
      'With --all-nodes --rev REV: review a Git revision offline, every node\'s change as Markdown,',
      'against --base (default: main, or origin/main in a clone that has no local main).',
    ].join('\n'),
    options: {
      state: { ...OPT.state, help: 'state directory (default: current directory); with --all-nodes the repository checkout' },
      node: OPT.node,
      nft: OPT.nft,
      json: OPT.json,
      config: OPT.nodeConfig,
      'state-dir': OPT.stateDir,
      'all-nodes': { type: 'boolean', help: 'review every node offline (needs --rev)' },
      rev: { type: 'string', value: 'REV', help: 'revision to review (branch, tag, oid)' },
      base: { type: 'string', value: 'REV', help: 'revision to compare with (default: main, else origin/main)' },
      path: OPT.statePath,
    },
    exits: { 0: 'no changes', 1: 'error (with --all-nodes: also an invalid revision)', 2: 'changes pending (with --all-nodes: on some node)' },
    run: async (v, _a, io) => {
      if (v['all-nodes']) return review(str(v, 'state') ?? '.', str(v, 'base'), str(v, 'rev'), str(v, 'path') ?? '.', io);
      for (const only of ['rev', 'base', 'path']) if (v[only] !== undefined) throw new UsageError(`--${only} needs --all-nodes`);
      return nodeCommand('plan', v, io);
    },
  },
  {
    name: 'verify',
    summary: '(root) run a revision in a throwaway lab and probe every forward, outbound and the gateway ARP rule; Markdown for the pull request',
    details: [
      "The revision's nodes become network namespaces with its interfaces and addresses, its guests netns",
      'guests running the lab responder (boot paths and commands of the state are never used), in its',
      "NAT mode; each node's ruleset is applied as the agent would, then `lab check`'s probes run.",
      'Everything is made under one namespace prefix and removed at the end, also on failure and Ctrl-C.',
    ].join('\n'),
    options: {
      rev: { type: 'string', value: 'REV', help: 'revision to verify (branch, tag, oid); required' },
      state: { type: 'string', value: 'DIR|URL', help: 'the repository: a checkout (default: current directory) or an http(s) URL' },
      path: OPT.statePath,
      json: { type: 'boolean', help: 'the report as JSON instead of Markdown' },
      'br-netfilter': { type: 'string', value: 'on|off', default: 'off', help: 'net.bridge.bridge-nf-call-iptables on the lab nodes (default off)' },
    },
    exits: { 0: 'every probe passed', 1: 'a probe failed, the revision is invalid, verify cannot run it (refused) or was interrupted, or an error' },
    run: async (v, _a, io) => verifyCommand(v, io),
  },
  {
    name: 'apply',
    summary: "apply the state to this node the way the agent's cycle does, under its node lock",
    details: [
      'Pre-apply hooks, guest stops, one atomic nft transaction, node settings (rolled back with the',
      'tables if they fail), guest starts, post-apply hooks. A guest moving here starts only once the',
      "old node's report says it stopped (needs a status source: --config).",
    ].join('\n'),
    options: {
      state: OPT.state,
      node: OPT.node,
      nft: OPT.nft,
      json: OPT.json,
      config: OPT.nodeConfig,
      'state-dir': OPT.stateDir,
      'no-hooks': { type: 'boolean', help: 'do not run the pre-/post-apply hooks' },
      'lock-wait': { type: 'string', value: 'S', default: '60', help: 'how long to wait for a running agent cycle (default 60)' },
    },
    exits: { 0: 'converged', 1: 'error or vetoed' },
    run: async (v, _a, io) => nodeCommand('apply', v, io),
  },
  {
    name: 'once',
    summary: 'one agent cycle: fetch, verify, plan, apply, report (for a systemd timer)',
    options: { config: OPT.agentConfig, json: { type: 'boolean', help: "print the cycle's status document (status.json) instead of the log line" }, log: OPT.log },
    exits: { 0: 'converged or applied', 1: 'error, vetoed, rolled back or suspended, a revision not applied (invalid, refused, not owned), or the report could not be published', 2: 'drift reported (drift: report)' },
    run: async (v, _a, io) => agent('once', v, io),
  },
  {
    name: 'run',
    summary: 'the long-running agent: a cycle at start and on the configured schedule',
    options: { config: OPT.agentConfig, log: OPT.log, json: { type: 'boolean', help: 'the same as --log json' } },
    exits: { 0: 'stopped by SIGTERM or SIGINT', 1: 'invalid configuration' },
    run: async (v, _a, io) => agent('run', v, io),
  },
  {
    name: 'guest release',
    args: ['guest'],
    summary: "let this node's agent start <guest> without --from's confirmation that it stopped it",
    details: 'For a node that is dead: make sure it really is down first (see the README).',
    options: { from: { type: 'string', value: 'NODE', help: 'the node the guest was on (required)' }, config: OPT.agentConfig },
    exits: { 0: 'released', 1: 'error' },
    run: async (v, a, io) => guest(a[0] as string, str(v, 'config'), str(v, 'from'), io),
  },
  {
    name: 'suspend',
    summary: "this node's agent plans and reports, and applies nothing until `cgw-sync resume`",
    options: { reason: { type: 'string', value: 'TEXT', help: 'why (1-200 printable characters; shown in the reports); required' }, config: OPT.agentConfig },
    exits: { 0: 'suspended', 1: 'error' },
    run: async (v, _a, io) => {
      const reason = str(v, 'reason');
      if (reason === undefined) throw new UsageError('suspend needs --reason "..."');
      const { suspendCommand } = await import('../rollout/commands.js');
      io.out(await suspendCommand(await agentConfigFor('suspend', str(v, 'config')), reason));
      return EXIT.ok;
    },
  },
  {
    name: 'resume',
    summary: "lift this node's suspension: the next cycle applies again",
    options: { config: OPT.agentConfig },
    exits: { 0: 'resumed (or was not suspended here)', 1: 'error' },
    run: async (v, _a, io) => {
      const { resumeCommand } = await import('../rollout/commands.js');
      io.out(await resumeCommand(await agentConfigFor('resume', str(v, 'config'))));
      return EXIT.ok;
    },
  },
  {
    name: 'status',
    summary: "status --all: every node's latest report, one line each (revision vs main, outcome, health, age, drift, why)",
    details: [
      'On a workstation: --state names the state repository (an http(s) URL or a local clone); the nodes and',
      'their statusKeys come from the state at --branch, the reports from its status/<node> branches (in a clone:',
      'origin/status/<node>, as last fetched), each believed only when signed by its node\'s key, as the agents do.',
      'A URL is fetched into a temporary folder that is removed afterwards; give its token with --token-file or',
      '--token-env rather than in the URL (the process list shows arguments). Credentials are never printed.',
      'On a node, with --config (or without --state): the reports come from the status source of the agent',
      "configuration, the nodes from --state (a state folder; default: the state this node applied last).",
    ].join('\n'),
    options: {
      all: { type: 'boolean', help: 'every node (required: there is no single-node form yet)' },
      state: { type: 'string', value: 'URL|DIR', help: 'the state repository (http(s) URL or clone); with --config: the state folder naming the nodes' },
      branch: { type: 'string', value: 'B', help: 'with a repository: the tracked branch whose state names the nodes (default: main)' },
      path: { ...OPT.statePath, help: 'with a repository: folder of the state inside it (default: .)' },
      'token-file': { type: 'string', value: 'FILE', help: 'with an http(s) URL: file holding the Git token' },
      'token-env': { type: 'string', value: 'NAME', help: 'with an http(s) URL: environment variable holding the Git token' },
      'max-age': { type: 'string', value: 'S', default: '3600', help: 'a node whose last report is older is silent (default 3600)' },
      json: OPT.json,
      markdown: { type: 'boolean', help: 'a Markdown table (for a pull request or a chat)' },
      config: { ...OPT.agentConfig, help: `agent configuration with the status source (default without --state: ${DEFAULT_CONFIG})` },
    },
    exits: { 0: 'every node reported and none failed', 1: 'a node failed, rolled back or is silent, or an error' },
    run: async (v, _a, io) => fleetStatusCommand(v, io),
  },
  {
    name: 'init',
    summary: 'write an agent configuration for a node, consistent with the state (like flux bootstrap)',
    details: [
      'Owned tables come from the state (--state); the state dir, hooks dir and run dir are created.',
      'Token and trusted keys are left as explained comments; --signing-key creates the report signing key.',
      'Check it with `cgw-sync check-config`.',
    ].join('\n'),
    options: {
      source: { type: 'string', value: 'URL', help: 'the state repository (http(s) URL or a local folder); required' },
      node: { type: 'string', value: 'NAME', help: "this node's name in the state; required" },
      state: { type: 'string', value: 'DIR', help: 'a checkout of the state to derive owned tables from and check the node against' },
      config: { type: 'string', value: 'FILE', help: `where to write it (default: ${DEFAULT_CONFIG})` },
      'state-dir': { type: 'string', value: 'DIR', help: "the agent's state dir (default: /var/lib/cgw-sync)" },
      'signing-key': { type: 'string', value: 'FILE', help: "create this node's status signing key there (0600; public key FILE.pub.asc, for the state's statusKey) and name it in the configuration" },
      force: { type: 'boolean', help: 'overwrite an existing file' },
    },
    exits: { 0: 'written, and check-config finds no problem', 1: 'error, a problem, or the file exists (without --force)' },
    run: async (v, _a, io) => (await import('./init.js')).initCommand(v, DEFAULT_CONFIG, io),
  },
  {
    name: 'check-config',
    summary: "check an agent configuration before the first cycle: every problem with the file's line:column",
    details: 'Files it names, folders, the schedule, the network namespace; with --state, whether its ownedTables accept the state.',
    options: { config: OPT.agentConfig, state: { type: 'string', value: 'DIR', help: 'a checkout of the state the node will apply' } },
    exits: { 0: 'no problems', 1: 'problems' },
    run: async (v, _a, io) => (await import('./init.js')).checkConfigCommand(str(v, 'config') ?? DEFAULT_CONFIG, str(v, 'state'), io),
  },
  {
    name: 'lab up',
    summary: '(root) a cluster in network namespaces (two nodes, or --nodes N), a Git server on 127.0.0.1, one agent per node',
    details: "The state repository is seeded from --state (default: the bundled state-example/); --nodes adds copies of its first node and guest with the next free addresses and forwards so every node reaches guests on the others; waits until every node applies it.",
    options: {
      prefix: OPT.prefix,
      mode: { type: 'string', value: 'M', help: `cluster nat.mode in the lab repository (${NAT_MODES.join(', ')})` },
      'br-netfilter': { type: 'string', value: 'on|off', default: 'off', help: "bridged traffic passes the nodes' ip hooks (default: off)" },
      guests: { type: 'string', value: 'netns|qemu', default: 'netns', help: 'guests as network namespaces (default) or real qemu VMs (Debian kernel + busybox; KVM if a probe boot works, else TCG)' },
      state: { type: 'string', value: 'DIR', help: 'state to seed the lab repository from (default: the bundled state-example/)' },
      webhook: { type: 'boolean', help: 'agents listen on 127.0.0.1 and the Git server sends them a signed push webhook: a push applies at once' },
      ipv6: { type: 'boolean', help: 'dual stack: IPv6 twins of every address (10.5.5.201 -> fd05:5:5::201; full-nat, netns guests); lab check probes them too' },
      nodes: { type: 'string', value: 'N', help: `nodes in the lab (default: the state's, 2 for state-example; at most ${MAX_LAB_NODES_CLI})` },
    },
    exits: { 0: 'up', 1: 'error or a lab with that prefix exists' },
    run: async (v, _a, io) => labUp(v, io),
  },
  {
    name: 'lab check',
    summary: '(root) probe the lab from its client and guests; ends "N passed, M failed"',
    options: { prefix: OPT.prefix },
    exits: { 0: 'all passed', 1: 'a probe failed or no lab with that prefix' },
    run: async (v, _a, io) => labCheckCommand(str(v, 'prefix') as string, io),
  },
  {
    name: 'lab restart',
    args: ['what'],
    summary: `(root) restart a lab part (${LAB_RESTARTABLE.join(', ')}) on the same port, so the agents reconnect (fault tests)`,
    details: 'git: stop the lab\'s Git server if it runs and start it again at the URL the agents use.',
    options: { prefix: OPT.prefix },
    exits: { 0: 'restarted', 1: 'error or no lab with that prefix' },
    run: async (v, a, io) => labRestartCommand(str(v, 'prefix') as string, a[0] as string, io),
  },
  {
    name: 'lab down',
    summary: '(root) remove everything lab up made (also after a crash)',
    options: { prefix: OPT.prefix },
    exits: { 0: 'removed (or nothing was left)', 1: 'error' },
    run: async (v, _a, io) => labDownCommand(str(v, 'prefix') as string, io),
  },
];

/** Every command's definition (help, README and tests read them). */
export const commands: readonly CommandSpec[] = COMMANDS;

const str = (v: Values, key: string) => v[key] as string | undefined;

const stdio: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

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
  // `--plan` anywhere is the `plan` command (terraform habit).
  const args = argv.includes('--plan') ? ['plan', ...argv.filter((a) => a !== '--plan')] : argv;
  if (args.length === 0 || args[0] === '--help' || args[0] === '-h') {
    (args.length ? io.out : io.err)(overview(COMMANDS));
    return args.length ? EXIT.ok : EXIT.error;
  }
  const group = COMMANDS.filter((c) => c.name.startsWith(`${args[0]} `));
  if (group.length && (args[1] === '--help' || args[1] === '-h')) {
    io.out(overview(group));
    return EXIT.ok;
  }
  let parsed: Parsed | undefined;
  try {
    parsed = parseCommand(args, COMMANDS);
    if (parsed.help) {
      io.out(commandHelp(parsed.spec));
      return EXIT.ok;
    }
    return await parsed.spec.run(parsed.values, parsed.args, io);
  } catch (e) {
    const { redactText } = await import('../agent/redact.js');
    io.err(`cgw-sync: ${redactText((e as Error).message, await secrets())}\n`);
    if (e instanceof UsageError) {
      const spec = parsed?.spec ?? ((e.cause as CommandSpec | undefined)?.name ? (e.cause as CommandSpec) : undefined);
      io.err(spec ? `see \`cgw-sync ${spec.name} --help\`\n` : 'see `cgw-sync --help`\n');
    }
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
  const base = opts.config ? await loadAgentConfig(opts.config) : (await import('../agent/node.js')).defaultAgentConfig(defaultNode());
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
  const [{ gitSource }, { NftCli }, { conntrackCli, executePlan, gatewayAnnouncer, lockNode, prepareNode, settingsHost, settleGuests }, { readMemory, writeMemory }, { formatPlanText, hasChanges, planJson }, { applyErrors, applyFailed, applyNotes }] =
    await Promise.all([import('../agent/source.js'), import('../nft/backend.js'), import('../agent/node.js'), import('../agent/memory.js'), import('../plan/plan.js'), import('../reconcile/apply.js')]);
  // The state folder is the source (its Git history too, when it is a repository's top).
  const source = gitSource({ ...config, source: { ...config.source, url: path.resolve(dir), path: '.', trustedKeys: [] } });
  const { revision } = await source.fetch(undefined);
  const rt: NodeRuntime = {
    config,
    nft: new NftCli({ nft: config.nft, prefix: config.netns ? ['ip', 'netns', 'exec', config.netns] : [] }),
    settings: settingsHost(config),
    conntrack: conntrackCli(config),
    announce: gatewayAnnouncer(config),
    isAtOrAfter: source.isAtOrAfter,
    placementHistory: source.placementHistory,
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

/** `plan` / `apply` for one node: the state folder through the agent's path. */
async function nodeCommand(command: 'plan' | 'apply', v: Values, io: Io): Promise<number> {
  const dir = str(v, 'state') ?? '.';
  const state = await load(dir, io);
  if (!state) return EXIT.error;
  const opts: CliNodeOptions = { nft: str(v, 'nft'), json: !!v.json, config: str(v, 'config'), stateDir: str(v, 'state-dir'), hooks: !v['no-hooks'], lockWaitMs: Number(v['lock-wait'] ?? 0) * 1000 };
  if (!(opts.lockWaitMs >= 0)) throw new UsageError('--lock-wait must be a number of seconds');
  const config = await nodeConfig(str(v, 'node'), opts);
  return planOrApply(command, state, dir, opts, config, io);
}

/** The review's base: --base, else main, else origin/main (a CI clone has only the remote-tracking branch). */
async function reviewBase(repoDir: string, base: string | undefined): Promise<string> {
  if (base) return base;
  const { resolveRevision } = await import('../git/source.js');
  for (const candidate of ['main', 'origin/main']) {
    if (await resolveRevision(repoDir, candidate).then(() => true, () => false)) return candidate;
  }
  throw new Error(`neither main nor origin/main exists in ${repoDir}: name the base revision with --base`);
}

async function review(repoDir: string, base: string | undefined, rev: string | undefined, subPath: string, io: Io): Promise<number> {
  if (!rev) throw new UsageError('plan --all-nodes needs --rev <revision>');
  const { reviewRevisions } = await import('../plan/review.js');
  const { maskSecrets } = await import('../git/remote.js');
  const r = await reviewRevisions(repoDir, await reviewBase(repoDir, base), rev, subPath);
  // A CI job's environment (its tokens) must not reach a pull request comment, whatever the state did.
  io.out(maskSecrets(r.markdown, await secrets()));
  if (r.diagnostics.length) return EXIT.error;
  return r.changed ? EXIT.changes : EXIT.ok;
}

/** How once and run log each cycle: the human line (default) or the JSON object. */
async function cycleLogger(format: string, io: Io): Promise<NonNullable<CycleDeps['log']>> {
  if (format !== 'human' && format !== 'json') throw new UsageError(`--log must be human or json (got "${format}")`);
  const [{ redactDeep, redactText }, { allSecrets }] = await Promise.all([import('../agent/redact.js'), import('../git/remote.js')]);
  if (format === 'json') return (line) => io.out(`${JSON.stringify(redactDeep(line))}\n`);
  return (line, status) => io.out(`${redactText(status ? cycleLine(status) : humanLogLine(line), allSecrets())}\n`);
}

/**
 * once's exit code, terraform-like. A node that could not save what it did says so too; so does a
 * revision that is in Git but was not applied (invalid, refused, not ours): it needs a person,
 * even though the node still converged on its last good revision.
 */
export function onceExit(status: NodeStatus, unsaved: boolean): number {
  if (unsaved || ['invalid', 'refused', 'not-owned'].includes(status.source.state)) return EXIT.error;
  if (status.outcome === 'drift-reported') return EXIT.changes;
  return status.outcome === 'converged' || status.outcome === 'applied' ? EXIT.ok : EXIT.error;
}

async function agent(command: 'once' | 'run', v: Values, io: Io): Promise<number> {
  const configFile = str(v, 'config') ?? DEFAULT_CONFIG;
  const statusJson = command === 'once' && !!v.json;
  const log = await cycleLogger(command === 'run' && v.json ? 'json' : (str(v, 'log') as string), io);
  const { AgentConfigError } = await import('../agent/config.js');
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
  const [{ NftCli }, { conntrackCli, gatewayAnnouncer }] = await Promise.all([import('../nft/backend.js'), import('../agent/node.js')]);
  const prefix = config.netns ? ['ip', 'netns', 'exec', config.netns] : [];
  const deps = { config, nft: new NftCli({ nft: config.nft, prefix }), conntrack: conntrackCli(config), announce: gatewayAnnouncer(config), log };
  if (command === 'run') {
    const { startListeningAgent } = await import('../listen/agent.js');
    await (await startListeningAgent(deps, { handleSignals: true })).done;
    return EXIT.ok;
  }
  const { runOnce } = await import('../agent/cycle.js');
  const carry: MemoryCarry = { unsaved: false };
  const status = await runOnce({ ...deps, carry, log: statusJson ? undefined : log });
  if (statusJson) io.out(`${JSON.stringify(status, null, 2)}\n`);
  return onceExit(status, carry.unsaved);
}

/**
 * The agent configuration a command acts for (--config, else the default file). Without --config
 * and without the default file, the error says to name it, rather than only that it is missing.
 */
async function agentConfigFor(command: string, configFile: string | undefined): Promise<AgentConfig> {
  const { AgentConfigError } = await import('../agent/config.js');
  try {
    return await loadAgentConfig(configFile ?? DEFAULT_CONFIG);
  } catch (e) {
    if (configFile === undefined && e instanceof AgentConfigError && !existsSync(DEFAULT_CONFIG)) {
      throw new UsageError(`${command} acts for this node's agent, and ${DEFAULT_CONFIG} does not exist: name the agent's configuration with --config FILE`);
    }
    throw e;
  }
}

async function guest(name: string, configFile: string | undefined, from: string | undefined, io: Io): Promise<number> {
  if (!from) throw new UsageError('guest release needs --from <node>: the node the guest was on');
  const config = await agentConfigFor('guest release', configFile);
  const { releaseGuest } = await import('../agent/migration.js');
  await releaseGuest(config.stateDir, name, from);
  io.out(`released ${name} from ${from}: node ${config.node} will start it without ${from}'s confirmation (make sure ${from} is really down)\n`);
  return EXIT.ok;
}

function needRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('lab needs root: it creates network namespaces');
}

/** Options of `status --all` that only a state repository (no --config) takes. */
const REPO_ONLY = ['branch', 'path', 'token-file', 'token-env'] as const;

/**
 * `status --all`: a thin layer over src/rollout/commands.ts. With --config (or without --state),
 * through the agent configuration (fleetStatus); else --state is the repository (repoFleetStatus).
 */
async function fleetStatusCommand(v: Values, io: Io): Promise<number> {
  const maxAgeSeconds = Number(str(v, 'max-age'));
  if (!v.all) throw new UsageError('status needs --all (every node\'s report)');
  if (!(maxAgeSeconds >= 0)) throw new UsageError('--max-age must be a number of seconds');
  if (v.json && v.markdown) throw new UsageError('--json and --markdown exclude each other');
  const format = v.json ? 'json' : v.markdown ? 'markdown' : 'text';
  const state = str(v, 'state');
  const configFile = str(v, 'config');
  const viaAgent = configFile !== undefined || state === undefined;
  const [commands, { maskSecrets }] = await Promise.all([import('../rollout/commands.js'), import('../git/remote.js')]);
  let r: Awaited<ReturnType<typeof commands.fleetStatus>>;
  if (viaAgent) {
    for (const only of REPO_ONLY) if (v[only] !== undefined) throw new UsageError(`--${only} reads a state repository: give it as --state URL|CLONE, without --config`);
    const config = await agentConfigFor('status', configFile);
    r = await commands.fleetStatus(config, { ...(state !== undefined && { stateDir: state }), format, maxAgeSeconds });
  } else {
    const [tokenFile, tokenEnv] = [str(v, 'token-file'), str(v, 'token-env')];
    if (tokenFile !== undefined && tokenEnv !== undefined) throw new UsageError('--token-file and --token-env exclude each other');
    const credentials = { ...(tokenFile !== undefined && { tokenFile: path.resolve(tokenFile) }), ...(tokenEnv !== undefined && { tokenEnv }) };
    r = await commands.repoFleetStatus({ repo: state as string, branch: str(v, 'branch'), path: str(v, 'path'), credentials, format, maxAgeSeconds });
  }
  // Reports carry text from the nodes: masked like everything else this process prints.
  io.out(maskSecrets(r.text, await secrets()));
  if (r.problems.length && format === 'text') io.err(`cgw-sync: ${r.problems.length} node(s) need attention: ${maskSecrets(r.problems.join('; '), await secrets())}\n`);
  return r.problems.length ? EXIT.error : EXIT.ok;
}

/** `verify`: a thin layer over src/verify/ (the report goes to stdout, progress to stderr). */
async function verifyCommand(v: Values, io: Io): Promise<number> {
  const rev = str(v, 'rev');
  if (!rev) throw new UsageError('verify needs --rev <revision>');
  const brnf = str(v, 'br-netfilter');
  if (brnf !== 'on' && brnf !== 'off') throw new UsageError('--br-netfilter must be on or off');
  if (process.getuid?.() !== 0) throw new Error('verify needs root: it builds the lab in network namespaces');
  const { verifyRevision } = await import('../verify/verify.js');
  const [{ verifyJson, verifyMarkdown }, { maskSecrets }, { redactText }] = await Promise.all([import('../verify/report.js'), import('../git/remote.js'), import('../agent/redact.js')]);
  const r = await verifyRevision({ repo: str(v, 'state') ?? '.', rev, path: str(v, 'path'), brNetfilter: brnf === 'on', handleSignals: true, progress: (line) => io.err(`verify: ${line}\n`) });
  // A pull request comment must not carry the CI job's secrets, whatever the state or a probe answer says.
  io.out(maskSecrets(v.json ? verifyJson(r) : verifyMarkdown(r), await secrets()));
  if (r.error) io.err(`cgw-sync: verify: ${redactText(r.error, await secrets())}\n`);
  return r.verdict === 'passed' ? EXIT.ok : EXIT.error;
}

/** `lab up | check | restart | down`: thin layers over src/lab/lab.ts. */
async function labRestartCommand(prefix: string, what: string, io: Io): Promise<number> {
  if (!(LAB_RESTARTABLE as readonly string[]).includes(what)) throw new UsageError(`lab restart: cannot restart "${what}" (one of: ${LAB_RESTARTABLE.join(', ')})`);
  needRoot();
  const { labRestart } = await import('../lab/lab.js');
  io.out(`lab ${prefix}: the Git server listens again at ${await labRestart(prefix, what)}\n`);
  return EXIT.ok;
}

async function labDownCommand(prefix: string, io: Io): Promise<number> {
  needRoot();
  const { labDown } = await import('../lab/topology.js');
  const removed = await labDown(prefix);
  io.out(removed.length ? `lab ${prefix} removed: ${removed.join(' ')}\n` : `no namespaces with prefix ${prefix} were left; its recorded processes and directory are gone too\n`);
  return EXIT.ok;
}

async function labCheckCommand(prefix: string, io: Io): Promise<number> {
  needRoot();
  const [{ labCheck }, { formatResults }, { formatFleet }] = await Promise.all([import('../lab/lab.js'), import('../lab/check.js'), import('../rollout/fleet.js')]);
  const report = await labCheck(prefix);
  const failed = report.results.filter((r) => !r.ok).length;
  io.out(`lab ${prefix}: checking against the state at main ${report.revision.slice(0, 12)}\n${formatResults(report.results)}\n`);
  io.out(`${report.results.length - failed} passed, ${failed} failed\n`);
  io.out(`\nfleet (status/* branches):\n${formatFleet(report.fleet)}`);
  return failed === 0 ? EXIT.ok : EXIT.error;
}

async function labUp(v: Values, io: Io): Promise<number> {
  const prefix = str(v, 'prefix') as string;
  const mode = str(v, 'mode');
  if (mode !== undefined && !(NAT_MODES as readonly string[]).includes(mode)) throw new UsageError(`--mode must be one of ${NAT_MODES.join(', ')}`);
  const brnf = str(v, 'br-netfilter');
  if (brnf !== 'on' && brnf !== 'off') throw new UsageError('--br-netfilter must be on or off');
  const guests = str(v, 'guests');
  if (guests !== 'netns' && guests !== 'qemu') throw new UsageError('--guests must be netns or qemu');
  if (v.ipv6 && mode !== undefined && mode !== 'full-nat') throw new UsageError(`--ipv6 works in full-nat only (IPv6 is not supported in ${mode} yet: docs/nat-modes.md)`);
  const nodesText = str(v, 'nodes');
  const nodes = nodesText === undefined ? undefined : Number(nodesText);
  // Fewer than the seed state has is refused by labStart, before anything is made.
  const nodesProblem = nodes === undefined ? undefined : labNodesProblem(nodes);
  if (nodesProblem) throw new UsageError(nodesProblem.replace(`not ${nodes}`, `not ${nodesText}`));
  needRoot();
  const [{ labStart, labSummary }, { LabExists }] = await Promise.all([import('../lab/lab.js'), import('../lab/topology.js')]);
  try {
    const up = await labStart({
      nodes,
      prefix,
      stateDir: str(v, 'state'),
      mode: mode as (typeof NAT_MODES)[number] | undefined,
      brNetfilter: brnf === 'on',
      guests,
      webhook: !!v.webhook,
      ipv6: !!v.ipv6,
      progress: (line) => io.out(`lab: ${line}\n`),
    });
    io.out(`\n${labSummary(up)}`);
    return EXIT.ok;
  } catch (e) {
    if (!(e instanceof LabExists)) throw e;
    const prefixOpt = prefix === DEFAULT_LAB_PREFIX ? '' : ` --prefix ${prefix}`;
    io.err(`cgw-sync: ${e.message}\n  \`cgw-sync lab check${prefixOpt}\` tests the running lab.\n`);
    return EXIT.error;
  }
}
