// The cgw-sync command line. Parsing and exit codes live here; every command is a thin layer
// over the state, render, plan and reconcile modules.
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { loadState } from '../state/load.js';
import { formatDiagnostics } from '../state/diagnostics.js';
import type { ClusterState } from '../state/types.js';
import { NftCli } from '../nft/backend.js';
import { printTable } from '../nft/text.js';
import { findNode, renderNode } from '../render/render.js';
import { applyNodeNft, planNodeNft } from '../reconcile/nft.js';
import { formatPlanText, hasChanges, planJson, type NodePlan } from '../plan/plan.js';
import { reviewRevisions } from '../plan/review.js';
import { planGuests } from '../reconcile/guests.js';
import { driverFor } from '../guests/index.js';
import { StateError } from '../state/diagnostics.js';
import { loadAgentConfig } from '../agent/config.js';
import { runOnce } from '../agent/cycle.js';
import { startAgent } from '../agent/run.js';
import { releaseGuest } from '../agent/migration.js';

/** Exit codes, as `terraform plan -detailed-exitcode`: 0 nothing to do, 2 changes pending, 1 error. */
export const EXIT = { ok: 0, error: 1, changes: 2 } as const;

const USAGE = `Usage: cgw-sync <command> [options]

Commands:
  validate            check the state directory; every problem with file:line:column and field
  render              print the node's desired nftables tables
  plan | --plan       show what apply would change (exit 0: none, 2: changes, 1: error);
                      guest starts/stops are shown, and carried out by the agent (once, run)
  apply               apply the nftables plan as one atomic transaction and confirm convergence
  once                one agent cycle: fetch, verify, plan, apply, report (for a systemd timer)
  run                 the long-running agent: a cycle at start and on the configured schedule
  guest release <guest> --from <node>
                      let this node's agent start <guest> without <node>'s confirmation
                      that it stopped it (for a node that is dead; see the README)
  plan --all-nodes --rev <rev> [--base <rev>]
                      review a Git revision offline: every node's change as Markdown

Options:
  --state <dir>       state directory (default: current directory); with --all-nodes the
                      state repository's checkout
  --node <name>       node to act for (default: this host's name)
  --nft <path>        nft binary (default: nft from PATH)
  --json              machine-readable output (render, plan, apply, once)
  --config <file>     agent configuration (once, run; default /etc/cgw-sync/agent.yaml)
  --all-nodes         plan every node offline (with --rev)
  --rev <rev>         revision to review (branch, tag, oid)
  --base <rev>        revision to compare with (default: main)
  --path <dir>        folder of the state inside the repository (default: .)
  -h, --help          this help
`;

const OPTIONS = {
  state: { type: 'string', default: '.' },
  node: { type: 'string' },
  nft: { type: 'string' },
  json: { type: 'boolean', default: false },
  plan: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
  config: { type: 'string', default: '/etc/cgw-sync/agent.yaml' },
  'all-nodes': { type: 'boolean', default: false },
  rev: { type: 'string' },
  base: { type: 'string', default: 'main' },
  path: { type: 'string', default: '.' },
  from: { type: 'string' },
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
  let parsed;
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
        return await validate(values.state, io);
      case 'once':
      case 'run':
        return await agent(command, values.config, values.json, io);
      case 'guest':
        return await guest(positionals.slice(1), values.config, values.from, io);
      case 'render':
      case 'plan':
      case 'apply': {
        if (command === 'plan' && values['all-nodes']) return await review(values.state, values.base, values.rev, values.path, io);
        const state = await load(values.state, io);
        if (!state) return EXIT.error;
        const node = values.node ?? defaultNode();
        findNode(state, node);
        if (command === 'render') return render(state, node, values.json, io);
        return await planOrApply(command, state, node, { nft: values.nft, json: values.json }, io);
      }
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    io.err(`cgw-sync: ${(e as Error).message}\n`);
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

function render(state: ClusterState, node: string, json: boolean, io: Io): number {
  const rs = renderNode(state, node);
  io.out(json ? `${JSON.stringify(rs, null, 2)}\n` : rs.tables.map(printTable).join('\n'));
  return EXIT.ok;
}

async function planOrApply(command: 'plan' | 'apply', state: ClusterState, node: string, opts: { nft?: string; json: boolean }, io: Io): Promise<number> {
  const backend = new NftCli({ nft: opts.nft });
  const plan: NodePlan = { node, nft: await planNodeNft(state, node, backend) };
  if (command === 'plan') {
    // Shown for information: starting and stopping guests is the agent's job, because only the
    // agent can check the other nodes' reports before starting a guest that moved.
    try {
      plan.guests = planGuests(state, node, await driverFor(findNode(state, node)).list());
    } catch (e) {
      plan.guestsNote = (e as Error).message;
    }
    io.out(opts.json ? `${JSON.stringify(planJson(plan), null, 2)}\n` : formatPlanText(plan));
    return hasChanges(plan) ? EXIT.changes : EXIT.ok;
  }
  await applyNodeNft(plan.nft, backend);
  if (opts.json) io.out(`${JSON.stringify({ ...planJson(plan), applied: hasChanges(plan), converged: true }, null, 2)}\n`);
  else io.out(hasChanges(plan) ? `${formatPlanText(plan)}\nApplied in one nft transaction; the node has converged.\n` : `No changes: node ${node} has converged.\n`);
  return EXIT.ok;
}

async function review(repoDir: string, base: string, rev: string | undefined, subPath: string, io: Io): Promise<number> {
  if (!rev) throw new UsageError('plan --all-nodes needs --rev <revision>');
  const r = await reviewRevisions(repoDir, base, rev, subPath);
  io.out(r.markdown);
  if (r.diagnostics.length) return EXIT.error;
  return r.changed ? EXIT.changes : EXIT.ok;
}

function logLine(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function agent(command: 'once' | 'run', configFile: string, json: boolean, io: Io): Promise<number> {
  let config;
  try {
    config = await loadAgentConfig(configFile);
  } catch (e) {
    if (e instanceof StateError) {
      io.err(`${formatDiagnostics(e.diagnostics)}\ncgw-sync: invalid agent configuration ${configFile}\n`);
      return EXIT.error;
    }
    throw e;
  }
  const prefix = config.netns ? ['ip', 'netns', 'exec', config.netns] : [];
  const deps = { config, nft: new NftCli({ nft: config.nft, prefix }), log: logLine };
  if (command === 'run') {
    await startAgent(deps, { handleSignals: true }).done;
    return EXIT.ok;
  }
  const status = await runOnce({ ...deps, log: json ? undefined : logLine });
  if (json) io.out(`${JSON.stringify(status, null, 2)}\n`);
  return status.outcome === 'converged' || status.outcome === 'applied' ? EXIT.ok : EXIT.error;
}

async function guest(args: string[], configFile: string, from: string | undefined, io: Io): Promise<number> {
  const [verb, name] = args;
  if (verb !== 'release' || !name || !from) throw new UsageError('usage: cgw-sync guest release <guest> --from <node> [--config FILE]');
  const config = await loadAgentConfig(configFile);
  await releaseGuest(config.stateDir, name, from);
  io.out(`released ${name} from ${from}: node ${config.node} will start it without ${from}'s confirmation (make sure ${from} is really down)\n`);
  return EXIT.ok;
}
