// Checks that need more than one document at a time: references between objects, uniqueness across
// files, and the address plan. Pure: works on already schema-valid specs, no I/O.
//
// Each check is one function listed in `checks` at the end; mode- or hypervisor-specific rules
// (issue 6) are added the same way.
import { formatFieldPath, type DiagnosticLocation, type FieldPath } from './diagnostics.js';
import { hasHostBits, ipv4ToNumber, numberToIPv4, parseCidr, subnetContains } from './ipv4.js';
import type { ClusterSettings, Diagnostic, ForwardSpec, GuestSpec, NodeSpec, SourceRef } from './types.js';
import { ctSyncSettings, statelessNatSettings } from './mode-checks.js';
import { tableNames } from './table-checks.js';
import { changeWindows, healthCheckSettings, rolloutWaves } from '../health/state-checks.js';
import { statusKeys } from './status-keys.js';
import { ipv6Checks } from './ipv6-checks.js';
import { alreadyUsed, claim, reportDuplicates } from './claims.js';
import { gatewayMacSettings, isMulticastMac } from './gateway-mac.js';
import { liveMigrationGuests } from './migration-checks.js';
import { forwardIndex, namesMayRepeat, portKey, portsMayClash, referencesKnown, type ForwardIndex } from './forward-index.js';

export interface SemanticInput {
  /** Undefined when cluster.yaml is missing or invalid (already reported); cluster-wide checks are skipped. */
  cluster?: ClusterSettings;
  nodes: NodeSpec[];
  guests: GuestSpec[];
  forwards: ForwardSpec[];
  /**
   * Names declared in documents that failed earlier checks (already reported). References to them are
   * not reported again as "unknown".
   */
  unchecked?: { nodes?: Iterable<string>; guests?: Iterable<string> };
  /**
   * The forwards as the lists they were read in (one per file; joined, they are `forwards`). A list
   * given here never changes: what the checks learn of it is kept for the next validation.
   */
  forwardLists?: ReadonlyArray<readonly ForwardSpec[]>;
}

/** Any spec object: it knows where it was defined. */
export interface Located {
  source: SourceRef;
}

/** Turns a field of an object into a file position. The loader passes one that knows exact YAML ranges. */
export type Locator = (object: Located, path: FieldPath) => DiagnosticLocation;

/** Fallback locator: the position of the object itself, with the field path attached. */
export const locateBySource: Locator = (object, path) => ({ ...object.source, field: formatFieldPath(path) });

export interface CheckContext {
  input: SemanticInput;
  report(object: Located, path: FieldPath, message: string): void;
  /** "file:line:col" of a field, for messages that point at a second place. */
  where(object: Located, path: FieldPath): string;
  /** The forwards' indexes (src/state/forward-index.ts), one per list. */
  forwardIndexes(): readonly ForwardIndex[];
  /** The forwards with a health check, in order. */
  forwardsWithHealth(): ForwardSpec[];
}

export type Check = (ctx: CheckContext) => void;

export function validateSemantics(input: SemanticInput, locate: Locator = locateBySource): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  let indexes: ForwardIndex[] | undefined;
  const forwardIndexes = () => {
    indexes ??= input.forwardLists ? input.forwardLists.map((list) => forwardIndex(list, true)) : [forwardIndex(input.forwards, false)];
    return indexes;
  };
  const ctx: CheckContext = {
    input,
    report: (object, path, message) => diagnostics.push({ ...locate(object, path), message }),
    where: (object, path) => {
      const { file, line, column } = locate(object, path);
      return `${file}:${line}:${column}`;
    },
    forwardIndexes,
    forwardsWithHealth: () => forwardIndexes().flatMap((i) => i.withHealth),
  };
  for (const check of checks) check(ctx);
  return diagnostics;
}

const uniqueNames: Check = (ctx) => {
  const { nodes, guests, forwards } = ctx.input;
  const collections: Array<[string, Array<Located & { name: string }>]> = [
    ['node', nodes],
    ['guest', guests],
    ['forward', forwards],
  ];
  // A map of first holders, without a claim object per name: 50,000 forwards are checked every load.
  for (const [noun, objects] of collections) {
    if (noun === 'forward' && !namesMayRepeat(ctx.forwardIndexes())) continue;
    const firsts = new Map<string, Located>();
    for (const o of objects) {
      const first = firsts.get(o.name);
      if (!first) firsts.set(o.name, o);
      else ctx.report(o, ['name'], `duplicate ${noun} name "${o.name}" (first defined at ${ctx.where(first, ['name'])})`);
    }
  }
};

/** Gateway, node and guest addresses all live inside the guest subnet, on usable host addresses. */
const addressesInSubnet: Check = (ctx) => {
  const { cluster, nodes, guests } = ctx.input;
  if (!cluster) return;
  const cidr = cluster.guestSubnet;
  const subnet = parseCidr(cidr);
  if (hasHostBits(cidr)) {
    const meant = `${numberToIPv4(subnet.network)}/${subnet.prefix}`;
    ctx.report(cluster, ['guestSubnet'], `has host bits set; did you mean ${meant}?`);
  }
  const check = (object: Located, path: FieldPath, ip: string) => {
    const n = ipv4ToNumber(ip);
    if (!subnetContains(subnet, ip)) ctx.report(object, path, `${ip} is outside guestSubnet ${cidr}`);
    else if (n === subnet.network) ctx.report(object, path, `${ip} is the network address of guestSubnet ${cidr}`);
    else if (n === subnet.broadcast) ctx.report(object, path, `${ip} is the broadcast address of guestSubnet ${cidr}`);
  };
  check(cluster, ['gatewayIP'], cluster.gatewayIP);
  for (const node of nodes) check(node, ['guestBridge', 'nodeIP'], node.guestBridge.nodeIP);
  for (const guest of guests) check(guest, ['ip'], guest.ip);
};

