// Reading a file an operator named (agent configuration, token, trusted key): only a regular
// file, only up to a size limit, never blocking on a FIFO or streaming a device forever, and
// every failure as a short reason a person understands (not a bare ENOENT).
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

export type SmallFile = { text: string; mode: number } | { error: string };

const REASONS: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTDIR: 'a parent of it is not a folder',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'the path is too long',
  EISDIR: 'it is a folder, not a file',
};

export function errnoReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  return REASONS[code] ?? (code || (e as Error).message);
}

/** The text of `file` when it is a regular file of at most `limit` bytes, else why not. */
export async function readSmallFile(file: string, limit: number): Promise<SmallFile> {
  let handle: FileHandle;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked on the open file.
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    return { error: errnoReason(e) };
  }
  try {
    const st = await handle.stat();
    if (st.isDirectory()) return { error: REASONS.EISDIR };
    if (!st.isFile()) return { error: 'not a regular file (a device, FIFO or socket)' };
    if (st.size > limit) return { error: `too large (${st.size} bytes; at most ${limit})` };
    // One byte more than the limit tells a file that grew since stat from one that did not.
    const buf = Buffer.alloc(limit + 1);
    const { bytesRead } = await handle.read(buf, 0, limit + 1, 0);
    if (bytesRead > limit) return { error: `too large (more than ${limit} bytes)` };
    return { text: buf.subarray(0, bytesRead).toString('utf8'), mode: st.mode };
  } catch (e) {
    return { error: errnoReason(e) };
  } finally {
    await handle.close();
  }
}
