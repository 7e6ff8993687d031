// Where the nodes' status reports live: a status branch per node in a Git repository (status.url,
// or the source URL when it is http(s) or ssh), and/or a status folder (status.dir; with `{node}` in it,
// one folder per node, so the other nodes' reports can be read back from it too). Publishing this
// node's report and reading the others' (the migration gate) both go through here.
import path from 'node:path';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { publishStatus, readStatusBranch, statusBranchName } from '../git/status-branch.js';
import { RemoteUnavailable, scrub } from '../git/remote.js';
import { isRemoteUrl } from '../git/ssh.js';
import type { AgentConfig } from './config.js';
import { agentPaths } from './memory.js';
import { commitMessage, statusFiles, type NodeStatus } from './report.js';

export function statusUrl(config: AgentConfig): string | undefined {
  if (config.status.url) return config.status.url;
  return isRemoteUrl(config.source.url) ? config.source.url : undefined;
}

export const credentials = (c: AgentConfig) => ({ tokenFile: c.source.tokenFile, tokenEnv: c.source.tokenEnv, username: c.source.username });

/** The status folder of `node`, when one is configured. */
function statusDir(config: AgentConfig, node: string): string | undefined {
  return config.status.dir?.replaceAll('{node}', node);
}

export type StatusReader = (node: string) => Promise<NodeStatus | null>;

/** How to read another node's latest report; undefined when no status source can tell. */
export function statusReader(config: AgentConfig): StatusReader | undefined {
  const url = statusUrl(config);
  if (url) {
    return async (node) => {
      const r = await readStatusBranch(url, node, { branch: statusBranchName(node, config.status.branch), credentials: credentials(config), ssh: config.source.ssh, timeoutMs: config.source.timeoutSeconds * 1000 });
      const text = r?.files['status.json'];
      return text ? (JSON.parse(text) as NodeStatus) : null;
    };
  }
  if (config.status.dir?.includes('{node}')) {
    return async (node) => {
      const text = await readFile(path.join(statusDir(config, node) as string, 'status.json'), 'utf8').catch(() => undefined);
      return text ? (JSON.parse(text) as NodeStatus) : null;
    };
  }
  return undefined;
}

/** What became of a report. */
export type PublishResult = { kind: 'committed' } | { kind: 'nowhere' } | { kind: 'failed'; error: string };

/** Write the report to the status folder and commit it to the status branch. */
export async function publishReport(config: AgentConfig, status: NodeStatus): Promise<PublishResult> {
  const files = statusFiles(status);
  const dir = statusDir(config, config.node);
  if (dir) {
    try {
      await mkdir(dir, { recursive: true });
      for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
    } catch (e) {
      return { kind: 'failed', error: `writing the report to ${dir}: ${(e as Error).message}` };
    }
  }
  const url = statusUrl(config);
  if (!url) return dir ? { kind: 'committed' } : { kind: 'nowhere' };
  try {
    await publishStatus(
      { url, node: config.node, branch: statusBranchName(config.node, config.status.branch), workDir: agentPaths(config.stateDir).statusRepo, credentials: credentials(config), ssh: config.source.ssh, timeoutMs: config.source.timeoutSeconds * 1000 },
      files,
      commitMessage(status),
    );
  } catch (e) {
    if (!(e instanceof RemoteUnavailable) && !(e instanceof Error && e.name === 'StatusPushRejected')) throw e;
    return { kind: 'failed', error: scrub((e as Error).message) };
  }
  return { kind: 'committed' };
}
