// Dual-stack checks (cluster.yaml `ipv6`, nodes' publicIPv6/nodeIPv6, guests' ipv6). The state is
// untrusted input: every address is parsed strictly (ipv6.ts), must be of a class that makes sense
// where it is used (no link-local, multicast, loopback or mapped addresses as subnet, node or guest
// addresses), inside the subnet where it belongs, and unique. Listed in `checks` in semantic.ts; pure.
import type { FieldPath } from './diagnostics.js';
import { classifyIPv6, formatIPv6, formatIPv6Subnet, ipv6SubnetContains, isRoutableUnicast, LINK_LOCAL_64, parseIPv6, parseIPv6Cidr, type IPv6Subnet } from './ipv6.js';
import { alreadyUsed, claim, reportDuplicates, type Claim } from './claims.js';
import type { Check, CheckContext, Located } from './semantic.js';

/** The NAT modes that carry IPv6 today (docs/nat-modes.md says why the others do not yet). */
export const IPV6_MODES: readonly string[] = ['full-nat'];

export const SUBNET_PREFIX = { min: 48, max: 124 } as const;

const CLASS_NAMES: Record<string, string> = {
  unspecified: 'the unspecified address',
  loopback: 'a loopback address',
  ipv4Mapped: 'an IPv4-mapped address',
  linkLocal: 'a link-local address (fe80::/10)',
  multicast: 'a multicast address (ff00::/8)',
  other: 'a reserved address (neither global unicast 2000::/3 nor unique local fc00::/7)',
};

/** Parses an address field, reporting an unparsable one; undefined then. */
function address(ctx: CheckContext, object: Located, path: FieldPath, text: string): bigint | undefined {
  const n = parseIPv6(text);
  if (n === undefined) ctx.report(object, path, `${JSON.stringify(text)} is not an IPv6 address (colon-hex groups with at most one "::")`);
  return n;
}

/** A routable unicast address: anything else is refused with its class. */
function routable(ctx: CheckContext, object: Located, path: FieldPath, text: string): bigint | undefined {
  const n = address(ctx, object, path, text);
  if (n === undefined) return undefined;
  if (!isRoutableUnicast(n)) {
    ctx.report(object, path, `${text} is ${CLASS_NAMES[classifyIPv6(n)]}; it must be global unicast (2000::/3) or unique local (fc00::/7)`);
    return undefined;
  }
  return n;
}

function guestSubnet(ctx: CheckContext, cluster: Located & { ipv6?: { guestSubnet: string } }): IPv6Subnet | undefined {
  const cidr = cluster.ipv6!.guestSubnet;
  const path = ['ipv6', 'guestSubnet'];
  const subnet = parseIPv6Cidr(cidr);
  if (!subnet) {
    ctx.report(cluster, path, `${JSON.stringify(cidr)} is not an IPv6 subnet in CIDR form (e.g. fd05:5:5::/64)`);
    return undefined;
  }
  const addr = parseIPv6(cidr.split('/')[0] as string) as bigint;
  if (subnet.prefix < SUBNET_PREFIX.min || subnet.prefix > SUBNET_PREFIX.max) {
    ctx.report(cluster, path, `prefix length /${subnet.prefix} is outside ${SUBNET_PREFIX.min}-${SUBNET_PREFIX.max} (a guest subnet is usually a /64)`);
    return undefined;
  }
  if (!isRoutableUnicast(addr)) {
    ctx.report(cluster, path, `${cidr} is ${CLASS_NAMES[classifyIPv6(addr)]}; the guest subnet must be global unicast (2000::/3) or unique local (fc00::/7)`);
    return undefined;
  }
  if (addr !== subnet.network) ctx.report(cluster, path, `has host bits set; did you mean ${formatIPv6Subnet(subnet)}?`);
  return subnet;
}

/** An address that must be a usable host address of the IPv6 guest subnet. */
function inSubnet(ctx: CheckContext, subnet: IPv6Subnet, cidr: string, object: Located, path: FieldPath, text: string): void {
  const n = address(ctx, object, path, text);
  if (n === undefined) return;
  if (!ipv6SubnetContains(subnet, n)) ctx.report(object, path, `${text} is outside ipv6.guestSubnet ${cidr}`);
  else if (n === subnet.network) ctx.report(object, path, `${text} is the subnet-router anycast address of ipv6.guestSubnet ${cidr}`);
}

function missing(ctx: CheckContext, object: Located, path: FieldPath, where: string): void {
  ctx.report(object, path, `missing: the cluster is dual stack (ipv6 at ${where}), so every node needs it`);
}

