// Status reports go back to the Git server on a branch per node (default `status/<node>`).
// Each node owns its branch, so the branch's content is simply "the latest report": a commit is
// built straight from the files (no work tree), on top of the branch tip we last saw, and pushed.
// If the branch moved meanwhile (someone else pushed to it), we fetch the new tip, put the same
// files on top of it and push again, a bounded number of times. The local repository (workDir) is
// separate from the source cache and holds only status branches. http(s) remotes are spoken to by
// isomorphic-git, ssh remotes by the system git (src/git/ssh.ts); commits are built the same way.
import fs from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import git from 'isomorphic-git';
import type { PrivateKey, PublicKey } from 'openpgp';
import { classifyRemoteError, openRemote, RemoteUnavailable, scrub, type GitCredentials, type Remote } from './remote.js';
import { isSshUrl, sshFetchBranch, sshPushBranch, sshRemoteTip, type SshOptions } from './ssh.js';
import { readFilesTree, writeFilesTree, type FileMap } from './tree.js';
import { commitSigner, verifyCommitSignature } from './signature.js';

export interface StatusBranchOptions {
  /** http(s) or ssh URL of the repository that receives the status branches. */
  url: string;
  node: string;
  /** Local repository for status branches (created when missing). */
  workDir: string;
  /** Default `status/<node>`. */
  branch?: string;
  credentials?: GitCredentials;
  /** Key and known_hosts for an ssh URL. */
  ssh?: SshOptions;
  /** Push attempts when the remote branch keeps moving (default 4). */
  maxAttempts?: number;
  timeoutMs?: number;
  /** The node's own key: every report commit is signed with it, so others can trust the branch. */
  signingKey?: PrivateKey;
}

export interface PublishResult {
  branch: string;
  /** False when the branch already held exactly these files. */
  committed: boolean;
  /** The branch tip after the call. */
  oid: string;
  /** Push attempts made (1 unless the remote branch moved). */
  attempts: number;
}

/** The remote branch moved on every attempt; the report was not published. */
export class StatusPushRejected extends Error {
  override name = 'StatusPushRejected';
}

export const DEFAULT_STATUS_BRANCH = 'status/{node}';

/** The one place a node's status branch name is built: `pattern`'s {node} replaced by the node. */
export function statusBranchName(node: string, pattern = DEFAULT_STATUS_BRANCH): string {
  return pattern.replaceAll('{node}', node);
}

/**
 * Make `files` the whole content of the node's status branch. Commits only when the content
 * differs from the branch tip, or `always` (to put this node's signed report back on top of a
 * commit it did not make). Throws RemoteUnavailable when the server cannot be reached.
 */
export async function publishStatus(opts: StatusBranchOptions, files: FileMap, message: string, { always = false } = {}): Promise<PublishResult> {
  const branch = opts.branch ?? statusBranchName(opts.node);
  const maxAttempts = opts.maxAttempts ?? 4;
  const dir = opts.workDir;
  const remote = await openTransport(opts.url, opts);
  await ensureRepo(dir, remote.url);

  const tracking = `refs/remotes/origin/${branch}`;
  // Start from the tip we saw last time; ask the server only when we have never seen it.
  let base = (await resolveOrUndefined(dir, tracking)) ?? (await remote.sync(dir, branch));
  const tree = await writeFilesTree({ dir }, files);
  const author = { name: `cgw-sync ${opts.node}`, email: `cgw-sync@${opts.node}` };

  for (let attempt = 1; ; attempt++) {
    if (!always && base && (await git.readCommit({ fs, dir, oid: base })).commit.tree === tree) {
      return { branch, committed: false, oid: base, attempts: attempt };
    }
    const sign = opts.signingKey && { signingKey: opts.signingKey.armor(), onSign: commitSigner(opts.signingKey) };
    const oid = await git.commit({ fs, dir, message, tree, parent: base ? [base] : [], author, ref: `refs/heads/${branch}`, ...sign });
    const pushed = await remote.push(dir, branch, { old: base, oid });
    if (pushed === 'pushed') {
      await git.writeRef({ fs, dir, ref: tracking, value: oid, force: true });
      return { branch, committed: true, oid, attempts: attempt };
    }
    if (attempt >= maxAttempts) {
      throw new StatusPushRejected(`pushing ${branch}: rejected on each of ${attempt} attempts (last: ${pushed.rejected})`);
    }
    base = await remote.sync(dir, branch);
  }
}

export interface StatusBranchTip {
  branch: string;
  oid: string;
  files: Record<string, string>;
  /** The tip commit's signature and the bytes it signs (verifyCommitSignature's input). */
  signed: { gpgsig?: string; payload: string };
}

