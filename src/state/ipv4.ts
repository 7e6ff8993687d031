// IPv4 arithmetic on plain numbers. Inputs are assumed to be well-formed dotted quads: the schema
// (format "ipv4" / the CIDR pattern) has already refused anything else before these are called.

/** Dotted quad -> unsigned 32-bit number. */
export function ipv4ToNumber(ip: string): number {
  return ip.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

export function numberToIPv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

export interface IPv4Subnet {
  /** First address (host bits zero), as a number. */
  network: number;
  /** Last address (host bits one), as a number. */
  broadcast: number;
  prefix: number;
}

/** Parses "10.5.5.0/24". The host bits of the given address are dropped (see `hasHostBits`). */
export function parseCidr(cidr: string): IPv4Subnet {
  const [ip, prefixText] = cidr.split('/');
  const prefix = Number(prefixText);
  const size = 2 ** (32 - prefix);
  const network = Math.floor(ipv4ToNumber(ip) / size) * size;
  return { network, broadcast: network + size - 1, prefix };
}

/** True for "10.5.5.1/24": the address part is not the network address. */
export function hasHostBits(cidr: string): boolean {
  return ipv4ToNumber(cidr.split('/')[0]) !== parseCidr(cidr).network;
}

export function subnetContains(subnet: IPv4Subnet, ip: string): boolean {
  const n = ipv4ToNumber(ip);
  return n >= subnet.network && n <= subnet.broadcast;
}
