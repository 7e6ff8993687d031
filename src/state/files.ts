// Reading the files of a state directory safely. The state is untrusted input (it comes from pull
// requests) and cgw-sync runs as root, so a state file is only ever read as a regular file inside
// the state directory:
//  - symbolic links are refused anywhere in the state tree, file or folder, wherever they point
//    (even inside): a link is never followed, its target never read or printed;
//  - FIFOs, sockets and devices are refused, and so is a folder where a file is expected;
//  - a file is opened with O_NOFOLLOW | O_NONBLOCK, and checked on the open descriptor (fstat: a
//    regular file with one link; /proc/self/fd: the path it was found at), which closes the race
//    between walking the tree and opening a file;
//  - sizes, file counts and folder depth are limited (STATE_LIMITS), so a hostile state cannot
//    exhaust memory or time;
//  - a file must be UTF-8 text without control characters; file names must be printable ASCII.
// Every refusal is a diagnostic naming the file; nothing of a refused file's content is shown.
// Synchronous file calls: the agent reads a state every cycle, and a walk of a few folders and
// files takes microseconds per call this way, where each trip through the thread pool costs
// ~0.1 ms (and a file whose stamp is unchanged is not read at all, see TextMemory).
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, realpathSync, type Dirent } from 'node:fs';
import path from 'node:path';
import { stampOf } from '../fs/stamp.js';
import { escapeText } from './diagnostics.js';
import type { Diagnostic } from './types.js';

/** Resource limits for one state (documented in docs/state-format.md, "Limits"). */
export const STATE_LIMITS = {
  /** Bytes per file. 50,000 forwards in one file take about 4.7 MB. */
  fileBytes: 8 * 1024 * 1024,
  /** Bytes of all state files together. */
  totalBytes: 16 * 1024 * 1024,
  /** Files and folders in the state tree. */
  entries: 10_000,
  /** Folder levels below the state directory. */
  folderDepth: 16,
  /** Nesting of mappings and lists inside one YAML document. */
  yamlDepth: 64,
  /** Scalars and collections in all files of the state: 50,000 forwards are 650,000 (block style, 13 each) or 700,000 (a flow mapping each, 14). */
  yamlNodes: 750_000,
  /** yaml's maxAliasCount: how far aliases may expand (the default of the yaml package). */
  aliasExpansion: 100,
  /** Diagnostics reported for one state; the rest are counted. */
  diagnostics: 100,
} as const;

export type StateLimits = { -readonly [K in keyof typeof STATE_LIMITS]: number };

/** A state file that passed every check, as text. */
export interface StateFile {
  /** Path relative to the state directory, posix separators, e.g. "forwards/web.yaml". */
  file: string;
  text: string;
}

export interface StateTree {
  /** False when the state directory itself is missing or refused (then nothing else is reported). */
  rootReadable: boolean;
  /** A size or count limit was reached: the files are not worth parsing. */
  overLimit: boolean;
  cluster?: StateFile;
  /** Folder name -> its readable YAML files, sorted by name. */
  folders: Map<string, StateFile[]>;
  diagnostics: Diagnostic[];
}

/**
 * Texts of files read before, by path, with their bytes: a file whose bytes are the same is not
 * decoded and checked again (4.7 MB for 50,000 forwards), and a file whose stat stamp is the same
 * (src/fs/stamp.ts) is not even read. `known` is asked, `read` gets every file read now (so files
 * that are gone are forgotten).
 */
export interface TextMemory {
  known: ReadonlyMap<string, KnownText>;
  read: Map<string, KnownText>;
  /** The clock stamps are judged settled by (ms since the epoch). */
  now: () => number;
}

export interface KnownText {
  bytes: Buffer;
  text: string;
  /** Its stat stamp when read, when the file had settled then: the same stamp now means the same bytes. */
  stamp?: string;
}

/** What an entry of the state tree is, from lstat (never following a link). */
type EntryKind = 'file' | 'folder' | 'symlink' | 'special' | 'missing';

