// The cluster's table names (cluster.yaml `tables`): each carries the cgw_ mark, is a usable nft
// name, and names its own table. Listed in `checks` in semantic.ts; pure. The schema's pattern
// already asks for the mark; this repeats it with the reason, and catches what a pattern cannot
// (two roles sharing one table, e.g. raw == nat, which would turn one table into the other).
import { tableNameProblem } from '../nft/ownership.js';
import type { Check } from './semantic.js';

const ROLES = ['nat', 'arp', 'raw', 'sync', 'gwmac', 'nat6', 'migration'] as const;

export const tableNames: Check = (ctx) => {
  const { cluster } = ctx.input;
  if (!cluster) return;
  const first = new Map<string, (typeof ROLES)[number]>();
  for (const role of ROLES) {
    const name = cluster.tables[role];
    if (name === undefined) continue;
    const problem = tableNameProblem(name);
    if (problem) {
      ctx.report(cluster, ['tables', role], `${problem}: cgw-sync only writes its own tables`);
      continue;
    }
    const other = first.get(name);
    if (other) {
      ctx.report(cluster, ['tables', role], `"${name}" is already the ${other} table (${ctx.where(cluster, ['tables', other])}); every table needs its own name`);
    } else first.set(name, role);
  }
};
