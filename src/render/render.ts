// Renders one node's desired nftables tables from the cluster state. Pure: no I/O.
//
// Expressions are written exactly as `nft -j list` prints them back (see nft/model.ts), so a
// freshly applied ruleset plans as "no changes". test/render.test.ts and the nft integration
// tests hold that promise.
import type { ClusterState, NodeSpec, Protocol } from '../state/types.js';
import { byName, type MapElement, type NftChain, type NftRule, type NftTable, type Ruleset } from '../nft/model.js';
import { assertOwnedTables } from '../nft/ownership.js';
import { match, meta, payload, prefix, rule } from './expr.js';
import { statelessMaps, statelessPrerouting } from './stateless.js';
import { findNode, resolveNode, type NodeView } from './node-view.js';
import { syncGuardTable, syncTableName } from './syncguard.js';
import { hasLiveGuests, migrationGuardTable, migrationTableRef } from './migration-guard.js';
import { ctSyncForward, ctSyncInvalid, ctSyncMaps, ctSyncPrerouting } from './ctsync.js';
import { nat6Table, nat6TableRef, trunkIPv6Rules } from './ipv6.js';
import { gatewayMacTable, gatewayMacTableRef } from './gateway-mac.js';
import { renderForwardElements } from './forward-elements.js';

// Kept here for callers that import it from the renderer.
export { findNode };

export const PROTOCOLS: Protocol[] = ['tcp', 'udp'];

/** Name of the forward map for a protocol, e.g. "fwd_tcp". */
export function forwardMapName(protocol: Protocol): string {
  return `fwd_${protocol}`;
}

/** Netdev chain name for a trunk device: the device name is part of it because nft 1.0.6 does not list `dev`. */
export function egressChainName(device: string): string {
  return `egress_${device}`;
}

/**
 * The forwards that enter on this node, as map elements per protocol (IPv4 unless a family is
 * given). `previous`: the same map rendered for an earlier revision (patched when few forwards differ).
 */
export function forwardElements(view: NodeView, protocol: Protocol, family: NatFamily = ipv4Nat(view), previous?: MapElement[]): MapElement[] {
  return renderForwardElements(view.forwards, protocol, family.guestIP, previous);
}

/** The elements of a map in an earlier rendering of the same table, if it had one. */
export function previousElements(previous: Ruleset | undefined, table: { family: string; name: string }, map: string): MapElement[] | undefined {
  return previous?.tables.find((t) => t.family === table.family && t.name === table.name)?.maps.find((m) => m.name === map)?.elements;
}

// --- table ip <nat> (and ip6 <nat6>, src/render/ipv6.ts) ---------------------------------------

/** What the nat table of one address family is built from: the same rules for IPv4 and IPv6. */
export interface NatFamily {
  family: 'ip' | 'ip6';
  table: string;
  /** Map data type of a forward target, e.g. "ipv4_addr . inet_service". */
  targetType: string;
  guestSubnet: string;
  publicIP: string;
  nodeIP: string;
  /** The guests that have an address of this family, by name. */
  guestIP: ReadonlyMap<string, string>;
}

function ipv4Nat({ state, node, guestIP }: NodeView): NatFamily {
  const { guestSubnet, tables } = state.cluster;
  return { family: 'ip', table: tables.nat, targetType: 'ipv4_addr . inet_service', guestSubnet, publicIP: node.uplink.publicIP, nodeIP: node.guestBridge.nodeIP, guestIP };
}

function dnatRule(fam: NatFamily, protocol: Protocol): NftRule {
  return rule(
    `forwards: ${protocol} ports on ${fam.publicIP} to guests`,
    match(payload(fam.family, 'daddr'), fam.publicIP),
    { dnat: { family: fam.family, addr: { map: { key: payload(protocol, 'dport'), data: `@${forwardMapName(protocol)}` } } } },
  );
}

/** full-nat: forwarded flows leave towards the guest with this node's guest-bridge IP, so replies come back here. */
function forwardSnatRule(node: NodeSpec, fam: NatFamily): NftRule {
  return rule(
    'full-nat: replies to forwarded flows return through this node',
    match({ ct: { key: 'status' } }, 'dnat', 'in'),
    match(meta('oifname'), node.guestBridge.interface),
    { snat: { addr: fam.nodeIP } },
  );
}