/**
 * Files on another node's status branch at its tip, or null when the branch does not exist.
 * Uses `workDir` as local object store when given (e.g. the status workDir), else a temp dir.
 */
export async function readStatusBranch(
  url: string,
  node: string,
  opts: { branch?: string; workDir?: string; credentials?: GitCredentials; ssh?: SshOptions; timeoutMs?: number } = {},
): Promise<StatusBranchTip | null> {
  const branch = opts.branch ?? statusBranchName(node);
  const remote = await openTransport(url, opts);
  const dir = opts.workDir ?? (await mkdtemp(path.join(tmpdir(), 'cgw-status-read-')));
  try {
    await ensureRepo(dir, remote.url);
    const oid = await remote.sync(dir, branch);
    return oid ? await readBranchTip(dir, branch, oid) : null;
  } finally {
    if (!opts.workDir) await rm(dir, { recursive: true, force: true });
  }
}

/** The files and signature of commit `oid` (the tip of `branch`) in the local repository `dir`. */
export async function readBranchTip(dir: string, branch: string, oid: string): Promise<StatusBranchTip> {
  const { commit, payload } = await git.readCommit({ fs, dir, oid });
  return { branch, oid, files: await readFilesTree({ dir }, commit.tree), signed: { gpgsig: commit.gpgsig, payload } };
}

/**
 * Bring the tips of `branches` of the http(s) repository `url` into `dir` (created when missing)
 * as refs/remotes/origin/<branch>, one after the other; a branch the server lacks is left out.
 * Only the tips are fetched (depth 1): a reader needs no history.
 */
export async function fetchBranchTips(url: string, dir: string, branches: string[], opts: { credentials?: GitCredentials; timeoutMs?: number } = {}): Promise<Map<string, string>> {
  const remote = await openRemote(url, opts.credentials, opts.timeoutMs);
  await ensureRepo(dir, remote.url);
  const common = { fs, http: remote.http, dir, url: remote.url, onAuth: remote.onAuth };
  const tips = new Map<string, string>();
  try {
    const heads = await git.listServerRefs({ http: remote.http, url: remote.url, onAuth: remote.onAuth, prefix: 'refs/heads/' });
    for (const branch of branches) {
      const tip = heads.find((r) => r.ref === `refs/heads/${branch}`)?.oid;
      if (!tip) continue;
      await recordTip(dir, branch, tip, () => git.fetch({ ...common, remote: 'origin', ref: branch, singleBranch: true, depth: 1, tags: false }));
      tips.set(branch, tip);
    }
  } catch (e) {
    throw toRemoteError(e, 'reading branches from', remote);
  }
  return tips;
}

/** A commit at the tip of a node's own status branch that the node did not put there. */
export interface Intrusion {
  branch: string;
  /** The foreign tip; undefined when the branch was deleted. */
  oid?: string;
  /** The commit this node pushed last. */
  expected: string;
  reason: string;
}

/**
 * Whether the tip of the node's own branch on the server is still the commit it pushed last
 * (`lastPushed`, from its memory). A different tip is still the node's own when it is signed by
 * the node's key and descends from `lastPushed` (pushed, then memory.json could not be saved);
 * anything else (unsigned, another key, an older commit of the node put back, a deleted branch)
 * is an intrusion. Without `lastPushed` (first run) there is nothing to compare with.
 */
export async function checkOwnBranch(opts: StatusBranchOptions, lastPushed: string | undefined, ownKey?: PublicKey): Promise<Intrusion | undefined> {
  if (!lastPushed) return undefined;
  const branch = opts.branch ?? statusBranchName(opts.node);
  const remote = await openTransport(opts.url, opts);
  await ensureRepo(opts.workDir, remote.url);
  const tip = await remote.sync(opts.workDir, branch);
  if (tip === lastPushed) return undefined;
  const found = { branch, expected: lastPushed };
  if (!tip) return { ...found, reason: 'the branch was deleted' };
  const dir = opts.workDir;
  const { commit, payload } = await git.readCommit({ fs, dir, oid: tip });
  const signature = ownKey ? await verifyCommitSignature(commit.gpgsig, payload, [ownKey]) : undefined;
  if (signature && !signature.ok) return { ...found, oid: tip, reason: signature.signedBy ? `${signature.signedBy}, not this node's key` : signature.reason };
  const after = await git.isDescendent({ fs, dir, oid: tip, ancestor: lastPushed, depth: -1 }).catch(() => false);
  if (!after) return { ...found, oid: tip, reason: signature ? 'an older commit of this node was put back (the branch was reset)' : 'not the commit this node pushed last, nor a descendant of it' };
  // Unsigned setups cannot tell a later commit of their own from a forged one.
  return signature ? undefined : { ...found, oid: tip, reason: 'not the commit this node pushed last (reports are unsigned: status.signingKey)' };
}

