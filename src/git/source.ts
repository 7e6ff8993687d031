// The "source" (as in Flux): bring the state repository's tracked branch into a local cache,
// decide whether the fetched revision may be applied, and if so check it out into the cache's
// work tree, which is what the reconciler reads.
//
// A revision is refused (typed, with a reason; the work tree keeps the last accepted revision) when
//  - its tree holds a symbolic link or a submodule anywhere (checked in the Git objects, before
//    anything is checked out, so no link from the state repository is ever made on disk), or
//  - trusted keys are configured and the tip commit is unsigned, badly signed or signed by an
//    unknown key (only the tip is checked, like Flux: it names the tree that gets applied), or
//  - it does not descend from the last applied revision (a force-push rollback), unless allowed.
// An unreachable server or an HTTP error throws SourceUnavailable (message scrubbed of secrets).
// http(s) URLs are fetched by isomorphic-git, ssh URLs (ssh://, user@host:path) by the system git
// (src/git/ssh.ts) into the same cache; everything after the fetch is the same code.
//
// A plain local folder (or file:// URL) is also a source, for labs and offline use: it is used in
// place; its revision is the folder's git HEAD when it is a repository, else a content hash.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import git from 'isomorphic-git';
import type { PublicKey } from 'openpgp';
import { classifyRemoteError, openRemote, RemoteUnavailable, replayingAdvertisement, type GitCredentials } from './remote.js';
import { readTrustedKeys, verifyCommitSignature, type SignatureRefusal } from './signature.js';
import { findUnsafeTreeEntries, unsafeEntryName } from './tree.js';
import { escapeText, formatDiagnostics, StateError } from '../state/diagnostics.js';
import { STATE_LIMITS, wholeFile } from '../state/files.js';
import type { Diagnostic } from '../state/types.js';
import { ensureSshRepo, isRemoteUrl, isSshUrl, sshFetchBranch, type SshOptions } from './ssh.js';

export interface SourceOptions {
  /** http(s) or ssh URL of the state repository, or a local folder path / file:// URL. */
  url: string;
  /** Branch to track (default "main"). */
  branch?: string;
  /** Local clone used as cache and work tree (ignored for folder sources). */
  cacheDir: string;
  credentials?: GitCredentials;
  /** Key and known_hosts for ssh URLs (required for them). */
  ssh?: SshOptions;
  /** Armored OpenPGP public keys. When non-empty, only commits signed by one of them are accepted. */
  trustedKeys?: string[];
  /** The revision the agent applied last; a new revision must descend from it. */
  lastAppliedOid?: string;
  /** Accept a revision that does not descend from lastAppliedOid (deliberate rollback). */
  allowNonDescendant?: boolean;
  /** Idle timeout of HTTP requests (default 30 s). */
  timeoutMs?: number;
  /**
   * isomorphic-git's cache (pack indexes and packs read once, not per object) for a cache
   * repository only isomorphic-git writes to (http(s)): packs there are only ever added. A
   * long-running source passes the same object to every fetch; each fetch adds a pack, and
   * without it every object read opens and checks every pack again (fetches grow slower).
   */
  gitCache?: object;
  /**
   * What this process accepted and checked out last, with the same options: when the remote still
   * points there, it is the answer again (no verification, no checkout: a commit never changes).
   */
  known?: SourceAccepted;
}

export type SourceRefusal = SignatureRefusal | 'not-descendant' | 'unsafe-tree';

export type SourceKind = 'git-remote' | 'git-folder' | 'folder';

export interface SourceAccepted {
  accepted: true;
  /** Commit oid; for folders "<HEAD oid>-dirty-<hash12>" (uncommitted changes) or "sha256-<hash>". */
  revision: string;
  /** Directory holding the accepted files: the cache work tree, or the folder itself. */
  dir: string;
  kind: SourceKind;
  /** Fingerprint of the key that signed the revision, when keys are configured. */
  signedBy?: string;
  /**
   * The remote's branch tips (refs/heads/...) as advertised at the start of this very fetch (an
   * HTTP fetch into an existing cache asks for them first): other readers of the same repository
   * may use them.
   */
  advertised?: Record<string, string>;
}