/** No two holders of one guest-subnet address, public address or MAC. */
const uniqueAddresses: Check = (ctx) => {
  const { cluster, nodes, guests } = ctx.input;
  const gateway = cluster ? [claim(cluster, ['gatewayIP'], cluster.gatewayIP, 'the shared cluster gatewayIP')] : [];
  const subnetClaims = [
    ...gateway,
    ...nodes.map((n) => claim(n, ['guestBridge', 'nodeIP'], n.guestBridge.nodeIP, `nodeIP of node "${n.name}"`)),
    ...guests.map((g) => claim(g, ['ip'], g.ip, `ip of guest "${g.name}"`)),
  ];
  reportDuplicates(ctx, subnetClaims, alreadyUsed);

  const publicClaims = nodes.map((n) =>
    claim(n, ['uplink', 'publicIP'], n.uplink.publicIP, `publicIP of node "${n.name}"`),
  );
  reportDuplicates(ctx, publicClaims, alreadyUsed);

  const macClaims = [
    ...nodes.filter((n) => n.guestBridge.mac).map((n) => claim(n, ['guestBridge', 'mac'], (n.guestBridge.mac as string).toLowerCase(), `guestBridge.mac of node "${n.name}"`)),
    ...guests.map((g) => claim(g, ['mac'], g.mac.toLowerCase(), `mac of guest "${g.name}"`)),
  ];
  reportDuplicates(ctx, macClaims, alreadyUsed);
};

const unicastMacs: Check = (ctx) => {
  for (const guest of ctx.input.guests) {
    if (isMulticastMac(guest.mac)) {
      ctx.report(guest, ['mac'], `${guest.mac} is a multicast address; a guest needs a unicast MAC (even first octet)`);
    }
  }
};

/** A node's uplink, guest bridge and trunks are different interfaces. */
const distinctNodeInterfaces: Check = (ctx) => {
  for (const node of ctx.input.nodes) {
    const claims = [
      claim(node, ['uplink', 'interface'], node.uplink.interface, 'uplink.interface'),
      claim(node, ['guestBridge', 'interface'], node.guestBridge.interface, 'guestBridge.interface'),
      ...node.trunks.map((trunk, i) => claim(node, ['trunks', i], trunk, `trunks[${i}]`)),
    ];
    reportDuplicates(ctx, claims, (name, first) =>
      `interface "${name}" is already used as ${first.owner} on this node`);
  }
};

/** Guests name existing nodes; forwards name existing guests and nodes. */
const references: Check = (ctx) => {
  const { nodes, guests, forwards, unchecked } = ctx.input;
  const nodeNames = new Set([...nodes.map((n) => n.name), ...(unchecked?.nodes ?? [])]);
  const guestNames = new Set([...guests.map((g) => g.name), ...(unchecked?.guests ?? [])]);
  const unknown = (noun: string, name: string, known: Set<string>) => {
    const hint = known.size ? `defined: ${[...known].sort().join(', ')}` : `no ${noun}s defined`;
    return `unknown ${noun} "${name}" (${hint})`;
  };

  for (const guest of guests) {
    if (!nodeNames.has(guest.node)) ctx.report(guest, ['node'], unknown('node', guest.node, nodeNames));
  }
  if (referencesKnown(ctx.forwardIndexes(), guestNames, nodeNames)) return;
  for (const forward of forwards) {
    if (!guestNames.has(forward.target.guest)) {
      ctx.report(forward, ['target', 'guest'], unknown('guest', forward.target.guest, guestNames));
    }
    forward.nodes?.forEach((node, i) => {
      if (!nodeNames.has(node)) ctx.report(forward, ['nodes', i], unknown('node', node, nodeNames));
    });
  }
};

/** One protocol/port can be forwarded to only one target on each node it enters. */
const forwardPortClashes: Check = (ctx) => {
  // A Set: a node defined twice (reported by uniqueNames) must not make a forward clash with itself.
  const nodeSet = new Set(ctx.input.nodes.map((n) => n.name));
  if (!portsMayClash(ctx.forwardIndexes(), nodeSet)) return;
  const allNodes = [...nodeSet];
  // Keyed by one number (node, protocol, port), not by a string per forward and node: with 50,000
  // forwards those strings cost more than every other check together. Ports are below 2^16 (schema).
  const nodeIds = new Map<string, number>();
  const firsts = new Map<number, ForwardSpec>();
  for (const forward of ctx.input.forwards) {
    const port = portKey(forward);
    for (const node of forward.nodes ?? allNodes) {
      const id = nodeIds.get(node) ?? nodeIds.size;
      nodeIds.set(node, id);
      const key = id * 0x40000 + port;
      const first = firsts.get(key);
      if (!first) firsts.set(key, forward);
      else ctx.report(forward, ['port'], `${forward.protocol}/${forward.port} on node ${node} is already taken by forward "${first.name}" (${ctx.where(first, ['port'])})`);
    }
  }
};

const checks: Check[] = [
  uniqueNames,
  addressesInSubnet,
  uniqueAddresses,
  unicastMacs,
  distinctNodeInterfaces,
  references,
  forwardPortClashes,
  statelessNatSettings,
  ctSyncSettings,
  tableNames,
  healthCheckSettings,
  rolloutWaves,
  changeWindows,
  statusKeys,
  ...ipv6Checks,
  gatewayMacSettings,
  liveMigrationGuests,
];