/**
 * Casual outbound: guests reach the world with this node's public IP. Matching on the uplink's
 * name (not index) keeps working when the bridge is re-created; bridged traffic never matches
 * because br_netfilter reports the bridge itself as oif, and guest traffic is bridged only on
 * the guest bridge.
 */
function outboundSnatRule(node: NodeSpec, fam: NatFamily): NftRule {
  const subnet = prefix(fam.guestSubnet);
  return rule(
    'casual outbound: guests leave with this node public IP',
    match(meta('oifname'), node.uplink.interface),
    match(payload(fam.family, 'saddr'), subnet),
    match(payload(fam.family, 'daddr'), subnet, '!='),
    { snat: { addr: fam.publicIP } },
  );
}

/**
 * The nat table of one address family (IPv4: natTable(view); IPv6: src/render/ipv6.ts).
 * `previous`: an earlier rendering of the node's tables, the base of the forward maps.
 */
export function natTable(view: NodeView, fam: NatFamily = ipv4Nat(view), previous?: Ruleset): NftTable {
  const { state, node } = view;
  const { nat } = state.cluster;
  const postrouting: NftRule[] = [];
  if (nat.mode === 'full-nat' && nat.forwardSnat) postrouting.push(forwardSnatRule(node, fam));
  postrouting.push(outboundSnatRule(node, fam));

  const chains: NftChain[] = [
    {
      name: 'postrouting',
      base: { type: 'nat', hook: 'postrouting', priority: 100, policy: 'accept' },
      rules: postrouting,
    },
  ];
  // stateless-nat rewrites forwards in the raw table, untracked: the nat hooks never see them.
  if (nat.mode === 'stateless-nat') return { family: fam.family, name: fam.table, maps: [], chains };
  chains.push({
    name: 'prerouting',
    base: { type: 'nat', hook: 'prerouting', priority: -100, policy: 'accept' },
    // One lookup per protocol, whatever the number of forwards.
    rules: PROTOCOLS.map((p) => dnatRule(fam, p)),
  });
  return {
    family: fam.family,
    name: fam.table,
    maps: PROTOCOLS.map((p) => ({
      name: forwardMapName(p),
      keyType: 'inet_service',
      dataType: fam.targetType,
      elements: forwardElements(view, p, fam, previousElements(previous, { family: fam.family, name: fam.table }, forwardMapName(p))),
    })),
    chains: chains.sort(byName),
  };
}

// --- table netdev <arp> ---------------------------------------------------------------------

/** Hide the shared gateway IP from the other nodes: drop ARP (and NDP, RAs: ipv6.ts) that names it on the way out of each trunk. */
function arpTable(state: ClusterState, node: NodeSpec): NftTable {
  const gw = state.cluster.gatewayIP;
  const chains: NftChain[] = node.trunks.map((device): NftChain => ({
    name: egressChainName(device),
    base: { type: 'filter', hook: 'egress', priority: 0, policy: 'accept', device },
    rules: [
      rule('shared gateway: no ARP from it leaves to other nodes', match(payload('arp', 'saddr ip'), gw), { drop: null }),
      rule('shared gateway: no ARP for it leaves to other nodes', match(payload('arp', 'daddr ip'), gw), { drop: null }),
      ...trunkIPv6Rules(state),
    ],
  }));
  return { family: 'netdev', name: state.cluster.tables.arp, maps: [], chains: chains.sort(byName) };
}

// --- table ip <raw>: what ct-sync and stateless-nat add (src/render/ctsync.ts, stateless.ts) --

export const DEFAULT_RAW_TABLE = 'cgw_raw';

export function rawTableName(state: ClusterState): string {
  return state.cluster.tables.raw ?? DEFAULT_RAW_TABLE;
}

