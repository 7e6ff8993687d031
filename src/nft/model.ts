// An in-memory nftables ruleset, restricted to what cgw-sync owns.
//
// Rules and map elements are kept in the JSON form that `nft -j list` prints (libnftables JSON
// schema), normalised: that is the one form both the renderer and the live reader produce, so
// comparing desired and live is plain structural equality. Text is only ever printed from it.

export type Family = 'ip' | 'ip6' | 'inet' | 'netdev' | 'bridge' | 'arp';

/** A libnftables JSON expression or value, as listed by `nft -j` (opaque to most of the code). */
export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface BaseChainSpec {
  type: 'filter' | 'nat' | 'route';
  hook: string;
  /** Numeric priority as listed (dstnat = -100, srcnat = 100, filter = 0). */
  priority: number;
  policy: 'accept' | 'drop';
  /** netdev chains only. `nft -j list` drops it in 1.0.6, so it is never compared. */
  device?: string;
}

export interface NftRule {
  expr: Json[];
  comment?: string;
  /** Only on live rules. */
  handle?: number;
}

export interface NftChain {
  name: string;
  base?: BaseChainSpec;
  rules: NftRule[];
  handle?: number;
}

export interface MapElement {
  key: Json;
  value: Json;
}

export interface NftMap {
  name: string;
  /** e.g. "inet_service" */
  keyType: string;
  /** e.g. "ipv4_addr . inet_service" */
  dataType: string;
  elements: MapElement[];
  handle?: number;
}

export interface NftTable {
  family: Family;
  name: string;
  maps: NftMap[];
  chains: NftChain[];
  /** Live only: objects cgw-sync never renders (sets, flowtables, ...), found in an owned table. */
  otherObjects?: string[];
}

/** A set of owned tables; absent tables are simply not in the list. */
export interface Ruleset {
  tables: NftTable[];
}

export function tableId(t: { family: string; name: string }): string {
  return `${t.family} ${t.name}`;
}

/** The one order used for chains and maps everywhere (plain code-unit order, locale-free). */
export function byName<T extends { name: string }>(a: T, b: T): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** Keys are numbers in strictly increasing order (port maps as rendered, listed and kept in memory). */
export function numericKeyOrder(es: MapElement[]): boolean {
  let last = -Infinity;
  for (const e of es) {
    if (typeof e.key !== 'number' || e.key <= last) return false;
    last = e.key;
  }
  return true;
}

/** First index whose (numeric) key is >= key, in port-ordered elements. */
export function lowerBound(es: readonly MapElement[], key: number): number {
  let lo = 0;
  let hi = es.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((es[mid]!.key as number) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The element with this key in port-ordered elements. */
export function elementAt(es: readonly MapElement[], key: number): MapElement | undefined {
  const e = es[lowerBound(es, key)];
  return e?.key === key ? e : undefined;
}

/** Stable identity of a map element, for set arithmetic between desired and live. */
export function elementKey(e: MapElement): string {
  return canonicalJson(e.key);
}

/** JSON with object keys sorted, so equal values print equal. */
export function canonicalJson(v: Json): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) {
    let out = '[';
    for (let i = 0; i < v.length; i++) out += (i ? ',' : '') + canonicalJson(v[i] as Json);
    return out + ']';
  }
  const keys = Object.keys(v);
  if (keys.length > 1) keys.sort();
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string;
    out += `${i ? ',' : ''}${JSON.stringify(k)}:${canonicalJson(v[k] as Json)}`;
  }
  return out + '}';
}

/** Structural equality of two JSON values (object key order ignored), without building strings. */
export function jsonEqual(a: Json, b: Json): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i] as Json, b[i] as Json)) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (!(k in b) || !jsonEqual(a[k] as Json, b[k] as Json)) return false;
  return true;
}
