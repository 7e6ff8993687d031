// ct-sync: forwards are DNAT only; conntrackd replicates the connection state between the nodes,
// so a reply leaving through the guest's own node is translated there (docs/nat-modes.md).
// This file renders the nftables part; conntrackd's configuration and the sysctls are node
// settings (src/settings).
import type { ClusterState, NodeSpec, Protocol } from '../state/types.js';
import type { Json, NftChain, NftMap, NftRule } from '../nft/model.js';
import { sortElements } from '../nft/normalize.js';
import type { NodeView } from './node-view.js';
import { concat, dupTo, mangle, mapLookup, match, meta, notrack, oneOrSet, payload, rule, setOf } from './expr.js';

const PROTOCOLS: Protocol[] = ['tcp', 'udp'];

/**
 * Raw prerouting (priority -300): frames this node merely bridges to a guest (destination MAC is a
 * guest's) are never tracked here. With br_netfilter they would otherwise create an untranslated
 * entry on the guest's node that clashes with the one conntrackd injects, and the reply would not
 * be un-DNATed. Frames the node routes (to its own bridge MAC, e.g. the guest's replies through the
 * shared gateway) are tracked as usual.
 */
export function ctSyncPrerouting(state: ClusterState, node: NodeSpec): NftChain | undefined {
  const macs = [...new Set(state.guests.map((g) => g.mac))];
  if (macs.length === 0) return undefined;
  return {
    name: 'prerouting',
    base: { type: 'filter', hook: 'prerouting', priority: -300, policy: 'accept' },
    rules: [
      rule(
        'ct-sync: frames bridged to a guest are not tracked on this node',
        match(meta('iifname'), node.guestBridge.interface),
        match(payload('ether', 'daddr'), setOf(macs)),
        notrack,
      ),
    ],
  };
}

/** (guest IP . target port) of every forward of a protocol, without duplicates. */
function targets({ state, guestIP }: NodeView, protocol: Protocol): Json[] {
  const pairs = new Map<string, [string, number]>();
  for (const f of state.forwards.filter((f) => f.protocol === protocol)) {
    const ip = guestIP.get(f.target.guest) as string;
    pairs.set(`${ip} ${f.target.port}`, [ip, f.target.port]);
  }
  return [...pairs.values()].map(([ip, port]) => concat(ip, port));
}

/**
 * Forward filter: a forward target's reply that finds no conntrack entry here came before the
 * entering node's state was synchronised (the guest answers within microseconds, the sync takes a
 * fraction of a millisecond). Forwarded untranslated it would confuse the client, and a UDP reply
 * would create an entry that blocks the synchronised one.
 *
 * So such a reply, straight from a guest (its MAC), is steered instead: a copy goes to every other
 * node's guest-bridge IP (`dup`), and the original is dropped here. The entering node has the state
 * (it DNATed the request), so it translates its copy and sends it to the client at once; a node
 * without the state drops its copy with the rule below (a copy's source MAC is a node's, so it is
 * never copied again). Without the steering the guest's SYN-ACK retransmission cost ~1 s per
 * cross-node connection (docs/nat-modes.md).
 */
export function ctSyncForward(view: NodeView): NftChain | undefined {
  const { state, node } = view;
  const peers = state.nodes.filter((n) => n.name !== node.name).map((n) => n.guestBridge.nodeIP);
  const guestMacs = [...new Set(state.guests.map((g) => g.mac))];
  const rules = PROTOCOLS.flatMap((p) => {
    const t = targets(view, p);
    if (t.length === 0) return [];
    // A TCP SYN-ACK without an entry is "invalid"; a UDP reply without one would be "new".
    const states = p === 'tcp' ? match({ ct: { key: 'state' } }, setOf(['invalid', 'new'])) : match({ ct: { key: 'state' } }, 'new', 'in');
    const early = [match(concat(payload('ip', 'saddr'), payload(p, 'sport')), setOf(t)), states];
    const steer =
      peers.length > 0 && guestMacs.length > 0
        ? [
            rule(
              `ct-sync: ${p} replies that beat the state synchronisation go to the other nodes (the entering one has the state)`,
              ...early,
              match(payload('ether', 'saddr'), oneOrSet(guestMacs)),
              ...peers.map((ip) => dupTo(ip, node.guestBridge.interface)),
              { drop: null },
            ),
          ]
        : [];
    return [
      ...steer,
      rule(
        `ct-sync: ${p} replies that beat the state synchronisation are dropped (retransmitted)`,
        ...early,
        { drop: null },
      ),
      ...(peers.length > 1 && guestMacs.length > 0 ? [steeredCopyNotOurs(view, p, t, guestMacs)] : []),
    ];
  });
  if (rules.length === 0) return undefined;
  return { name: 'forward', base: { type: 'filter', hook: 'forward', priority: 0, policy: 'accept' }, rules };
}

/**
 * With more than two nodes a steered copy reaches every other node, not only the entering one;
 * a third node that has meanwhile got the synchronised state would translate its copy too and
 * the client would get the reply twice. A copy (a forward target's reply whose source MAC is not
 * a guest's) is sent on only by the node the flow entered: the one its original destination is.
 */
function steeredCopyNotOurs({ node }: NodeView, p: Protocol, targets: Json[], guestMacs: string[]): NftRule {
  return rule(
    `ct-sync: ${p} early replies copied here by another node are sent on only by the node the flow entered`,
    match(concat(payload('ip', 'saddr'), payload(p, 'sport')), setOf(targets)),
    match(payload('ether', 'saddr'), oneOrSet(guestMacs), '!='),
    match({ ct: { key: 'ip daddr', dir: 'original' } }, node.uplink.publicIP, '!='),
    { drop: null },
  );
}

/** Maps of the forwards entering this node: public port -> guest IP, and -> target port. */
export const ctDstMap = 'ct_dst_tcp';
export const ctDportMap = 'ct_dport_tcp';

export function ctSyncMaps({ forwards, guestIP }: NodeView): NftMap[] {
  const here = forwards.filter((f) => f.protocol === 'tcp');
  return [
    { name: ctDstMap, keyType: 'inet_service', dataType: 'ipv4_addr', elements: sortElements(here.map((f) => ({ key: f.port, value: guestIP.get(f.target.guest) as string }))) },
    { name: ctDportMap, keyType: 'inet_service', dataType: 'inet_service', elements: sortElements(here.map((f) => ({ key: f.port, value: f.target.port }))) },
  ];
}

/**
 * The entering node, after conntrack (-150) and before DNAT (-100): the client's ACK that follows
 * the guest's SYN-ACK usually arrives before the guest node's state update does. This node has
 * only seen the SYN, so conntrack calls the ACK invalid and would not DNAT it; the node's own stack
 * would then answer it with a RST. Such segments are DNATed statelessly instead (same maps as the
 * forwards), so the handshake completes without waiting for a retransmission.
 */
export function ctSyncInvalid(node: NodeSpec): NftChain {
  return {
    name: 'prerouting_invalid',
    base: { type: 'filter', hook: 'prerouting', priority: -150, policy: 'accept' },
    rules: [
      rule(
        'ct-sync: tcp segments that beat the state update are forwarded statelessly',
        match(payload('ip', 'daddr'), node.uplink.publicIP),
        match({ ct: { key: 'state' } }, 'invalid', 'in'),
        mangle(payload('ip', 'daddr'), mapLookup(payload('tcp', 'dport'), ctDstMap)),
        mangle(payload('tcp', 'dport'), mapLookup(payload('tcp', 'dport'), ctDportMap)),
      ),
    ],
  };
}
