// Builders for nft expressions in the JSON form `nft -j list` prints them (see nft/model.ts), shared
// by the renderers of the three NAT modes. Pure.
import type { Json, NftRule } from '../nft/model.js';
import { sortSetItems } from '../nft/normalize.js';

export const payload = (protocol: string, field: string): Json => ({ payload: { protocol, field } });
export const meta = (key: string): Json => ({ meta: { key } });
export const match = (left: Json, right: Json, op = '=='): Json => ({ match: { op, left, right } });
export const concat = (...items: Json[]): Json => ({ concat: items });
export const range = (lo: number, hi: number): Json => ({ range: [lo, hi] });
/** An anonymous set literal (nft lists even a one-element set as a set), items in normalised order. */
export const setOf = (items: Json[]): Json => ({ set: sortSetItems(items) });
/** `<key> set <value>`: a payload rewrite (nft fixes the IP and L4 checksums). */
export const mangle = (key: Json, value: Json): Json => ({ mangle: { key, value } });
/** `<key> map @name`: a lookup in a named map; a key that is not in the map ends the rule. */
export const mapLookup = (key: Json, name: string): Json => ({ map: { key, data: `@${name}` } });
export const notrack: Json = { notrack: null };
/** A set of plain values (not concatenations): nft lists a one-element one as the element itself. */
export const oneOrSet = (items: Json[]): Json => (items.length === 1 ? (items[0] as Json) : setOf(items));
/** `dup to <addr> device <dev>`: a copy of the packet sent to that next hop. */
export const dupTo = (addr: string, dev: string): Json => ({ dup: { addr, dev } });

export function prefix(cidr: string): Json {
  const [addr, len] = cidr.split('/');
  return { prefix: { addr: addr as string, len: Number(len) } };
}

export function rule(comment: string, ...expr: Json[]): NftRule {
  return { expr, comment };
}
