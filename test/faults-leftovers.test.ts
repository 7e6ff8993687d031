// Faults that used to leave files behind (issue 10): `kill -9` during `nft -f` left the batch file
// in the temporary directory, and a full disk made every lock attempt leak an
// `agent.lock.*.tmp`. Each case runs the real code against a directory of its own and lists it.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireLock } from '../src/agent/lock.js';
import { run } from '../src/netns/netns.js';
import { processCmdline, processStartTime, terminate, waitUntil } from '../src/proc/process.js';

const DIST = path.join(import.meta.dirname, '..', 'dist');

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-leftovers-'));
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Direct children of a process (from /proc; the thread that forks is the main one in Node). */
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

describe('nft batch: nothing on disk, even after kill -9 during nft -f', () => {
  it('the running nft holds the batch as a file without a name; SIGKILL leaves the temp dir empty', async () => {
    const tmp = path.join(scratch, 'tmp');
    await mkdir(tmp);
    // A slow "nft": the prefix runs `sleep` in its place, with the batch as its stdin as nft gets it.
    const program = [
      `import { NftCli } from ${JSON.stringify(path.join(DIST, 'nft', 'backend.js'))};`,
      `import { Transaction } from ${JSON.stringify(path.join(DIST, 'nft', 'transaction.js'))};`,
      `const nft = new NftCli({ prefix: ['sh', '-c', 'exec sleep 30', 'slow-nft'] });`,
      `await nft.run(new Transaction().add({ op: 'add-table', table: { family: 'ip', name: 'cgw_leftover' } }));`,
    ].join('\n');
    const child = spawn(process.execPath, ['--input-type=module', '-e', program], { env: { ...process.env, TMPDIR: tmp }, stdio: 'ignore' });
    const exited = once(child, 'exit');
    let slow: number | undefined;
    try {
      const found = await waitUntil(() => {
        slow = childPids(child.pid!).find((p) => processCmdline(p)?.[0] === 'sleep');
        return slow !== undefined;
      }, 30_000); // node and its imports start slowly on a loaded machine
      expect(found, 'the slow nft never started').toBe(true);
      // The batch is at nft's hand, but under no name: a deleted file, nothing in TMPDIR.
      expect(await readlink(`/proc/${slow}/fd/0`)).toMatch(/\(deleted\)$/);
      expect(await readFile(`/proc/${slow}/fd/0`, 'utf8')).toBe('add table ip cgw_leftover\n');
      expect(await readdir(tmp)).toEqual([]);

      child.kill('SIGKILL');
      await exited;
      expect(await readdir(tmp)).toEqual([]);
    } finally {
      child.kill('SIGKILL');
      if (slow !== undefined) await terminate(slow, processStartTime(slow), 2_000).catch(() => undefined);
    }
  });
});

describe('lock on a full disk', () => {
  let mnt: string | undefined;
  beforeAll(async () => {
    // A tiny tmpfs of our own, filled up: creating a file still works (free inodes), writing fails.
    mnt = path.join(scratch, 'full');
    await mkdir(mnt);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'cgw-test-full', mnt]);
    await writeFile(path.join(mnt, 'filler'), Buffer.alloc(1 << 20)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOSPC') throw e;
    });
  });
  afterAll(async () => {
    if (mnt) await run('umount', [mnt]);
  });

  it('fails with ENOSPC and leaves no temporary file', async () => {
    const lock = path.join(mnt!, 'agent.lock');
    for (let i = 0; i < 3; i++) await expect(acquireLock(lock)).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await readdir(mnt!)).toEqual(['filler']);
  });
});
