// The runtime directory shared by the guest drivers: one metadata file per guest, pidfiles and
// sockets. Process utilities live in proc/process.ts.
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { HypervisorDriver } from '../state/types.js';
import type { IncomingListen } from './driver.js';

export const DEFAULT_RUN_ROOT = '/run/cgw-sync';

/** What cgw-sync records about a guest it started; its absence marks a guest as not ours. */
export interface GuestMeta {
  name: string;
  driver: HypervisorDriver;
  fingerprint: string;
  mac: string;
  startedAt: string; // ISO time
  /** Host process of the guest and its start time (clock ticks since boot), when there is one. */
  pid?: number;
  pidStart?: string;
  /** Driver-specific identity (e.g. the Xen domain UUID). */
  uuid?: string;
  /** Started as a live-migration destination listening here (qemu -incoming). */
  incoming?: IncomingListen;
}

const META = '.meta.json';

export class RuntimeDir {
  constructor(readonly dir: string) {}

  /** `<dir>/<name><suffix>`, e.g. file('web1', '.pid'). */
  file(name: string, suffix: string): string {
    return join(this.dir, name + suffix);
  }

  async ensure(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Guest names that have a file with this suffix in the directory. */
  async names(suffix: string): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return entries.filter((f) => f.endsWith(suffix) && f.length > suffix.length).map((f) => f.slice(0, -suffix.length));
  }

  async readMeta(name: string): Promise<GuestMeta | undefined> {
    const text = await readIfExists(this.file(name, META));
    return text === undefined ? undefined : (JSON.parse(text) as GuestMeta);
  }

  /** Written to a temporary file and renamed, so a reader never sees half a file. */
  async writeMeta(meta: GuestMeta): Promise<void> {
    await this.ensure();
    const target = this.file(meta.name, META);
    await writeFile(target + '.tmp', JSON.stringify(meta, null, 2) + '\n', { mode: 0o600 });
    await rename(target + '.tmp', target);
  }

  /** A PID file as written by qemu `-pidfile` or by us; undefined when absent or unreadable. */
  async readPid(name: string, suffix = '.pid'): Promise<number | undefined> {
    const text = await readIfExists(this.file(name, suffix));
    const pid = Number.parseInt(text?.trim() ?? '', 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }

  /** Remove this guest's files with the given suffixes (the metadata file always). */
  async remove(name: string, suffixes: string[]): Promise<void> {
    for (const s of [...suffixes, META]) await rm(this.file(name, s), { force: true });
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
