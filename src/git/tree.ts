// Build a Git tree from an in-memory map of files, and read one back, without any work tree.
// The status branch is written this way, so no checkout or index is ever involved.
import fs from 'node:fs';
import git from 'isomorphic-git';

/** Repository-relative path ("reports/REPORT.md") -> content. */
export type FileMap = Record<string, string | Uint8Array>;

/** Where the repository is: a work-tree dir (with .git inside) or a bare gitdir. */
export type RepoLocation = ({ dir: string; gitdir?: undefined } | { gitdir: string; dir?: undefined }) & { cache?: object };

/** Split and check a path: no empty, ".", ".." or ".git" segments, no leading slash. */
export function pathSegments(filepath: string): string[] {
  const segs = filepath.split('/');
  if (segs.some((s) => s === '' || s === '.' || s === '..' || s === '.git')) {
    throw new Error(`invalid repository path "${filepath}"`);
  }
  return segs;
}

/** Write blobs and trees for `files`; returns the root tree oid. The map is the whole tree. */
export async function writeFilesTree(repo: RepoLocation, files: FileMap): Promise<string> {
  type Dir = Map<string, Dir | string | Uint8Array>;
  const root: Dir = new Map();
  for (const [filepath, content] of Object.entries(files)) {
    const segs = pathSegments(filepath);
    let dir = root;
    for (const seg of segs.slice(0, -1)) {
      let next = dir.get(seg);
      if (next === undefined) {
        next = new Map();
        dir.set(seg, next);
      }
      if (!(next instanceof Map)) throw new Error(`path "${filepath}" runs through file "${seg}"`);
      dir = next;
    }
    const name = segs[segs.length - 1];
    if (dir.get(name) instanceof Map) throw new Error(`path "${filepath}" is also a directory`);
    dir.set(name, content);
  }

  async function write(dir: Dir): Promise<string> {
    const entries = [];
    for (const [name, value] of dir) {
      if (value instanceof Map) {
        entries.push({ mode: '040000', path: name, type: 'tree' as const, oid: await write(value) });
      } else {
        const blob = typeof value === 'string' ? new TextEncoder().encode(value) : value;
        entries.push({ mode: '100644', path: name, type: 'blob' as const, oid: await git.writeBlob({ fs, ...repo, blob }) });
      }
    }
    return git.writeTree({ fs, ...repo, tree: entries });
  }
  return write(root);
}

/** All files of a tree, decoded as UTF-8 (status files are text). */
export async function readFilesTree(repo: RepoLocation, treeOid: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(oid: string, prefix: string): Promise<void> {
    const { tree } = await git.readTree({ fs, ...repo, oid });
    for (const e of tree) {
      if (e.type === 'tree') await walk(e.oid, `${prefix}${e.path}/`);
      else if (e.type === 'blob') out[`${prefix}${e.path}`] = new TextDecoder().decode((await git.readBlob({ fs, ...repo, oid: e.oid })).blob);
    }
  }
  await walk(treeOid, '');
  return out;
}

/** A tree entry a state revision must not hold: a symbolic link, a submodule (gitlink), or a name no checkout may write. */
export interface UnsafeTreeEntry {
  path: string;
  problem: 'symlink' | 'submodule' | 'name';
}

/** A name a crafted tree may carry but a checkout must never write ("..", "a/b", ".git"). */
export function unsafeEntryName(name: string): boolean {
  return name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0') || name.toLowerCase() === '.git';
}

/**
 * Every symlink (mode 120000) and submodule (mode 160000) in a tree, without checking anything out.
 * Walked with an explicit stack, bounded by `maxEntries` entries in all (beyond that, the walk
 * stops and reports the tree as too large through `tooLarge`).
 */
export async function findUnsafeTreeEntries(
  repo: RepoLocation,
  treeOid: string,
  maxEntries: number,
): Promise<{ unsafe: UnsafeTreeEntry[]; tooLarge: boolean }> {
  const unsafe: UnsafeTreeEntry[] = [];
  const pending = [{ oid: treeOid, prefix: '' }];
  let seen = 0;
  while (pending.length > 0) {
    const { oid, prefix } = pending.pop()!;
    const { tree } = await git.readTree({ fs, ...repo, oid });
    for (const e of tree) {
      if (++seen > maxEntries) return { unsafe, tooLarge: true };
      const entryPath = `${prefix}${e.path}`;
      if (e.mode === '120000') unsafe.push({ path: entryPath, problem: 'symlink' });
      else if (e.mode === '160000') unsafe.push({ path: entryPath, problem: 'submodule' });
      else if (unsafeEntryName(e.path)) unsafe.push({ path: entryPath, problem: 'name' });
      else if (e.type === 'tree') pending.push({ oid: e.oid, prefix: `${entryPath}/` });
    }
  }
  unsafe.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { unsafe, tooLarge: false };
}
