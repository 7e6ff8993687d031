// Signed status reports in tests: node keys, a state that declares them, and forged commits on a
// node's status branch the way an attacker with push access would put them there.
import { appendFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { generateNodeKey } from '../../src/git/signature.js';
import type { NodeStatus } from '../../src/agent/report.js';
import { commitFiles, gitCli, type GitFixture } from './git-server.js';

export type NodeKey = Awaited<ReturnType<typeof generateNodeKey>> & { file: string };

/** A key pair for `node`, the private half in `<dir>/<node>.key` (0600), as init would write it. */
export async function nodeKey(dir: string, node: string): Promise<NodeKey> {
  const key = await generateNodeKey(node);
  const file = path.join(dir, `${node}.key`);
  await writeFile(file, key.privateKey, { mode: 0o600 });
  return { ...key, file };
}

/** `statusKey:` as a YAML block in a node file. */
export function statusKeyYaml(armored: string): string {
  return `statusKey: |\n${armored.trim().split('\n').map((l) => `  ${l}`).join('\n')}\n`;
}

/** Declare `armored` as `node`'s statusKey in the state folder `state`. */
export async function declareStatusKey(state: string, node: string, armored: string): Promise<void> {
  await appendFile(path.join(state, 'nodes', `${node}.yaml`), statusKeyYaml(armored));
}

/**
 * Push a commit onto `branch` (a fast-forward from its tip, as anyone with push access can)
 * holding `status` as the node's report; `sign`: an armored private key to sign it with.
 */
export async function forgeReport(fx: GitFixture, branch: string, status: NodeStatus, sign?: string): Promise<string> {
  const files = { 'status.json': `${JSON.stringify(status, null, 2)}\n`, 'REPORT.md': `# ${status.node}\n` };
  const parent = (await branchTip(fx, branch)) || null;
  return commitFiles(fx.repo, files, { branch, parent, message: `${status.node}: converged`, ...(sign && { sign }) });
}

/** The tip of a branch in the fixture's bare repository ('' when it does not exist). */
export async function branchTip(fx: GitFixture, branch: string): Promise<string> {
  return gitCli(['--git-dir', fx.repo, 'rev-parse', '--verify', '--quiet', `refs/heads/${branch}`]).catch(() => '');
}