/** How publishing and reading talk to the server: the same two operations over HTTP or ssh. */
interface StatusTransport {
  /** The URL stored as origin (no userinfo). */
  url: string;
  /**
   * Ask the server for the branch tip, fetch it if we lack the commit, and record it as
   * refs/remotes/origin/<branch>. Undefined when the branch does not exist remotely.
   */
  sync(dir: string, branch: string): Promise<string | undefined>;
  /**
   * Push the local branch, a commit on top of `old` (what we last saw at the server's branch;
   * undefined: the branch is new); `rejected` when the server's branch moved (not fast-forward).
   */
  push(dir: string, branch: string, update: { old: string | undefined; oid: string }): Promise<'pushed' | { rejected: string }>;
}

async function openTransport(url: string, opts: { credentials?: GitCredentials; ssh?: SshOptions; timeoutMs?: number }): Promise<StatusTransport> {
  if (!isSshUrl(url)) return httpTransport(await openRemote(url, opts.credentials, opts.timeoutMs));
  if (!opts.ssh) throw new Error(`status repository ${url} is an ssh URL: the agent config needs source.ssh.identityFile and source.ssh.knownHostsFile`);
  const remote = { url, ssh: opts.ssh, timeoutSeconds: Math.ceil((opts.timeoutMs ?? 30_000) / 1000) };
  return {
    url,
    sync: async (dir, branch) => {
      const tip = await sshRemoteTip(remote, dir, branch);
      return recordTip(dir, branch, tip, () => sshFetchBranch(remote, dir, branch));
    },
    push: (dir, branch) => sshPushBranch(remote, dir, branch),
  };
}

function httpTransport(remote: Remote): StatusTransport {
  // A report is pushed in one request until the server answers that otherwise than report-status.
  let oneRequest = true;
  return {
    url: remote.url,
    sync: async (dir, branch) => {
      const fullRef = `refs/heads/${branch}`;
      try {
        const refs = await git.listServerRefs({ http: remote.http, url: remote.url, onAuth: remote.onAuth, prefix: fullRef });
        const tip = refs.find((r) => r.ref === fullRef)?.oid;
        return await recordTip(dir, branch, tip, () =>
          git.fetch({ fs, http: remote.http, dir, url: remote.url, remote: 'origin', ref: branch, singleBranch: true, tags: false, onAuth: remote.onAuth }),
        );
      } catch (e) {
        throw toRemoteError(e, `reading ${branch} from`, remote);
      }
    },
    push: async (dir, branch, update) => {
      const ref = `refs/heads/${branch}`;
      const rejected = (reason: string) => ({ rejected: scrub(reason, remote.secrets).replace(/\s+/g, ' ').trim() });
      if (oneRequest) {
        try {
          const refused = await pushCommit(remote, dir, ref, update);
          return refused === undefined ? 'pushed' : rejected(refused);
        } catch {
          // Not a report-status answer (a server that wants the advertisement first, a proxy, a
          // network error): this transport pushes the ordinary way, which says what is wrong.
          oneRequest = false;
        }
      }
      try {
        await git.push({ fs, http: remote.http, dir, url: remote.url, remote: 'origin', ref, remoteRef: ref, onAuth: remote.onAuth });
        return 'pushed';
      } catch (e) {
        if (!isPushRejection(e)) throw toRemoteError(e, `pushing ${branch} to`, remote);
        return rejected(String((e as Error).message));
      }
    },
  };
}

const ZERO_OID = '0'.repeat(40);

/**
 * Push commit `update.oid` to `ref` in one request, as the update from `update.old` (the server
 * compares that with its branch itself and refuses the update when the branch moved, like a
 * push that is not a fast-forward). The pack holds the commit, its tree and the tree's blobs: all
 * a report commit brings. No ref advertisement is asked for first: the only capability used is
 * report-status, which every Git server has. Undefined when pushed, else the server's reason.
 */
async function pushCommit(remote: Remote, dir: string, ref: string, update: { old: string | undefined; oid: string }): Promise<string | undefined> {
  const { commit } = await git.readCommit({ fs, dir, oid: update.oid });
  const { packfile } = await git.packObjects({ fs, dir, oids: [update.oid, ...(await treeObjects(dir, commit.tree))] });
  if (!packfile) throw new Error('could not pack the report commit');
  const command = `${update.old ?? ZERO_OID} ${update.oid} ${ref}\0report-status agent=cgw-sync\n`;
  const body = Buffer.concat([pktLine(command), Buffer.from('0000'), packfile]);
  const auth = await remote.onAuth(remote.url, {});
  const res = await remote.http.request({
    url: `${remote.url}/git-receive-pack`,
    method: 'POST',
    headers: {
      'content-type': 'application/x-git-receive-pack-request',
      accept: 'application/x-git-receive-pack-result',
      ...(auth && !('cancel' in auth && auth.cancel) && { authorization: `Basic ${Buffer.from(`${auth.username ?? ''}:${auth.password ?? ''}`).toString('base64')}` }),
    },
    body: once(body),
  });
  const chunks: Uint8Array[] = [];
  for await (const chunk of res.body ?? []) chunks.push(chunk);
  if (res.statusCode !== 200) throw new git.Errors.HttpError(res.statusCode, res.statusMessage, Buffer.concat(chunks).toString('utf8'));
  return receivePackRefusal(Buffer.concat(chunks), ref);
}

