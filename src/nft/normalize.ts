// Turns `nft -j list table ...` output into the model, dropping what nft adds on listing
// (metainfo, table/chain/map handles, element order) so that it compares equal to a rendered
// table. Rule handles are kept: they are how a hand-added rule is addressed for deletion.
import { byName, canonicalJson, numericKeyOrder, type BaseChainSpec, type Json, type MapElement, type NftChain, type NftMap, type NftTable, type Family } from './model.js';

type Obj = { [k: string]: Json };

function typeName(t: Json | undefined): string {
  // Concatenated types are listed as arrays; the model keeps the text form "a . b".
  if (Array.isArray(t)) return t.map(String).join(' . ');
  return String(t);
}

function element(raw: Json): MapElement {
  if (!Array.isArray(raw) || raw.length !== 2) throw new Error(`unexpected map element in nft listing: ${JSON.stringify(raw)}`);
  return { key: unwrapElem(raw[0] as Json), value: unwrapElem(raw[1] as Json) };
}

/** Elements with options (timeout, comment) are listed as {"elem": {"val": ...}}. */
function unwrapElem(v: Json): Json {
  if (v !== null && typeof v === 'object' && !Array.isArray(v) && 'elem' in v) {
    const e = v.elem as Obj;
    return e.val as Json;
  }
  return v;
}

/** Elements in key order: numerically for port keys (as people read them), else by canonical JSON. */
export function sortElements(elements: MapElement[]): MapElement[] {
  // Forwards are mostly written, and always listed, in port order: nothing to sort then.
  if (numericKeyOrder(elements)) return elements.slice();
  // Port keys only: the same stable order as below without a pair per element.
  if (elements.every((e) => typeof e.key === 'number')) return elements.slice().sort((a, b) => (a.key as number) - (b.key as number));
  return sortElementsByCanonicalKey(elements);
}

/** sortElements for any keys: numbers numerically, the rest by canonical JSON (a stable sort). */
export function sortElementsByCanonicalKey(elements: MapElement[]): MapElement[] {
  return elements
    .map((e) => [typeof e.key === 'number' ? e.key : canonicalJson(e.key), e] as const)
    .sort((a, b) => {
      const [x, y] = [a[0], b[0]];
      if (typeof x === 'number' && typeof y === 'number') return x - y;
      return String(x) < String(y) ? -1 : String(x) > String(y) ? 1 : 0;
    })
    .map(([, e]) => e);
}

/**
 * Anonymous sets in rules (`ip daddr . tcp dport { ... }`) are listed in the kernel's hash order,
 * which changes from one load to the next: both the renderer and the reader sort their items by
 * canonical JSON, so equal sets compare equal.
 */
export function sortSetItems(items: Json[]): Json[] {
  return items
    .map((x) => [canonicalJson(x), x] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([, x]) => x);
}

function sortSetsIn(v: Json): Json {
  if (Array.isArray(v)) return v.map(sortSetsIn);
  if (v === null || typeof v !== 'object') return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) out[k] = k === 'set' && Array.isArray(x) ? sortSetItems(x.map(sortSetsIn)) : sortSetsIn(x as Json);
  return out;
}

/**
 * Parse the JSON printed by `nft -j list table <family> <name>`.
 * nft 1.0.6 omits `dev` on netdev chains, so live chains carry no device; the planner never
 * compares devices (the chain name, egress_<device>, carries it instead).
 */
export function parseTableListing(json: string): NftTable {
  const doc = JSON.parse(json) as { nftables?: Obj[] };
  const items = doc.nftables ?? [];
  let table: NftTable | undefined;
  const chains = new Map<string, NftChain>();
  const maps: NftMap[] = [];
  const otherObjects: string[] = [];
  for (const item of items) {
    if (item.table) {
      const t = item.table as Obj;
      table = { family: String(t.family) as Family, name: String(t.name), maps: [], chains: [] };
    } else if (item.chain) {
      const c = item.chain as Obj;
      const chain: NftChain = { name: String(c.name), rules: [], handle: Number(c.handle) };
      if (c.hook !== undefined) {
        const base: BaseChainSpec = {
          type: String(c.type) as BaseChainSpec['type'],
          hook: String(c.hook),
          priority: Number(c.prio),
          policy: (c.policy === undefined ? 'accept' : String(c.policy)) as BaseChainSpec['policy'],
        };
        if (c.dev !== undefined) base.device = String(c.dev);
        chain.base = base;
      }
      chains.set(chain.name, chain);
    } else if (item.map) {
      const m = item.map as Obj;
      const elems = Array.isArray(m.elem) ? m.elem.map(element) : [];
      maps.push({
        name: String(m.name),
        keyType: typeName(m.type),
        dataType: typeName(m.map),
        elements: sortElements(elems),
        handle: Number(m.handle),
      });
    } else if (item.rule) {
      const r = item.rule as Obj;
      const chain = chains.get(String(r.chain));
      if (!chain) throw new Error(`nft listing has a rule for unknown chain ${String(r.chain)}`);
      chain.rules.push({
        expr: ((r.expr as Json[]) ?? []).map(sortSetsIn),
        ...(r.comment !== undefined ? { comment: String(r.comment) } : {}),
        handle: Number(r.handle),
      });
    }
    // Sets, flowtables, named counters...: cgw-sync never renders them, so one in an owned
    // table was added by hand; it is recorded so the planner can replace the table.
    else if (!item.metainfo) {
      const [kind] = Object.keys(item);
      const o = item[kind as string] as Obj;
      otherObjects.push(`${kind} ${String(o?.name ?? '')}`.trim());
    }
  }
  if (!table) throw new Error('nft listing contains no table');
  table.maps = maps.sort(byName);
  table.chains = [...chains.values()].sort(byName);
  if (otherObjects.length > 0) table.otherObjects = otherObjects.sort();
  return table;
}
