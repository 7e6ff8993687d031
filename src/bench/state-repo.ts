// Forwards files for the bench's own revisions (one forward more per round, one per lab push);
// the synthetic repositories themselves come from synthetic.ts (writeSyntheticStateRepo).
import type { ForwardSpec } from '../state/types.js';

/**
 * One forward as a list item, written as state-example writes them (a block mapping with a flow
 * target): 13 YAML values each (a flow mapping per forward is 14; both fit 50,000 forwards under
 * the loader's value limit).
 */
export function forwardYaml(f: Pick<ForwardSpec, 'name' | 'protocol' | 'port' | 'target'>): string {
  return `  - name: ${f.name}\n    protocol: ${f.protocol}\n    port: ${f.port}\n    target: { guest: ${f.target.guest}, port: ${f.target.port} }`;
}

/** A Forwards document with these items. */
export function forwardsDocument(items: Pick<ForwardSpec, 'name' | 'protocol' | 'port' | 'target'>[]): string {
  return `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${items.map(forwardYaml).join('\n')}\n`;
}
