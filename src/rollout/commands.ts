// The operator's rollout commands, thin over the modules: `cgw-sync suspend --reason`,
// `cgw-sync resume` (this node's state dir) and `cgw-sync status --all` (every node's report).
import { userInfo } from 'node:os';
import type { AgentConfig } from '../agent/config.js';
import { agentPaths } from '../agent/memory.js';
import { readReports, statusReader, statusTrust } from '../agent/status-source.js';
import { loadState } from '../state/load.js';
import { formatDiagnostics } from '../state/diagnostics.js';
import { fleetProblems, fleetRows, formatFleet } from './fleet.js';
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

/**
 * Every node's latest report, one line each (or JSON). The nodes are those of `stateDir`, default
 * the state this node applied last. Exit 1 when a node failed, rolled back or is silent too long.
 */
export async function fleetStatus(config: AgentConfig, opts: { stateDir?: string; json: boolean; maxAgeSeconds: number; now?: Date }): Promise<{ text: string; problems: string[] }> {
  const dir = opts.stateDir ?? agentPaths(config.stateDir).lastGood;
  const { state, diagnostics } = await loadState(dir);
  if (!state) throw new Error(`cannot read the nodes from ${dir} (give --state):\n${formatDiagnostics(diagnostics)}`);
  const trust = statusTrust(state);
  const read = statusReader(config, trust);
  if (!read) throw new Error('no status source is configured to read the reports from (status.url, an http(s) source, or status.dir with {node})');
  const nodes = state.nodes.map((n) => n.name);
  const { reports, refused } = await readReports(read, nodes);
  const rows = fleetRows(nodes, reports, opts.now ?? new Date(), { refused, unverified: trust.required ? [] : nodes.filter((n) => !trust.keys.has(n)) });
  const problems = fleetProblems(rows, opts.maxAgeSeconds);
  return { text: opts.json ? `${JSON.stringify({ nodes: rows, problems }, null, 2)}\n` : formatFleet(rows), problems };
}
