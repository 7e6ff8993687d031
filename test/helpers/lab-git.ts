// Changing a running lab through Git the way a person would (a git CLI clone over HTTP, commit,
// push) and waiting for the agents' reports, for the end-to-end lab tests.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseDocument } from 'yaml';
import type { NatMode } from '../../src/state/types.js';
import type { Lab } from '../../src/lab/lab.js';
import { nodeSettled, readNodeStatus } from '../../src/lab/status.js';
import type { NodeStatus } from '../../src/agent/report.js';
import { delay } from '../../src/proc/process.js';
import { gitCli } from './git-server.js';

/** Edit a YAML file of the clone in place. */
export async function editYamlFile(clone: string, file: string, change: (doc: ReturnType<typeof parseDocument>) => void): Promise<void> {
  const full = path.join(clone, file);
  const doc = parseDocument(await readFile(full, 'utf8'));
  change(doc);
  await writeFile(full, doc.toString());
}

/** Commit everything in the clone and push it to main; the new revision. */
export async function commitAndPush(clone: string, message: string): Promise<string> {
  await gitCli(['add', '--all', '.'], clone);
  await gitCli(['-c', 'user.name=lab test', '-c', 'user.email=test@example.org', 'commit', '--quiet', '-m', message], clone);
  await gitCli(['push', '--quiet', 'origin', 'HEAD:main'], clone);
  return gitCli(['rev-parse', 'HEAD'], clone);
}

/** Switch nat.mode (stateless-nat needs a natTag per node: numbered where missing, harmless elsewhere). */
export async function pushMode(clone: string, lab: Lab, mode: NatMode): Promise<string> {
  await editYamlFile(clone, 'cluster.yaml', (doc) => doc.setIn(['nat', 'mode'], mode));
  for (const [i, n] of lab.plan.nodes.entries()) {
    await editYamlFile(clone, path.join('nodes', `${n.name}.yaml`), (doc) => {
      if (!doc.has('natTag')) doc.set('natTag', i + 1);
    });
  }
  return commitAndPush(clone, `nat.mode ${mode}`);
}

/**
 * Wait until the nodes' current reports (node -> its status.json, undefined before its first)
 * satisfy `ok`; the time it took. `onPoll` runs on every poll (transition checks). On timeout the
 * error shows the reports.
 */
export async function waitForReports(lab: Lab, ok: (reports: Record<string, NodeStatus | undefined>) => boolean, what: string, timeoutMs: number, onPoll?: () => Promise<void>): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    await onPoll?.();
    const reports = Object.fromEntries(await Promise.all(lab.plan.nodes.map(async (n) => [n.name, await readNodeStatus(lab.repo, n.name)] as const)));
    if (ok(reports)) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`${what}: not within ${timeoutMs} ms:\n${Object.values(reports).map((r) => JSON.stringify(r)).join('\n')}`);
    }
    await delay(100);
  }
}

/**
 * Wait until every node reports `revision` applied and runs exactly the guests `placement` gives
 * it; the time it took. `onPoll` runs on every poll (transition checks).
 */
export async function waitApplied(lab: Lab, revision: string, placement: Record<string, string[]>, timeoutMs: number, onPoll?: () => Promise<void>): Promise<number> {
  const settled = (reports: Record<string, NodeStatus | undefined>) => lab.plan.nodes.every((n) => nodeSettled(reports[n.name], revision, placement[n.name] ?? []));
  return waitForReports(lab, settled, `nodes did not apply ${revision.slice(0, 12)}`, timeoutMs, onPoll);
}
