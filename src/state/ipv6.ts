// IPv6 arithmetic on bigints, and the address classes validation needs. Pure. Unlike ipv4.ts the
// parser is strict and total (undefined for anything it does not accept): the schema's "ipv6"
// format also admits forms cgw-sync refuses (embedded IPv4, zone ids), and the renderer must write
// addresses in the one form `nft -j list` prints them (RFC 5952, as inet_ntop does).

const GROUPS = 8;
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;

/** "fd05:5:5::fe" -> bigint; undefined for anything but plain hex groups with at most one "::". */
export function parseIPv6(text: string): bigint | undefined {
  if (text.length === 0 || text.length > 39) return undefined;
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const part = (s: string): string[] | undefined => {
    if (s === '') return [];
    const groups = s.split(':');
    return groups.every((g) => HEX_GROUP.test(g)) ? groups : undefined;
  };
  const head = part(halves[0] as string);
  const tail = halves.length === 2 ? part(halves[1] as string) : [];
  if (!head || !tail) return undefined;
  const missing = GROUPS - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...Array<string>(missing).fill('0'), ...tail];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** RFC 5952 text: lower case, no leading zeros, the longest run (first of equals) of 2+ zero groups as "::". */
export function formatIPv6(n: bigint): string {
  const groups = Array.from({ length: GROUPS }, (_, i) => Number((n >> BigInt(16 * (GROUPS - 1 - i))) & 0xffffn));
  let best = { at: -1, len: 1 };
  for (let i = 0; i < GROUPS; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < GROUPS && groups[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (best.at < 0) return hex(groups);
  return `${hex(groups.slice(0, best.at))}::${hex(groups.slice(best.at + best.len))}`;
}

/** The form nft lists an address in (the state may write it otherwise, e.g. "FD05:0005::00FE"). */
export function canonicalIPv6(text: string): string {
  const n = parseIPv6(text);
  if (n === undefined) throw new Error(`not an IPv6 address: ${JSON.stringify(text)}`);
  return formatIPv6(n);
}

export interface IPv6Subnet {
  network: bigint;
  prefix: number;
}

/** "fd05:5:5::/64" -> subnet; undefined when the address or the length (0-128) is not valid. */
export function parseIPv6Cidr(cidr: string): IPv6Subnet | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(cidr);
  if (!m) return undefined;
  const addr = parseIPv6(m[1] as string);
  const prefix = Number(m[2]);
  if (addr === undefined || prefix > 128) return undefined;
  return { network: addr & prefixMask(prefix), prefix };
}

function prefixMask(prefix: number): bigint {
  const all = (1n << 128n) - 1n;
  return prefix === 0 ? 0n : (all << BigInt(128 - prefix)) & all;
}

export function ipv6SubnetContains(subnet: IPv6Subnet, addr: bigint): boolean {
  return (addr & prefixMask(subnet.prefix)) === subnet.network;
}

/** "fd05:5:5::/64" printed canonically, e.g. for the renderer's prefix match. */
export function formatIPv6Subnet(s: IPv6Subnet): string {
  return `${formatIPv6(s.network)}/${s.prefix}`;
}

const block = (cidr: string): IPv6Subnet => parseIPv6Cidr(cidr) as IPv6Subnet;

/** Address classes (RFC 4291, 4193, 6890) with what validation says about them. */
export const IPV6_CLASSES = {
  unspecified: block('::/128'),
  loopback: block('::1/128'),
  ipv4Mapped: block('::ffff:0:0/96'),
  linkLocal: block('fe80::/10'),
  multicast: block('ff00::/8'),
  uniqueLocal: block('fc00::/7'),
  globalUnicast: block('2000::/3'),
} as const;

export type IPv6Class = keyof typeof IPV6_CLASSES | 'other';

export function classifyIPv6(addr: bigint): IPv6Class {
  for (const [name, subnet] of Object.entries(IPV6_CLASSES)) if (ipv6SubnetContains(subnet, addr)) return name as IPv6Class;
  return 'other';
}

/** A routable unicast address (global or unique local): what a subnet, public or node address must be. */
export function isRoutableUnicast(addr: bigint): boolean {
  const c = classifyIPv6(addr);
  return c === 'globalUnicast' || c === 'uniqueLocal';
}

/** The link-local subnet proper (fe80::/64): the shared link-local gateway lives here. */
export const LINK_LOCAL_64 = block('fe80::/64');
