// The operator's rollout commands, thin over the modules: `cgw-sync suspend --reason`,
// `cgw-sync resume` (this node's state dir) and `cgw-sync status --all` (every node's report, read
// through this node's agent configuration, or straight from the state repository on a workstation).
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { checkBranch, checkUrl, type AgentConfig } from '../agent/config.js';
import { agentPaths } from '../agent/memory.js';
import { branchStatusReader, readReports, statusReader, statusTrust, type StatusReader } from '../agent/status-source.js';
import { splitUserinfo, type GitCredentials } from '../git/remote.js';
import { fetchBranchTips, readBranchTip, statusBranchName } from '../git/status-branch.js';
import { stateAt } from '../plan/review.js';
import { loadState } from '../state/load.js';
import type { ClusterState } from '../state/types.js';
import { formatDiagnostics } from '../state/diagnostics.js';
import { fleetProblems, fleetRows, formatFleet, formatFleetMarkdown } from './fleet.js';
import { resolveRevision } from '../git/source.js';
import { resumeNode, suspendNode } from './suspend.js';

/** Who runs the command: the sudo user when there is one. */
function operator(): string {
  return process.env.SUDO_USER || userInfo().username;
}

export async function suspendCommand(config: AgentConfig, reason: string, now = new Date()): Promise<string> {
  if (!reason.trim() || !/^[ -~]{1,200}$/.test(reason)) throw new Error('--reason must be 1-200 printable ASCII characters');
  await suspendNode(config.stateDir, { reason, by: operator(), since: now.toISOString() });
  return `node ${config.node} is suspended: its agent plans and reports, and applies nothing until \`cgw-sync resume\`\n`;
}

export async function resumeCommand(config: AgentConfig): Promise<string> {
  return (await resumeNode(config.stateDir)) ? `node ${config.node} resumed: the next cycle applies again\n` : `node ${config.node} was not suspended here (a suspend: in the state is lifted in Git)\n`;
}

export type FleetFormat = 'text' | 'json' | 'markdown';

/** The tip of the tracked branch, from the given state checkout or the agent's source cache; undefined when neither has it. */
async function mainTip(config: AgentConfig, stateDir: string | undefined): Promise<string | undefined> {
  const { branch } = config.source;
  for (const dir of [stateDir, agentPaths(config.stateDir).sourceCache]) {
    for (const ref of [branch, `origin/${branch}`]) {
      if (dir === undefined) continue;
      const oid = await resolveRevision(dir, ref).catch(() => undefined);
      if (oid) return oid;
    }
  }
  return undefined;
}

/** The rendered fleet and the nodes that need attention (the exit code). */
export interface FleetOutput {
  text: string;
  problems: string[];
}

/**
 * Every node's latest report, one line each (or JSON, or a Markdown table). The nodes are those
 * of `stateDir`, default the state this node applied last; each applied revision is compared with
 * the tracked branch's tip where it is known. Exit 1 when a node failed, rolled back or is silent too long.
 */
export async function fleetStatus(config: AgentConfig, opts: { stateDir?: string; format: FleetFormat; maxAgeSeconds: number; now?: Date }): Promise<FleetOutput> {
  const dir = opts.stateDir ?? agentPaths(config.stateDir).lastGood;
  const { state, diagnostics } = await loadState(dir);
  if (!state) throw new Error(`cannot read the nodes from ${dir} (give --state):\n${formatDiagnostics(diagnostics)}`);
  const read = statusReader(config, statusTrust(state));
  if (!read) throw new Error('no status source is configured to read the reports from (status.url, an http(s) source, or status.dir with {node})');
  return renderFleet(state, read, mainTip(config, opts.stateDir), opts);
}

/** Read every node's report through `read` and render the fleet in `format`. */
async function renderFleet(state: ClusterState, read: StatusReader, mainTip: Promise<string | undefined>, opts: { format: FleetFormat; maxAgeSeconds: number; now?: Date }): Promise<FleetOutput> {
  const trust = statusTrust(state);
  const nodes = state.nodes.map((n) => n.name);
  const [{ reports, refused }, main] = await Promise.all([readReports(read, nodes), mainTip]);
  const rows = fleetRows(nodes, reports, opts.now ?? new Date(), { main, refused, unverified: trust.required ? [] : nodes.filter((n) => !trust.keys.has(n)) });
  const problems = fleetProblems(rows, opts.maxAgeSeconds);
  const text = {
    text: () => formatFleet(rows),
    json: () => `${JSON.stringify({ main: main ?? null, nodes: rows, problems }, null, 2)}\n`,
    markdown: () => formatFleetMarkdown(rows, opts.maxAgeSeconds, main),
  }[opts.format]();
  return { text, problems };
}

