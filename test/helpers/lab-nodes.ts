// state-example grown to N nodes exactly as `lab up --nodes N` seeds its repository (labGrowth's
// files plus labAdjustments), written to a scratch folder and loaded like any state directory.
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { loadStateOrThrow } from '../../src/state/index.js';
import type { ClusterState, NatMode } from '../../src/state/types.js';
import { labGrowth } from '../../src/lab/lab.js';
import { labAdjustments, type TextFiles } from '../../src/lab/repo.js';
import { STATE_DIR } from './modes-lab.js';

/** The grown lab state (responder command '/x.cjs'), the files the lab commit would change or add, and the added ones. */
export async function grownLabState(nodes: number, mode?: NatMode): Promise<{ state: ClusterState; files: TextFiles; extra: TextFiles }> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-lab-nodes-'));
  try {
    await cp(STATE_DIR, dir, { recursive: true });
    const seed = await loadStateOrThrow(dir);
    const { files: extra, nodeNames } = labGrowth(seed, nodes);
    const all: TextFiles = { ...extra };
    for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
      if (e.isFile()) all[join(e.parentPath, e.name).slice(dir.length + 1)] ??= await readFile(join(e.parentPath, e.name), 'utf8');
    }
    const files = { ...extra, ...labAdjustments(all, { responderScript: '/x.cjs', mode, nodes: nodeNames.length, extraFiles: extra }) };
    for (const [f, text] of Object.entries(files)) {
      await mkdir(dirname(join(dir, f)), { recursive: true });
      await writeFile(join(dir, f), text);
    }
    return { state: await loadStateOrThrow(dir), files, extra };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