export const CLUSTER_FILE = 'cluster.yaml';

/** A problem with a file as a whole (or a missing one): reported at its first line. */
export function wholeFile(file: string, message: string): Diagnostic {
  return { file, line: 1, column: 1, field: '', message };
}

const SYMLINK_REFUSED = 'is a symbolic link; state files and folders are read only as regular files and folders inside the state directory (symlinks are refused wherever they point)';

/**
 * Checks the whole state tree below `root` (except a `.git` folder at its top) and reads the
 * files the state format names: cluster.yaml and `<folder>/*.yaml|yml` for each of `folders`.
 * Every problem is a diagnostic; files with problems are left out of `files`.
 */
export async function readStateTree(
  root: string,
  folders: readonly string[],
  limits: StateLimits = { ...STATE_LIMITS },
  texts?: TextMemory,
): Promise<StateTree> {
  const diagnostics: Diagnostic[] = [];
  const out: StateTree = { rootReadable: false, overLimit: false, folders: new Map(folders.map((f) => [f, []])), diagnostics };
  const rootKind = kindOf(root);
  if (rootKind !== 'folder') {
    const what = rootKind === 'symlink' ? 'is a symbolic link; pass the real path of the state directory' : 'does not exist or is not a directory';
    diagnostics.push(wholeFile('.', `state directory ${escapeText(root, 200)} ${what}`));
    return out;
  }
  const realRoot = realpathSync(root);
  out.rootReadable = true;

  const tree = walkTree(realRoot, limits);
  for (const d of tree.diagnostics) diagnostics.push(d);
  out.overLimit = tree.overLimit;
  const budget = { totalBytes: 0, over: false };
  const readOne = (file: string) => {
    const r = readStateFile(realRoot, file, limits, budget, texts);
    if ('diagnostic' in r) diagnostics.push(r.diagnostic);
    if (budget.over) out.overLimit = true;
    return 'text' in r ? r : undefined;
  };

  const cluster = tree.kinds.get(CLUSTER_FILE) ?? 'missing';
  if (cluster === 'file') out.cluster = readOne(CLUSTER_FILE);
  else if (cluster === 'missing') diagnostics.push(wholeFile(CLUSTER_FILE, `missing: a state directory needs ${CLUSTER_FILE} (kind: Cluster)`));
  else if (cluster === 'folder') diagnostics.push(wholeFile(CLUSTER_FILE, 'is a directory, expected a YAML file (kind: Cluster)'));
  // symlinks and special files were reported by the walk

  for (const folder of folders) {
    const kind = tree.kinds.get(folder) ?? 'missing';
    if (kind === 'file') diagnostics.push(wholeFile(folder, `is a file, expected a folder of YAML files`));
    if (kind !== 'folder') continue;
    const names = [...tree.kinds.keys()].filter((f) => path.posix.dirname(f) === folder && isStateFileName(path.posix.basename(f))).sort();
    for (const file of names) {
      const entry = tree.kinds.get(file);
      if (entry === 'folder') diagnostics.push(wholeFile(file, 'is a directory, expected a YAML file'));
      if (entry !== 'file') continue;
      const read = readOne(file);
      if (read) out.folders.get(folder)!.push(read);
    }
  }
  return out;
}

/** "<name>.yaml" or "<name>.yml", not hidden: the files a state folder is made of. */
function isStateFileName(name: string): boolean {
  return !name.startsWith('.') && /\.ya?ml$/.test(name);
}

/**
 * Walks the tree without following links: every entry's kind by relative path, and diagnostics for
 * links, special files, unprintable names and the entry and depth limits.
 */
