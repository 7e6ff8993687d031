// A Transaction collects nftables operations and is run by a backend as ONE `nft -f` batch:
// the kernel applies all of it or none of it. Modelled on knftables' Transaction.
import type { Family, MapElement, NftChain, NftMap, NftRule, NftTable } from './model.js';
import { printChainSpec, printElement, printElementKey, printMapSpec, printRule } from './text.js';
import { assertOwnedTables } from './ownership.js';
import { identifier, word } from './syntax.js';

export interface TableRef {
  family: Family;
  name: string;
}

export type Operation =
  | { op: 'add-table'; table: TableRef }
  | { op: 'delete-table'; table: TableRef }
  | { op: 'add-chain'; table: TableRef; chain: NftChain }
  | { op: 'flush-chain'; table: TableRef; chain: string }
  | { op: 'add-rule'; table: TableRef; chain: string; rule: NftRule }
  | { op: 'add-map'; table: TableRef; map: NftMap }
  | { op: 'add-elements'; table: TableRef; map: string; elements: MapElement[] }
  | { op: 'delete-elements'; table: TableRef; map: string; elements: MapElement[] };

export class Transaction {
  readonly ops: Operation[] = [];

  add(op: Operation): this {
    this.ops.push(op);
    return this;
  }

  get empty(): boolean {
    return this.ops.length === 0;
  }

  /**
   * Replace a table wholesale. `add; delete; add` works whether or not the table exists, and
   * the kernel swaps old for new in one step: no moment without the table's rules.
   */
  replaceTable(t: NftTable): this {
    const ref = { family: t.family, name: t.name };
    this.add({ op: 'add-table', table: ref }).add({ op: 'delete-table', table: ref }).add({ op: 'add-table', table: ref });
    for (const map of t.maps) {
      this.add({ op: 'add-map', table: ref, map });
      if (map.elements.length > 0) this.add({ op: 'add-elements', table: ref, map: map.name, elements: map.elements });
    }
    for (const chain of t.chains) {
      this.add({ op: 'add-chain', table: ref, chain });
      for (const rule of chain.rules) this.add({ op: 'add-rule', table: ref, chain: chain.name, rule });
    }
    return this;
  }

  /** The batch as nft text, one command per line. */
  toText(): string {
    return this.ops.length === 0 ? '' : this.ops.map(operationText).join('\n') + '\n';
  }
}

/** Every operation names its table here: only marked tables (ownership.ts) with safe names get through. */
function ref(t: TableRef): string {
  assertOwnedTables([t]);
  return `${word('family', t.family)} ${identifier('table name', t.name)}`;
}

const chainName = (name: string) => identifier('chain name', name);
const mapName = (name: string) => identifier('map name', name);

function elements(es: MapElement[], print: (e: MapElement) => string): string {
  return `{ ${es.map(print).join(', ')} }`;
}

export function operationText(o: Operation): string {
  switch (o.op) {
    case 'add-table':
      return `add table ${ref(o.table)}`;
    case 'delete-table':
      return `delete table ${ref(o.table)}`;
    case 'add-chain':
      return o.chain.base
        ? `add chain ${ref(o.table)} ${chainName(o.chain.name)} { ${printChainSpec(o.chain)} }`
        : `add chain ${ref(o.table)} ${chainName(o.chain.name)}`;
    case 'flush-chain':
      return `flush chain ${ref(o.table)} ${chainName(o.chain)}`;
    case 'add-rule':
      return `add rule ${ref(o.table)} ${chainName(o.chain)} ${printRule(o.rule)}`;
    case 'add-map':
      return `add map ${ref(o.table)} ${mapName(o.map.name)} { ${printMapSpec(o.map)} }`;
    case 'add-elements':
      return `add element ${ref(o.table)} ${mapName(o.map)} ${elements(o.elements, printElement)}`;
    case 'delete-elements':
      return `delete element ${ref(o.table)} ${mapName(o.map)} ${elements(o.elements, printElementKey)}`;
  }
}
