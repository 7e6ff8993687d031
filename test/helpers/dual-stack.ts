// state-example made dual stack (src/lab/ipv6.ts, the lab's plan), in a temporary directory, with
// optional further edits: for the IPv6 validation and render tests.
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { loadState } from '../../src/state/index.js';
import { dualStackFiles } from '../../src/lab/ipv6.js';
import { STATE_DIR } from './modes-lab.js';

export type Edits = Record<string, (text: string) => string>;

/** A dual-stack copy of state-example (edits applied after), removed by the returned cleanup. */
export async function dualStackDir(edits: Edits = {}): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-ipv6-'));
  await cp(STATE_DIR, dir, { recursive: true });
  const files: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) files[relative(dir, join(e.parentPath, e.name))] = await readFile(join(e.parentPath, e.name), 'utf8');
  }
  for (const [file, text] of Object.entries(dualStackFiles(files))) await writeFile(join(dir, file), text);
  for (const [file, f] of Object.entries(edits)) await writeFile(join(dir, file), f(await readFile(join(dir, file), 'utf8')));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Load a dual-stack state-example with edits; the state (undefined if invalid) and its diagnostics. */
export async function loadDualStack(edits: Edits = {}) {
  const { dir, cleanup } = await dualStackDir(edits);
  try {
    return await loadState(dir);
  } finally {
    await cleanup();
  }
}