function walkTree(root: string, limits: StateLimits): { kinds: Map<string, EntryKind>; diagnostics: Diagnostic[]; overLimit: boolean } {
  const kinds = new Map<string, EntryKind>();
  const diagnostics: Diagnostic[] = [];
  const pending: Array<{ rel: string; depth: number }> = [{ rel: '', depth: 0 }];
  while (pending.length > 0) {
    const { rel, depth } = pending.pop()!;
    let entries: Dirent[];
    try {
      entries = readdirSync(path.join(root, rel), { withFileTypes: true });
    } catch (e) {
      diagnostics.push(wholeFile(rel || '.', `folder cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`));
      continue;
    }
    for (const entry of entries) {
      if (rel === '' && entry.name === '.git') continue; // repository metadata, never read as state
      const file = rel ? `${rel}/${entry.name}` : entry.name;
      if (kinds.size >= limits.entries) {
        diagnostics.push(wholeFile('.', `the state tree has more than ${limits.entries} files and folders (limit); not read further`));
        return { kinds, diagnostics, overLimit: true };
      }
      if (!/^[\x21-\x5f\x61-\x7e]([\x20-\x5f\x61-\x7e]*[\x21-\x5f\x61-\x7e])?$/.test(entry.name)) {
        const shown = `${rel ? `${rel}/` : ''}${escapeText(entry.name)}`;
        diagnostics.push(wholeFile(shown, 'file name has control, non-ASCII, "`" or leading/trailing space characters (shown escaped); use printable ASCII names'));
        kinds.set(file, 'special');
        continue;
      }
      const kind = direntKind(entry) ?? kindOf(path.join(root, file));
      kinds.set(file, kind);
      if (kind === 'symlink') diagnostics.push(wholeFile(file, SYMLINK_REFUSED));
      if (kind === 'special') diagnostics.push(wholeFile(file, 'is a FIFO, socket or device; state files are read only as regular files'));
      if (kind === 'folder') {
        if (depth + 1 > limits.folderDepth) diagnostics.push(wholeFile(file, `folders nest deeper than ${limits.folderDepth} levels (limit); not read further`));
        else pending.push({ rel: file, depth: depth + 1 });
      }
    }
  }
  return { kinds, diagnostics, overLimit: false };
}

function direntKind(entry: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; isFIFO(): boolean; isSocket(): boolean; isBlockDevice(): boolean; isCharacterDevice(): boolean }): EntryKind | undefined {
  if (entry.isSymbolicLink()) return 'symlink';
  if (entry.isFile()) return 'file';
  if (entry.isDirectory()) return 'folder';
  if (entry.isFIFO() || entry.isSocket() || entry.isBlockDevice() || entry.isCharacterDevice()) return 'special';
  return undefined; // file system without d_type: ask lstat
}

function kindOf(p: string): EntryKind {
  const st = lstatSync(p, { throwIfNoEntry: false });
  if (!st) return 'missing';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'folder';
  return 'special';
}

type ReadResult = { file: string; text: string } | { diagnostic: Diagnostic };

/**
 * Opens and reads one file that the walk saw as a regular file, re-checking everything on the open
 * descriptor: the entry may have been swapped for a link or a FIFO since.
 */
