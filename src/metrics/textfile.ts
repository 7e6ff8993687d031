// The edges of the metrics: node-exporter's textfile (replaced atomically, so the collector never
// reads half a file) and the commit time of the applied revision (read once per revision from
// the source's repository).
import fs from 'node:fs';
import type { AgentConfig } from '../agent/config.js';
import { sourceGitDir } from '../agent/source.js';
import { writeFileAtomic } from '../fs/atomic.js';

/** Write the exposition text to `file` (world-readable: node-exporter runs as its own user). */
export async function writeTextfile(file: string, text: string): Promise<void> {
  await writeFileAtomic(file, text, { mode: 0o644 });
}

/** Committer time (unix seconds) of `revision` in the source's repository; undefined when not a Git commit there. */
export async function revisionCommitTime(config: AgentConfig, revision: string): Promise<number | undefined> {
  if (!/^[0-9a-f]{40}$/.test(revision)) return undefined;
  const { default: git } = await import('isomorphic-git');
  return git.readCommit({ fs, dir: sourceGitDir(config), oid: revision }).then(
    (c) => c.commit.committer.timestamp,
    () => undefined,
  );
}
