// A synthetic state repository on disk, for the loader, `validate` and the agent at scale.
// Kept here until the loader's own writeSyntheticStateRepo (synthetic.ts) is on main; same
// signature, so switching is a one-line import change (if it writes forwards as this does).
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ForwardSpec } from '../state/types.js';
import { syntheticState } from './synthetic.js';

/**
 * One forward as a list item, written as state-example writes them (a block mapping with a flow
 * target): 13 YAML values each, so 50,000 fit the loader's limit of 700,000 values, which a
 * flow mapping per forward (14 each) does not.
 */
export function forwardYaml(f: Pick<ForwardSpec, 'name' | 'protocol' | 'port' | 'target'>): string {
  return `  - name: ${f.name}\n    protocol: ${f.protocol}\n    port: ${f.port}\n    target: { guest: ${f.target.guest}, port: ${f.target.port} }`;
}

/** A Forwards document with these items. */
export function forwardsDocument(items: Pick<ForwardSpec, 'name' | 'protocol' | 'port' | 'target'>[]): string {
  return `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${items.map(forwardYaml).join('\n')}\n`;
}

/**
 * `dir` as a state repository: state-example's cluster, nodes and guests (guest1, guest2) and one
 * forwards file with `forwards` synthetic forwards.
 */
export async function writeSyntheticStateRepo(dir: string, forwards: number): Promise<void> {
  const example = new URL('../../state-example/', import.meta.url);
  for (const part of ['cluster.yaml', 'nodes', 'guests']) await cp(new URL(part, example), join(dir, part), { recursive: true });
  await mkdir(join(dir, 'forwards'), { recursive: true });
  await writeFile(join(dir, 'forwards', 'bench.yaml'), forwardsDocument(syntheticState(forwards).forwards));
}