function readStateFile(root: string, file: string, limits: StateLimits, budget: { totalBytes: number; over: boolean }, texts?: TextMemory): ReadResult {
  const abs = path.join(root, file);
  const refuse = (message: string): ReadResult => ({ diagnostic: wholeFile(file, message) });
  let fd: number;
  try {
    fd = openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') return refuse(SYMLINK_REFUSED);
    return refuse(`cannot be opened (${code ?? 'error'})`);
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    const size = Number(st.size);
    if (!st.isFile()) return refuse(st.isDirectory() ? 'is a directory, expected a YAML file' : 'is not a regular file; state files are read only as regular files');
    // A hard link could make a file outside the state appear inside it; Git never makes them.
    if (st.nlink > 1n) return refuse(`has ${st.nlink} hard links; state files must be plain files with a single link`);
    const opened = linkTarget(`/proc/self/fd/${fd}`) ?? abs;
    if (opened !== abs) return refuse('changed while it was read (a folder on its path was replaced); read refused');
    if (size > limits.fileBytes) return refuse(`is ${formatBytes(size)}, more than the limit of ${formatBytes(limits.fileBytes)} per file`);
    if (budget.over) return refuse('not read: the total size limit was reached before this file');
    if (budget.totalBytes + size > limits.totalBytes) {
      budget.over = true;
      return refuse(`the state files exceed the limit of ${formatBytes(limits.totalBytes)} in total (reached at this file)`);
    }
    // Taken before reading: a change while the file is read changes the stamp the next read sees.
    const stamped = stampOf(st, texts?.now() ?? Date.now());
    const stamp = stamped.settled ? stamped.stamp : undefined;
    const known = texts?.known.get(file);
    if (stamp && known?.stamp === stamp) {
      budget.totalBytes += size;
      texts?.read.set(file, known);
      return { file, text: known.text };
    }
    // Read at most one byte more than the limit: the size fstat reported may not be the whole truth.
    // Not zero-filled (4.7 MB for 50,000 forwards): only the bytes read are ever looked at.
    const buffer = Buffer.allocUnsafe(Math.min(size, limits.fileBytes) + 1);
    let length = 0;
    while (length < buffer.length) {
      const bytesRead = readSync(fd, buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > limits.fileBytes) return refuse(`is more than the limit of ${formatBytes(limits.fileBytes)} per file`);
    budget.totalBytes += length;
    const bytes = buffer.subarray(0, length);
    const decoded = known?.bytes.equals(bytes) ? { text: known.text } : decodeText(bytes);
    if ('problem' in decoded) return { diagnostic: { file, line: decoded.line, column: decoded.column, field: '', message: decoded.problem } };
    // Stamped only when the bytes read are all of the file the stamp describes.
    texts?.read.set(file, { bytes, text: decoded.text, ...(stamp && length === size && { stamp }) });
    return { file, text: decoded.text };
  } finally {
    closeSync(fd);
  }
}

/** Where a link points, or undefined when it cannot be read. */
function linkTarget(p: string): string | undefined {
  try {
    return readlinkSync(p);
  } catch {
    return undefined;
  }
}

function formatBytes(n: number): string {
  return n >= 1024 * 1024 ? `${(n / (1024 * 1024)).toFixed(n % (1024 * 1024) === 0 ? 0 : 1)} MiB` : `${n} bytes`;
}

/**
 * The file's bytes as text: UTF-8 (a UTF-8 byte order mark is dropped), no other encoding, and no
 * control characters but tab, line feed and carriage return (YAML allows no others either).
 */
export function decodeText(bytes: Uint8Array): { text: string } | { problem: string; line: number; column: number } {
  if (startsWith(bytes, [0xff, 0xfe]) || startsWith(bytes, [0xfe, 0xff]) || startsWith(bytes, [0, 0, 0xfe, 0xff])) {
    return { problem: 'is UTF-16 or UTF-32 (byte order mark); state files must be UTF-8', line: 1, column: 1 };
  }
  const body = startsWith(bytes, [0xef, 0xbb, 0xbf]) ? bytes.subarray(3) : bytes;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body);
  } catch {
    const lossy = new TextDecoder('utf-8').decode(body);
    return { problem: 'is not valid UTF-8; state files must be UTF-8 text', ...lineColumn(lossy, lossy.indexOf('\ufffd')) };
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control bytes is the point
  const control = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.exec(text);
  if (control) {
    const shown = escapeText(control[0]);
    return { problem: `contains the control character ${shown}; state files must be text (no NUL or other control bytes)`, ...lineColumn(text, control.index) };
  }
  return { text };
}

function startsWith(bytes: Uint8Array, prefix: number[]): boolean {
  return prefix.every((b, i) => bytes[i] === b);
}

/** 1-based line and column of a string offset. */
function lineColumn(text: string, offset: number): { line: number; column: number } {
  if (offset < 0) return { line: 1, column: 1 };
  const before = text.slice(0, offset);
  const lineStart = before.lastIndexOf('\n') + 1;
  return { line: before.split('\n').length, column: offset - lineStart + 1 };
}