/** IPv6 fields without the cluster's ipv6 section make no sense: refused rather than ignored. */
const ipv6WithoutCluster: Check = (ctx) => {
  const { cluster, nodes, guests } = ctx.input;
  if (!cluster || cluster.ipv6) return;
  const why = 'cluster.yaml has no ipv6 section (the IPv6 guest subnet and gateway); add it or remove this field';
  for (const n of nodes) {
    if (n.uplink.publicIPv6 !== undefined) ctx.report(n, ['uplink', 'publicIPv6'], why);
    if (n.guestBridge.nodeIPv6 !== undefined) ctx.report(n, ['guestBridge', 'nodeIPv6'], why);
  }
  for (const g of guests) if (g.ipv6 !== undefined) ctx.report(g, ['ipv6'], why);
};

const dualStack: Check = (ctx) => {
  const { cluster, nodes, guests } = ctx.input;
  if (!cluster?.ipv6) return;
  const v6 = cluster.ipv6;
  const where = ctx.where(cluster, ['ipv6']);
  if (!IPV6_MODES.includes(cluster.nat.mode)) {
    ctx.report(cluster, ['ipv6'], `IPv6 is supported in ${IPV6_MODES.join(', ')} only; nat.mode ${cluster.nat.mode} (${ctx.where(cluster, ['nat', 'mode'])}) has no IPv6 rules yet (docs/nat-modes.md)`);
  }
  const subnet = guestSubnet(ctx, cluster);

  const ll = address(ctx, cluster, ['ipv6', 'gatewayLinkLocal'], v6.gatewayLinkLocal);
  if (ll !== undefined && (!ipv6SubnetContains(LINK_LOCAL_64, ll) || ll === LINK_LOCAL_64.network)) {
    ctx.report(cluster, ['ipv6', 'gatewayLinkLocal'], `${v6.gatewayLinkLocal} must be a link-local host address in fe80::/64 (e.g. fe80::1)`);
  }

  for (const n of nodes) {
    if (n.uplink.publicIPv6 === undefined) missing(ctx, n, ['uplink', 'publicIPv6'], where);
    else {
      const pub = routable(ctx, n, ['uplink', 'publicIPv6'], n.uplink.publicIPv6);
      if (pub !== undefined && subnet && ipv6SubnetContains(subnet, pub)) {
        ctx.report(n, ['uplink', 'publicIPv6'], `${n.uplink.publicIPv6} is inside ipv6.guestSubnet ${v6.guestSubnet}; the public address lives on the uplink`);
      }
    }
    if (n.guestBridge.nodeIPv6 === undefined) missing(ctx, n, ['guestBridge', 'nodeIPv6'], where);
  }
  if (!subnet) return;
  inSubnet(ctx, subnet, v6.guestSubnet, cluster, ['ipv6', 'gatewayIP'], v6.gatewayIP);
  for (const n of nodes) if (n.guestBridge.nodeIPv6 !== undefined) inSubnet(ctx, subnet, v6.guestSubnet, n, ['guestBridge', 'nodeIPv6'], n.guestBridge.nodeIPv6);
  for (const g of guests) if (g.ipv6 !== undefined) inSubnet(ctx, subnet, v6.guestSubnet, g, ['ipv6'], g.ipv6);
};

/** Claims compared in canonical form, so "fd05::1" and "FD05:0::0001" are the same address. */
function canonicalClaim(object: Located, path: FieldPath, text: string | undefined, owner: string): Claim[] {
  const n = text === undefined ? undefined : parseIPv6(text);
  return n === undefined ? [] : [claim(object, path, formatIPv6(n), owner)];
}

const uniqueIPv6: Check = (ctx) => {
  const { cluster, nodes, guests } = ctx.input;
  if (!cluster?.ipv6) return;
  reportDuplicates(ctx, [
    ...canonicalClaim(cluster, ['ipv6', 'gatewayIP'], cluster.ipv6.gatewayIP, 'the shared cluster ipv6.gatewayIP'),
    ...nodes.flatMap((n) => canonicalClaim(n, ['guestBridge', 'nodeIPv6'], n.guestBridge.nodeIPv6, `nodeIPv6 of node "${n.name}"`)),
    ...guests.flatMap((g) => canonicalClaim(g, ['ipv6'], g.ipv6, `ipv6 of guest "${g.name}"`)),
  ], alreadyUsed);
  reportDuplicates(ctx, nodes.flatMap((n) => canonicalClaim(n, ['uplink', 'publicIPv6'], n.uplink.publicIPv6, `publicIPv6 of node "${n.name}"`)), alreadyUsed);
};

export const ipv6Checks: Check[] = [ipv6WithoutCluster, dualStack, uniqueIPv6];
