// An in-memory nftables for unit tests, beside the real backend (as knftables does). It keeps
// the semantics cgw-sync relies on: a transaction applies whole or not at all; adding an
// existing table/chain/map is a no-op; deleting a missing table or element fails; adding an
// element whose key exists with another value fails; rules get increasing handles.
import { byName, elementKey, jsonEqual, tableId, type NftTable, type Ruleset } from './model.js';
import { sortElements } from './normalize.js';
import { NftError, type BaseChainInfo, type NftBackend } from './backend.js';
import type { Operation, TableRef, Transaction } from './transaction.js';

export class FakeNft implements NftBackend {
  private tables = new Map<string, NftTable>();
  private nextHandle = 1;
  /** Every transaction that was run, in order (tests assert on what was sent). */
  readonly history: Operation[][] = [];

  async list(refs: TableRef[]): Promise<Ruleset> {
    const tables = refs.map((r) => this.tables.get(tableId(r))).filter((t): t is NftTable => !!t);
    return { tables: structuredClone(tables) };
  }

  async run(tx: Transaction): Promise<void> {
    const work = structuredClone(this.tables);
    let handle = this.nextHandle;
    for (const op of tx.ops) handle = applyOp(work, op, handle);
    this.tables = work;
    this.nextHandle = handle;
    this.history.push([...tx.ops]);
  }

  /** Base chains of tables outside the model (foreign tables), as a test sets them up. */
  foreignChains: BaseChainInfo[] = [];

  async listBaseChains(): Promise<BaseChainInfo[]> {
    const own = [...this.tables.values()].flatMap((t) =>
      t.chains.filter((c) => c.base).map((c) => ({ family: t.family, table: t.name, name: c.name, type: c.base!.type, hook: c.base!.hook, priority: c.base!.priority })),
    );
    return [...own, ...this.foreignChains];
  }

  /** Test helper: change the fake's state directly, as an operator with `nft` would. */
  edit(fn: (tables: Map<string, NftTable>) => void): void {
    fn(this.tables);
  }
}

function need<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new NftError(`Error: No such file or directory: ${what}`);
  return v;
}

function applyOp(tables: Map<string, NftTable>, op: Operation, handle: number): number {
  const id = tableId(op.table);
  if (op.op === 'add-table') {
    if (!tables.has(id)) tables.set(id, { family: op.table.family, name: op.table.name, maps: [], chains: [] });
    return handle;
  }
  if (op.op === 'delete-table') {
    need(tables.get(id), `table ${id}`);
    tables.delete(id);
    return handle;
  }
  const t = need(tables.get(id), `table ${id}`);
  switch (op.op) {
    case 'add-chain':
      if (!t.chains.some((c) => c.name === op.chain.name)) {
        t.chains.push({ name: op.chain.name, ...(op.chain.base ? { base: { ...op.chain.base } } : {}), rules: [] });
        t.chains.sort(byName);
      }
      return handle;
    case 'flush-chain':
      need(t.chains.find((c) => c.name === op.chain), `chain ${op.chain}`).rules = [];
      return handle;
    case 'add-rule': {
      const c = need(t.chains.find((x) => x.name === op.chain), `chain ${op.chain}`);
      c.rules.push({ ...structuredClone(op.rule), handle });
      return handle + 1;
    }
    case 'add-map':
      if (!t.maps.some((m) => m.name === op.map.name)) {
        t.maps.push({ name: op.map.name, keyType: op.map.keyType, dataType: op.map.dataType, elements: [] });
        t.maps.sort(byName);
      }
      return handle;
    case 'add-elements': {
      const m = need(t.maps.find((x) => x.name === op.map), `map ${op.map}`);
      for (const e of op.elements) {
        const old = m.elements.find((x) => elementKey(x) === elementKey(e));
        if (!old) m.elements.push(structuredClone(e));
        else if (!jsonEqual(old.value, e.value)) throw new NftError('Error: Could not process rule: File exists');
      }
      m.elements = sortElements(m.elements);
      return handle;
    }
    case 'delete-elements': {
      const m = need(t.maps.find((x) => x.name === op.map), `map ${op.map}`);
      for (const e of op.elements) {
        const i = m.elements.findIndex((x) => elementKey(x) === elementKey(e));
        if (i < 0) throw new NftError('Error: Could not process rule: No such file or directory');
        m.elements.splice(i, 1);
      }
      return handle;
    }
  }
}