export interface SourceRefused {
  accepted: false;
  revision: string;
  refusal: SourceRefusal;
  reason: string;
}

export type SourceResult = SourceAccepted | SourceRefused;

/** The Git server could not be reached or answered with an error; keep the last good revision. */
export class SourceUnavailable extends RemoteUnavailable {
  override name = 'SourceUnavailable';
}

/** Fetch (or read) the source and decide whether its current revision may be applied. */
export async function fetchSource(opts: SourceOptions): Promise<SourceResult> {
  // Parse keys first: a configuration error must not look like an outage.
  const trusted = opts.trustedKeys?.length ? await readTrustedKeys(opts.trustedKeys) : undefined;
  const folder = localFolder(opts.url);
  return folder === undefined ? fetchRemote(opts, trusted) : readFolder(folder, opts, trusted);
}

/** The local path when `url` names a folder, undefined for http(s) and ssh. Other schemes are errors. */
function localFolder(url: string): string | undefined {
  if (isRemoteUrl(url)) return undefined;
  if (/^file:\/\//i.test(url)) return fileURLToPath(url);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url) || /^[^/]+@[^/]+:/.test(url)) {
    throw new Error('unsupported source URL scheme: use https://, ssh://, user@host:path or a local folder');
  }
  return path.resolve(url);
}

async function fetchRemote(opts: SourceOptions, trusted: PublicKey[] | undefined): Promise<SourceResult> {
  const branch = opts.branch ?? 'main';
  const dir = opts.cacheDir;
  const ssh = isSshUrl(opts.url);
  const { oid, advertised } = ssh ? { oid: await fetchOverSsh(opts, branch), advertised: undefined } : await fetchOverHttp(opts, branch);
  // The system git may repack (and delete packs) in an ssh cache: no cache of its packs there.
  const cache = ssh ? undefined : opts.gitCache;
  // Still checked out there (another command using the cache would have moved the local branch).
  if (opts.known?.kind === 'git-remote' && opts.known.revision === oid && (await checkedOut(dir, branch)) === oid) return { ...opts.known, ...(advertised && { advertised }) };
  const verdict = await checkRevision(dir, oid, opts, trusted, cache);
  if (!verdict.ok) return { accepted: false, revision: oid, refusal: verdict.refusal, reason: verdict.reason };
  // isomorphic-git's checkout would write a symlink from the tree as a symlink: refuse first.
  const unsafe = await unsafeTreeDiagnostics(dir, oid, cache);
  if (unsafe.length > 0) {
    const reason = `revision ${oid} holds entries the state may not hold; nothing of it was checked out:\n${formatDiagnostics(unsafe)}`;
    return { accepted: false, revision: oid, refusal: 'unsafe-tree', reason };
  }
  await checkoutWorkTree(dir, branch, oid, cache);
  return { accepted: true, revision: oid, dir, kind: 'git-remote', signedBy: verdict.signedBy, ...(advertised && { advertised }) };
}

