// Replacing a file whole: written to a private temporary file beside it, then renamed over it, so
// a reader (or a process killed mid-write) sees the old content or the new, never half a file.
// A failed write (e.g. a full disk) removes its temporary file.
import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function writeFileAtomic(file: string, data: string, opts: { mode?: number } = {}): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data, opts.mode === undefined ? {} : { mode: opts.mode });
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}