/** Chains before conntrack (and ct-sync's forward filter); undefined in full-nat. */
function rawTable(view: NodeView): NftTable | undefined {
  const { state, node } = view;
  const name = rawTableName(state);
  switch (state.cluster.nat.mode) {
    case 'full-nat':
      return undefined;
    case 'stateless-nat':
      return { family: 'ip', name, maps: statelessMaps(view).sort(byName), chains: [statelessPrerouting(view)] };
    case 'ct-sync': {
      const chains = [ctSyncPrerouting(state, node), ctSyncForward(view), ctSyncInvalid(node)].filter((c): c is NftChain => !!c);
      return { family: 'ip', name, maps: ctSyncMaps(view).sort(byName), chains: chains.sort(byName) };
    }
  }
}

/**
 * The tables a node lists and plans: the state's own (stateTables) and, where `granted` allows
 * (the agent config's ownedTables; empty: any marked table), those of roles the state has
 * switched off (ip6 nat6 once `ipv6` is removed, bridge gwmac once `gatewayMAC` is, bridge
 * migration once no guest migrates live). Planning deletes a listed table it does not render, so
 * a role switched off loses its table instead of leaving it behind. Throws NotOwnedTable for a
 * name without the cgw_ mark, so a state that bypassed validation can never make the planner
 * list, replace or delete a foreign table.
 */
export function ownedTables(state: ClusterState, granted: readonly string[] = []): { family: NftTable['family']; name: string }[] {
  const isGranted = (t: { family: string; name: string }) => granted.length === 0 || granted.includes(`${t.family} ${t.name}`);
  const tables = stateTables(state);
  const named = (t: { family: string; name: string }) => tables.some((o) => o.family === t.family && o.name === t.name);
  const switchedOff = switchableTables(state)
    .filter((t) => !t.used && isGranted(t.table) && !named(t.table))
    .map((t) => t.table);
  const all = [...tables, ...switchedOff];
  assertOwnedTables(all);
  return all;
}

/**
 * The roles a state may switch off, each with its table and whether the state uses it now. Named
 * only where used, so an agent config whose explicit ownedTables lists none of them stays valid.
 */
function switchableTables(state: ClusterState): { table: { family: NftTable['family']; name: string }; used: boolean }[] {
  return [
    { table: gatewayMacTableRef(state), used: state.cluster.gatewayMAC !== undefined },
    { table: nat6TableRef(state), used: state.cluster.ipv6 !== undefined },
    { table: migrationTableRef(state), used: hasLiveGuests(state) },
  ];
}

/** The tables a state names, unchecked (ownedTables is the checked form). */
export function stateTables(state: ClusterState): { family: NftTable['family']; name: string }[] {
  return [
    { family: 'ip', name: state.cluster.tables.nat },
    { family: 'netdev', name: state.cluster.tables.arp },
    { family: 'ip', name: rawTableName(state) },
    { family: 'bridge', name: syncTableName(state) },
    ...switchableTables(state)
      .filter((t) => t.used)
      .map((t) => t.table),
  ];
}

/** The desired ruleset of one node. A table the node does not need is absent (and so deleted). */
export function renderNode(state: ClusterState, nodeName: string): Ruleset {
  return renderView(resolveNode(state, nodeName));
}

/**
 * The desired ruleset of a resolved node. `previous`: the ruleset rendered for an earlier
 * revision (the long-running agent's last), from which unchanged forwards' elements are taken.
 */
export function renderView(view: NodeView, previous?: Ruleset): Ruleset {
  // Checked whatever the caller: a state that bypassed validation never names a foreign table.
  ownedTables(view.state);
  const tables = [natTable(view, ipv4Nat(view), previous)];
  const nat6 = nat6Table(view, previous);
  if (nat6) tables.push(nat6);
  if (view.node.trunks.length > 0) tables.push(arpTable(view.state, view.node));
  const raw = rawTable(view);
  if (raw) tables.push(raw);
  const guard = syncGuardTable(view);
  if (guard) tables.push(guard);
  const gwmac = gatewayMacTable(view);
  if (gwmac) tables.push(gwmac);
  const migration = migrationGuardTable(view);
  if (migration) tables.push(migration);
  return { tables };
}