/** The oids of a tree and everything in it. */
async function treeObjects(dir: string, treeOid: string): Promise<string[]> {
  const { tree } = await git.readTree({ fs, dir, oid: treeOid });
  const inner = await Promise.all(tree.map((e) => (e.type === 'tree' ? treeObjects(dir, e.oid) : [e.oid])));
  return [treeOid, ...inner.flat()];
}

function pktLine(text: string): Buffer {
  const payload = Buffer.from(text);
  return Buffer.concat([Buffer.from((payload.length + 4).toString(16).padStart(4, '0')), payload]);
}

async function* once(body: Uint8Array): AsyncIterableIterator<Uint8Array> {
  yield body;
}

/**
 * The server's report-status for `ref` (pkt-lines: "unpack ok", then "ok <ref>" or
 * "ng <ref> <reason>"): undefined when the ref was updated, else why not.
 */
export function receivePackRefusal(response: Buffer, ref: string): string | undefined {
  const lines: string[] = [];
  for (let at = 0; at + 4 <= response.length; ) {
    const size = Number.parseInt(response.subarray(at, at + 4).toString('latin1'), 16);
    if (!Number.isInteger(size) || (size > 0 && size < 4) || at + size > response.length) throw new Error('malformed report-status from the server');
    if (size > 0) lines.push(response.subarray(at + 4, at + size).toString('utf8').replace(/\n$/, ''));
    at += size === 0 ? 4 : size;
  }
  const unpack = lines.find((l) => l.startsWith('unpack '));
  if (unpack !== 'unpack ok') return unpack ? `the server could not unpack the report: ${unpack.slice('unpack '.length)}` : 'the server sent no report-status';
  if (lines.includes(`ok ${ref}`)) return undefined;
  const ng = lines.find((l) => l.startsWith(`ng ${ref} `));
  // Most often the branch moved since we saw it (the server compares the old tip itself).
  return ng ? `refused by the server: ${ng.slice(`ng ${ref} `.length)}` : `the server did not report on ${ref}`;
}

/** Record the server's tip as the tracking ref (fetching the commit when missing); none: drop it. */
async function recordTip(dir: string, branch: string, tip: string | undefined, fetchBranch: () => Promise<unknown>): Promise<string | undefined> {
  const tracking = `refs/remotes/origin/${branch}`;
  if (!tip) {
    await git.deleteRef({ fs, dir, ref: tracking }).catch(() => undefined);
    return undefined;
  }
  if (!(await hasCommit(dir, tip))) await fetchBranch();
  await git.writeRef({ fs, dir, ref: tracking, value: tip, force: true });
  return tip;
}

function toRemoteError(e: unknown, what: string, remote: Remote): Error {
  return classifyRemoteError(e, what, remote, (m, s, c) => new RemoteUnavailable(m, s, c));
}

/** isomorphic-git's own fast-forward check, or the server's "failed to update ref" / "fetch first". */
function isPushRejection(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === 'PushRejectedError' || code === 'GitPushError';
}

/** Create the local repository if needed and point its "origin" at `url` (stored without userinfo). */
async function ensureRepo(dir: string, url: string): Promise<void> {
  const present = await stat(path.join(dir, '.git')).then(
    () => true,
    () => false,
  );
  if (!present) {
    await mkdir(dir, { recursive: true });
    await git.init({ fs, dir });
  }
  if ((await git.getConfig({ fs, dir, path: 'remote.origin.url' })) !== url) {
    await git.setConfig({ fs, dir, path: 'remote.origin.url', value: url });
    await git.setConfig({ fs, dir, path: 'remote.origin.fetch', value: '+refs/heads/*:refs/remotes/origin/*' });
  }
}

async function hasCommit(dir: string, oid: string): Promise<boolean> {
  return git.readCommit({ fs, dir, oid }).then(
    () => true,
    () => false,
  );
}

async function resolveOrUndefined(dir: string, ref: string): Promise<string | undefined> {
  return git.resolveRef({ fs, dir, ref }).catch(() => undefined);
}
