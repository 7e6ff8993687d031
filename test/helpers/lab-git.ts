// Changing a running lab through Git the way a person would (a git CLI clone over HTTP, commit,
// push) and waiting for the agents' reports, for the end-to-end lab tests.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseDocument } from 'yaml';
import type { NatMode } from '../../src/state/types.js';
import type { Lab } from '../../src/lab/lab.js';
import { nodeSettled, readNodeStatus } from '../../src/lab/status.js';
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
 * Wait until every node reports `revision` applied and runs exactly the guests `placement` gives
 * it; the time it took. `onPoll` runs on every poll (transition checks).
 */
export async function waitApplied(lab: Lab, revision: string, placement: Record<string, string[]>, timeoutMs: number, onPoll?: () => Promise<void>): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    await onPoll?.();
    const settled = await Promise.all(lab.plan.nodes.map(async (n) => nodeSettled(await readNodeStatus(lab.repo, n.name), revision, placement[n.name] ?? [])));
    if (settled.every(Boolean)) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) {
      const reports = await Promise.all(lab.plan.nodes.map(async (n) => JSON.stringify(await readNodeStatus(lab.repo, n.name))));
      throw new Error(`nodes did not apply ${revision.slice(0, 12)} within ${timeoutMs} ms:\n${reports.join('\n')}`);
    }
    await delay(100);
  }
}