export interface RepoFleetOptions {
  /** The state repository: an http(s) URL, or a local clone (a folder with .git). */
  repo: string;
  /** The tracked branch (default main): its state names the nodes and their keys. */
  branch?: string;
  /** Folder of the state inside the repository (default .). */
  path?: string;
  /** For an http(s) URL: the token, from a file or an environment variable, as the agent reads it. */
  credentials?: GitCredentials;
  timeoutMs?: number;
  format: FleetFormat;
  maxAgeSeconds: number;
  now?: Date;
}

const isHttpUrl = (s: string) => /^https?:\/\//i.test(s);

/** Why `repo` cannot be read as a state repository by `status --all --state`; undefined when it can. */
function repoProblem(repo: string): string | undefined {
  if (isHttpUrl(repo) || /^[a-z][a-z0-9+.-]*:/i.test(repo) || /^[^/]+@[^/]+:/.test(repo)) {
    const problem = checkUrl(repo, false);
    if (problem) return problem;
    // The system git with the agent's deploy key is the agent's business; an operator has a clone.
    if (!isHttpUrl(repo)) return `${splitUserinfo(repo).url}: status --all reads http(s) URLs or a local clone (for ssh, fetch a clone and give its folder)`;
    return undefined;
  }
  return existsSync(path.join(repo, '.git')) ? undefined : `${repo} is not a Git clone (no .git folder in it): give a clone of the state repository or its http(s) URL (or, on a node, add --config FILE: then --state is the state folder naming the nodes)`;
}

/**
 * A branch's tip in a clone: the remote-tracking ref (what the server said at the last fetch,
 * where a clone sees the nodes' status branches) before a local branch of that name.
 */
async function tipIn(dir: string, branch: string): Promise<string | undefined> {
  for (const ref of [`refs/remotes/origin/${branch}`, `refs/heads/${branch}`]) {
    const oid = await resolveRevision(dir, ref).catch(() => undefined);
    if (oid) return oid;
  }
  return undefined;
}

/**
 * `status --all --state <URL or clone>` without an agent configuration (an operator's workstation):
 * the nodes and their statusKeys come from the state at the tip of `branch`, each node's report
 * from its status/<node> branch of the same repository, believed as the agents believe it. A URL
 * is fetched (tips only) into a temporary folder that is removed afterwards.
 */
export async function repoFleetStatus(opts: RepoFleetOptions): Promise<FleetOutput> {
  const problem = repoProblem(opts.repo);
  if (problem) throw new Error(problem);
  const branch = opts.branch ?? 'main';
  const branchProblem = checkBranch(branch);
  if (branchProblem) throw new Error(`--branch: ${branchProblem}`);
  const scratch = isHttpUrl(opts.repo) ? await mkdtemp(path.join(tmpdir(), 'cgw-fleet-')) : undefined;
  const fetchTips = async (branches: string[]) => {
    if (scratch) await fetchBranchTips(opts.repo, scratch, branches, { credentials: opts.credentials, timeoutMs: opts.timeoutMs });
  };
  try {
    const dir = scratch ?? path.resolve(opts.repo);
    const shown = scratch ? splitUserinfo(opts.repo).url : dir;
    await fetchTips([branch]);
    const main = await tipIn(dir, branch);
    if (!main) throw new Error(`${shown} has no branch ${branch}${scratch ? '' : ` (nor origin/${branch})`}`);
    const at = await stateAt(dir, main, opts.path ?? '.');
    if (!at.state) throw new Error(`cannot read the nodes from ${shown} at ${branch} (${main.slice(0, 12)}), folder ${opts.path ?? '.'}:\n${formatDiagnostics(at.diagnostics)}`);
    const state = at.state;
    await fetchTips(state.nodes.map((n) => statusBranchName(n.name)));
    const read = branchStatusReader(statusTrust(state), async (node) => {
      const name = statusBranchName(node);
      const oid = await tipIn(dir, name);
      return oid ? readBranchTip(dir, name, oid) : null;
    });
    return await renderFleet(state, read, Promise.resolve(main), opts);
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}
