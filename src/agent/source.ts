// Where the agent's revisions come from (as in Flux's source controller), behind one small
// interface: fetch the tracked revision, and tell whether one revision is at or after another
// (the migration gate asks this about other nodes' applied revisions). The Git source (remote or
// local repository) and a plain folder source (a directory is the revision; tests, offline use).
import fs from 'node:fs';
import path from 'node:path';
import git from 'isomorphic-git';
import { contentHash, fetchSource, leadingOid, type SourceAccepted, type SourceResult } from '../git/source.js';
import { placementHistory, type PlacementHistory } from '../git/placement-history.js';
import { isRemoteUrl } from '../git/ssh.js';
import { readTrustedKeyFiles, type AgentConfig } from './config.js';
import { agentPaths } from './memory.js';

export interface Source {
  /** The current revision, accepted or refused; throws RemoteUnavailable when unreachable. */
  fetch(lastApplied: string | undefined): Promise<SourceResult>;
  /** Whether `rev` is `since` or a descendant of it, as far as this source can tell. */
  isAtOrAfter(rev: string, since: string): Promise<boolean>;
  /**
   * Where the state's history placed each guest, in the commits reachable from `revision`;
   * absent (or undefined for a revision) when the source has no history (a plain folder).
   */
  placementHistory?(revision: string): Promise<PlacementHistory | undefined>;
}

/** The repository the source's revisions can be read from: the fetch cache of a remote, or the local repository. */
export function sourceGitDir(config: AgentConfig): string {
  return isRemoteUrl(config.source.url) ? agentPaths(config.stateDir).sourceCache : config.source.url;
}

/** The Git source of an agent configuration (http(s) or ssh remote, or a local folder or repository). */
export function gitSource(config: AgentConfig): Source {
  const cacheDir = agentPaths(config.stateDir).sourceCache;
  const remote = isRemoteUrl(config.source.url);
  const repoDir = remote ? cacheDir : config.source.url;
  // The last accepted fetch, for the same last applied revision (the verdict depends on it).
  let known: { lastApplied: string | undefined; result: SourceAccepted } | undefined;
  // isomorphic-git's pack cache, kept as long as this source (fetchSource uses it for http(s) only).
  const gitCache = {};
  return {
    fetch: async (lastApplied) => {
      const r = await fetchSource({
        url: config.source.url,
        branch: config.source.branch,
        cacheDir,
        credentials: { tokenFile: config.source.tokenFile, tokenEnv: config.source.tokenEnv, username: config.source.username },
        ssh: config.source.ssh,
        trustedKeys: await readTrustedKeyFiles(config.source.trustedKeys),
        lastAppliedOid: lastApplied,
        allowNonDescendant: config.source.allowNonDescendant,
        timeoutMs: config.source.timeoutSeconds * 1000,
        gitCache,
        // The verdict depends on the last applied revision, unless that is the revision itself.
        ...(known && (known.lastApplied === lastApplied || leadingOid(lastApplied) === known.result.revision) && { known: known.result }),
      });
      // Kept without its advertisement: that is only ever the current fetch's.
      if (r.accepted) {
        const { advertised: _, ...result } = r;
        known = { lastApplied, result };
      } else known = undefined;
      return r;
    },
    isAtOrAfter: async (rev, since) => rev === since || git.isDescendent({ fs, dir: repoDir, oid: rev, ancestor: since, depth: -1 }).catch(() => false),
    // A folder without Git has content-hash revisions; a dirty working copy's is "<HEAD>-dirty-<hash>".
    placementHistory: async (revision) => {
      const head = leadingOid(revision);
      return head ? placementHistory(repoDir, config.source.path, head) : undefined;
    },
  };
}

/** A directory read as one revision (its content hash); it has no history, so only equal revisions compare. */
export function folderSource(dir: string): Source {
  return {
    fetch: async () => ({ accepted: true, revision: `sha256-${await contentHash(dir)}`, dir: path.resolve(dir), kind: 'folder' }),
    isAtOrAfter: async (rev, since) => rev === since,
  };
}
