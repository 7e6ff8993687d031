// The operator's rollout commands, thin over the modules: `cgw-sync suspend --reason`,
// `cgw-sync resume` (this node's state dir) and `cgw-sync status --all` (every node's report).
import { userInfo } from 'node:os';
import type { AgentConfig } from '../agent/config.js';
import { agentPaths } from '../agent/memory.js';
import { readReports, statusReader, statusTrust } from '../agent/status-source.js';
import { loadState } from '../state/load.js';
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

/**
 * Every node's latest report, one line each (or JSON, or a Markdown table). The nodes are those
 * of `stateDir`, default the state this node applied last; each applied revision is compared with
 * the tracked branch's tip where it is known. Exit 1 when a node failed, rolled back or is silent too long.
 */
export async function fleetStatus(config: AgentConfig, opts: { stateDir?: string; format: FleetFormat; maxAgeSeconds: number; now?: Date }): Promise<{ text: string; problems: string[] }> {
  const dir = opts.stateDir ?? agentPaths(config.stateDir).lastGood;
  const { state, diagnostics } = await loadState(dir);
  if (!state) throw new Error(`cannot read the nodes from ${dir} (give --state):\n${formatDiagnostics(diagnostics)}`);
  const trust = statusTrust(state);
  const read = statusReader(config, trust);
  if (!read) throw new Error('no status source is configured to read the reports from (status.url, an http(s) source, or status.dir with {node})');
  const nodes = state.nodes.map((n) => n.name);
  const [{ reports, refused }, main] = await Promise.all([readReports(read, nodes), mainTip(config, opts.stateDir)]);
  const rows = fleetRows(nodes, reports, opts.now ?? new Date(), { main, refused, unverified: trust.required ? [] : nodes.filter((n) => !trust.keys.has(n)) });
  const problems = fleetProblems(rows, opts.maxAgeSeconds);
  const text = {
    text: () => formatFleet(rows),
    json: () => `${JSON.stringify({ main: main ?? null, nodes: rows, problems }, null, 2)}\n`,
    markdown: () => formatFleetMarkdown(rows, opts.maxAgeSeconds, main),
  }[opts.format]();
  return { text, problems };
}