/** Bring `branch` into the cache as refs/remotes/origin/<branch> with isomorphic-git; its oid (and the advertisement, when one was asked for first). */
async function fetchOverHttp(opts: SourceOptions, branch: string): Promise<{ oid: string; advertised?: Record<string, string> }> {
  const dir = opts.cacheDir;
  const remote = await openRemote(opts.url, opts.credentials, opts.timeoutMs);
  // The advertisement asked for first is the one isomorphic-git's fetch starts with.
  const common = { fs, http: replayingAdvertisement(remote.http), dir, url: remote.url, onAuth: remote.onAuth, ...(opts.gitCache && { cache: opts.gitCache }) };
  try {
    if (await isRepo(dir)) {
      const have = await git.resolveRef({ fs, dir, ref: `refs/remotes/origin/${branch}` }).catch(() => undefined);
      // Nothing new is one GET of the ref advertisement: isomorphic-git's fetch would POST to
      // upload-pack as well (a second request and a server process) even when it wants nothing;
      // something new is that GET (replayed to the fetch) and one POST.
      const advertised = have ? await advertisedBranches(common) : undefined;
      if (have && advertised?.[`refs/heads/${branch}`] === have) return { oid: have, advertised };
      await git.fetch({ ...common, remote: 'origin', ref: branch, singleBranch: true, tags: false });
      // The advertisement came first in this fetch: its other branch tips (the status branch)
      // are as current as in a fetch with nothing new.
      if (advertised) return { oid: await git.resolveRef({ fs, dir, ref: `refs/remotes/origin/${branch}` }), advertised };
    } else {
      await mkdir(dir, { recursive: true });
      // No checkout yet: the work tree only ever holds an accepted revision.
      await git.clone({ ...common, ref: branch, singleBranch: true, noCheckout: true, noTags: true });
      // The local branch names the last accepted revision: none yet (HEAD stays unborn).
      await git.deleteRef({ fs, dir, ref: `refs/heads/${branch}` });
    }
    return { oid: await git.resolveRef({ fs, dir, ref: `refs/remotes/origin/${branch}` }) };
  } catch (e) {
    throw classifyRemoteError(e, `fetching branch ${branch} of`, remote, (m, s, c) => new SourceUnavailable(m, s, c));
  }
}

/** The remote's branch tips as it advertises them (protocol v1: the refs come with info/refs, no POST). */
async function advertisedBranches(remote: Pick<Parameters<typeof git.getRemoteInfo2>[0], 'http' | 'url' | 'onAuth'>): Promise<Record<string, string>> {
  const info = await git.getRemoteInfo2({ ...remote, protocolVersion: 1 });
  return Object.fromEntries((info.refs ?? []).filter((r) => r.ref.startsWith('refs/heads/')).map((r) => [r.ref, r.oid]));
}

/** The same with the system git over ssh (a fresh cache is `git init`, no checkout). */
async function fetchOverSsh(opts: SourceOptions, branch: string): Promise<string> {
  if (!opts.ssh) throw new Error(`source ${opts.url} is an ssh URL: the agent config needs source.ssh.identityFile and source.ssh.knownHostsFile`);
  const remote = { url: opts.url, ssh: opts.ssh, timeoutSeconds: Math.ceil((opts.timeoutMs ?? 30_000) / 1000) };
  await mkdir(opts.cacheDir, { recursive: true });
  await ensureSshRepo(remote, opts.cacheDir);
  try {
    await sshFetchBranch(remote, opts.cacheDir, branch);
  } catch (e) {
    if (e instanceof RemoteUnavailable) throw new SourceUnavailable(e.message, e.httpStatus, e.code);
    throw e;
  }
  return git.resolveRef({ fs, dir: opts.cacheDir, ref: `refs/remotes/origin/${branch}` });
}

type Verdict = { ok: true; signedBy?: string } | { ok: false; refusal: SourceRefusal; reason: string };

async function checkRevision(
  dir: string,
  oid: string,
  opts: Pick<SourceOptions, 'lastAppliedOid' | 'allowNonDescendant'>,
  trusted: PublicKey[] | undefined,
  cache?: object,
): Promise<Verdict> {
  let signedBy: string | undefined;
  if (trusted) {
    const { commit, payload } = await git.readCommit({ fs, dir, oid, cache });
    const check = await verifyCommitSignature(commit.gpgsig, payload, trusted);
    if (!check.ok) return { ok: false, refusal: check.refusal, reason: `revision ${oid}: ${check.reason}` };
    signedBy = check.fingerprint;
  }
  const last = leadingOid(opts.lastAppliedOid);
  if (last && last !== oid && !opts.allowNonDescendant) {
    // The last applied commit may be gone from a fresh cache: then it cannot be an ancestor.
    const descends = await git.isDescendent({ fs, dir, oid, ancestor: last, depth: -1, cache }).catch(() => false);
    if (!descends) {
      return {
        ok: false,
        refusal: 'not-descendant',
        reason: `revision ${oid} does not descend from the last applied revision ${last} (history rewritten or rolled back); set allowNonDescendant to accept it`,
      };
    }
  }
  return { ok: true, signedBy };
}

