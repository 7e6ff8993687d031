// Which nftables tables cgw-sync may write. Pure: used by the renderer, the transaction printer
// and the agent, so a state that slipped past validation still cannot reach a foreign table.
//
// The mark is the name: every table cgw-sync writes is called `cgw_<something>`, a prefix no
// distribution or other tool uses. A table with such a name is cgw-sync's (a hand-made
// `ip cgw_nat` is taken over like drift); any other table is never listed, changed or deleted.
// (A table comment cannot be the mark: nft 1.0.6 accepts `comment` on tables but does not list it.)
import type { Family } from './model.js';
import { identifierProblem } from './syntax.js';

export const OWNED_TABLE_PREFIX = 'cgw_';

/** The tables the renderer creates with the default table names, per NAT mode: ip nat always, netdev arp on nodes with trunks, ip raw in ct-sync and stateless-nat, bridge sync in ct-sync, bridge gwmac with a shared gateway MAC, ip6 nat6 in dual stack, bridge migration while a guest migrates live. */
export const DEFAULT_OWNED_TABLES: readonly string[] = ['ip cgw_nat', 'netdev cgw_arp', 'ip cgw_raw', 'bridge cgw_sync', 'bridge cgw_gwmac', 'ip6 cgw_nat6', 'bridge cgw_migration'];

export interface TableName {
  family: Family | string;
  name: string;
}

/** Why cgw-sync must not write this table name (undefined: it may). */
export function tableNameProblem(name: string): string | undefined {
  if (!name.startsWith(OWNED_TABLE_PREFIX)) return `"${name}" does not start with "${OWNED_TABLE_PREFIX}", the mark of the tables cgw-sync owns`;
  if (name.length === OWNED_TABLE_PREFIX.length) return `"${name}" needs a name after "${OWNED_TABLE_PREFIX}"`;
  const p = identifierProblem(name);
  return p ? `"${name}" is not a usable nft table name: ${p.reason}` : undefined;
}

export class NotOwnedTable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotOwnedTable';
  }
}

/** Throws unless every table carries the mark and each role has its own table (the last line of defence before a batch is printed). */
export function assertOwnedTables(tables: readonly TableName[]): void {
  const problem = tablesOwnershipProblem(tables, []);
  if (problem) throw new NotOwnedTable(`refusing to write nftables: ${problem}`);
}

/**
 * The agent's check of a state's tables against its config: every table carries the mark and,
 * unless `ownedTables` is empty, is listed there. A message naming the table and the config key.
 */
export function tablesOwnershipProblem(tables: readonly TableName[], allowed: readonly string[]): string | undefined {
  const unmarked = tables.map((t) => tableNameProblem(t.name)).filter((p): p is string => !!p);
  if (unmarked.length) return `the state names tables cgw-sync must never write: ${unmarked.join('; ')}`;
  const ids = tables.map((t) => `${t.family} ${t.name}`);
  const twice = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (twice.length) return `the state gives two roles the same table ${twice.join(', ')}; each table name must be distinct`;
  if (allowed.length === 0) return undefined;
  const missing = tables.map((t) => `${t.family} ${t.name}`).filter((t) => !allowed.includes(t));
  return missing.length
    ? `the state names tables this node does not let cgw-sync own: ${missing.join(', ')} (agent config ownedTables: ${allowed.join(', ')})`
    : undefined;
}