/** The commit oid a revision string starts with (folder revisions carry a suffix). */
export function leadingOid(revision: string | undefined): string | undefined {
  return revision?.match(/^[0-9a-f]{40}/)?.[0];
}

/** Point the local branch and HEAD at `oid` and make the work tree match it exactly. */
async function checkoutWorkTree(dir: string, branch: string, oid: string, cache?: object): Promise<void> {
  await git.writeRef({ fs, dir, ref: `refs/heads/${branch}`, value: oid, force: true });
  await git.writeRef({ fs, dir, ref: 'HEAD', value: `refs/heads/${branch}`, symbolic: true, force: true });
  await git.checkout({ fs, dir, ref: branch, force: true, cache });
}

/** The oid the cache's work tree was last checked out at (its local branch). */
async function checkedOut(dir: string, branch: string): Promise<string | undefined> {
  return git.resolveRef({ fs, dir, ref: `refs/heads/${branch}` }).catch(() => undefined);
}

async function isRepo(dir: string): Promise<boolean> {
  return stat(path.join(dir, '.git')).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

async function readFolder(dir: string, opts: SourceOptions, trusted: PublicKey[] | undefined): Promise<SourceResult> {
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new Error(`source folder ${dir} does not exist`);

  const head = (await isRepo(dir)) ? await git.resolveRef({ fs, dir, ref: 'HEAD' }).catch(() => undefined) : undefined;
  if (!head) {
    const revision = `sha256-${await contentHash(dir)}`;
    if (trusted) return { accepted: false, revision, refusal: 'unsigned', reason: `folder ${dir} is not a git repository, so it carries no signature` };
    return { accepted: true, revision, dir, kind: 'folder' };
  }

  const dirty = await hasLocalChanges(dir);
  const revision = dirty ? `${head}-dirty-${(await contentHash(dir)).slice(0, 12)}` : head;
  if (dirty && trusted) {
    return { accepted: false, revision, refusal: 'unsigned', reason: `folder ${dir} has uncommitted changes, which no signature covers` };
  }
  const verdict = await checkRevision(dir, head, opts, trusted);
  if (!verdict.ok) return { accepted: false, revision, refusal: verdict.refusal, reason: verdict.reason };
  return { accepted: true, revision, dir, kind: 'git-folder', signedBy: verdict.signedBy };
}

async function hasLocalChanges(dir: string): Promise<boolean> {
  const rows = await git.statusMatrix({ fs, dir });
  // [file, HEAD, workdir, stage]: 1,1,1 is "unchanged"; everything else is a change.
  return rows.some(([, h, w, s]) => !(h === 1 && w === 1 && s === 1));
}

/** sha256 over every file's relative path and content (sorted, `.git` skipped). */
export async function contentHash(root: string): Promise<string> {
  const entries: string[] = [];
  async function walk(rel: string): Promise<void> {
    const items = await readdir(path.join(root, rel), { withFileTypes: true });
    for (const it of items) {
      if (it.name === '.git') continue;
      const r = rel ? `${rel}/${it.name}` : it.name;
      const abs = path.join(root, r);
      if (it.isDirectory()) await walk(r);
      else if (it.isSymbolicLink()) entries.push(`${r}\0link:${await readlink(abs)}`);
      else if (it.isFile()) entries.push(`${r}\0${createHash('sha256').update(await readFile(abs)).digest('hex')}`);
    }
  }
  await walk('');
  entries.sort();
  return createHash('sha256').update(entries.join('\n')).digest('hex');
}

// ---- Offline access to any revision of a repository (the source cache or a git folder) ----

/**
 * Resolve a branch, remote branch ("origin/main"), tag, full or short oid to a commit oid.
 * In the source cache, "main" is the last accepted revision and "origin/main" the last fetched.
 */
export async function resolveRevision(repoDir: string, rev: string): Promise<string> {
  let oid: string | undefined;
  try {
    oid = await git.resolveRef({ fs, dir: repoDir, ref: rev });
  } catch {
    if (/^[0-9a-f]{4,39}$/i.test(rev)) {
      try {
        oid = await git.expandOid({ fs, dir: repoDir, oid: rev.toLowerCase() });
      } catch (e) {
        if ((e as { code?: string }).code === 'AmbiguousError') throw new Error(`revision "${rev}" is ambiguous in ${repoDir}`);
      }
    }
  }
  if (!oid) throw new Error(`unknown revision "${rev}" in ${repoDir}`);
  // readCommit peels annotated tags and proves the object is a commit.
  try {
    return (await git.readCommit({ fs, dir: repoDir, oid })).oid;
  } catch {
    throw new Error(`revision "${rev}" (${oid}) is not a commit in ${repoDir}`);
  }
}

/** Content of one file at a revision (UTF-8). */
export async function readFileAtRevision(repoDir: string, rev: string, filepath: string): Promise<string> {
  const oid = await resolveRevision(repoDir, rev);
  try {
    const { blob } = await git.readBlob({ fs, dir: repoDir, oid, filepath });
    return new TextDecoder().decode(blob);
  } catch {
    throw new Error(`file ${filepath} does not exist at revision ${rev}`);
  }
}

/**
 * Write the tree of a revision into `destDir` (which must be missing or empty), without touching
 * the repository's own work tree or index. Returns the commit oid. Only regular files and folders
 * are written: a revision holding a symlink or a submodule anywhere throws a StateError naming
 * them, before anything is written.
 */
export async function checkoutRevision(repoDir: string, rev: string, destDir: string): Promise<string> {
  const oid = await resolveRevision(repoDir, rev);
  const existing = await readdir(destDir).catch(() => []);
  if (existing.length) throw new Error(`destination ${destDir} is not empty`);
  const unsafe = await unsafeTreeDiagnostics(repoDir, oid);
  if (unsafe.length > 0) throw new StateError(unsafe);
  await mkdir(destDir, { recursive: true });
  const { commit } = await git.readCommit({ fs, dir: repoDir, oid });
  await writeTreeTo(repoDir, commit.tree, destDir);
  return oid;
}

/**
 * Problems with the shape of a revision's tree, as diagnostics on repository paths: symlinks and
 * submodules anywhere (refused like a symlink on disk, wherever it points), or too many entries.
 */
export async function unsafeTreeDiagnostics(repoDir: string, commitOid: string, cache?: object): Promise<Diagnostic[]> {
  const { commit } = await git.readCommit({ fs, dir: repoDir, oid: commitOid, cache });
  const { unsafe, tooLarge } = await findUnsafeTreeEntries({ dir: repoDir, cache }, commit.tree, STATE_LIMITS.entries);
  const why = {
    symlink: 'is a symbolic link in Git (mode 120000); the state is read only as regular files (symlinks are refused wherever they point)',
    submodule: 'is a submodule in Git (mode 160000); the state is read only as regular files',
    name: 'has a name no checkout may write (empty, ".", "..", ".git" or with "/")',
  };
  const diagnostics = unsafe.map(({ path: p, problem }) => wholeFile(escapeText(p, 200), why[problem]));
  if (tooLarge) diagnostics.push(wholeFile('.', `the revision's tree has more than ${STATE_LIMITS.entries} files and folders (limit)`));
  return diagnostics;
}

async function writeTreeTo(repoDir: string, treeOid: string, dest: string): Promise<void> {
  const { tree } = await git.readTree({ fs, dir: repoDir, oid: treeOid });
  for (const entry of tree) {
    const target = path.join(dest, entry.path);
    if (entry.mode === '120000' || entry.mode === '160000' || unsafeEntryName(entry.path)) {
      throw new Error(`refusing to write ${escapeText(entry.path)} (mode ${entry.mode}): only regular files and folders are checked out`);
    }
    if (entry.type === 'tree') {
      await mkdir(target);
      await writeTreeTo(repoDir, entry.oid, target);
    } else if (entry.type === 'blob') {
      const { blob } = await git.readBlob({ fs, dir: repoDir, oid: entry.oid });
      await writeFile(target, blob, { mode: entry.mode === '100755' ? 0o755 : 0o644, flag: 'wx' });
    }
  }
}
