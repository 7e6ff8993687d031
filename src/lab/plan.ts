// The lab plan: which network namespaces, bridges, veths, addresses and sysctls make up the
// convergent-gateway lab for a cluster state (any number of nodes, their trunks on one segment).
// Pure (no I/O), so it can be unit-tested and printed; src/lab/topology.ts executes it.
//
// Everything the lab creates lives in namespaces named `<prefix>...`:
//   <p>pub      bridge br0: the public segment (e.g. 192.168.122.0/24)
//   <p>client   eth0 with the client address on the public segment; no route to the guest subnet
//   <p>trunk    bridge br0: the guest VLAN between the nodes
//   <p><node>   one per node: the uplink bridge (e.g. xenbr0, public IP) with port pub0 to the public
//               segment; the guest bridge (e.g. guestbr0, node IP + shared gateway IP) with the
//               trunk veths (e.g. eth1.100) as ports
//   <p><node>.<guest>   the node's netns guests (made by the netns guest driver)
// With `lab up --guests qemu` the nodes' hypervisor is qemu and each guest is a VM whose qemu runs
// in its node's namespace, NIC a tap on the guest bridge; there is no guest namespace then, and
// what must run inside the guest goes through its serial shell (LabGuest.vm, src/lab/guest-exec.ts).
// Node names, addresses and interface names come from the state; the lab only adds the two
// segments and the client.
import type { ClusterState, GuestSpec, NodeSpec } from '../state/types.js';
import { parseCidr, subnetContains } from '../state/ipv4.js';
import { qemuRunDir } from '../guests/index.js';
import { join } from 'node:path';
import { labDualStack, withIPv6 } from './ipv6.js';

export interface LabOptions {
  /** Prefix of every namespace the lab creates, e.g. `cgwlab-`. Must end in '-'. */
  prefix: string;
  /**
   * net.bridge.bridge-nf-call-iptables in the node namespaces: whether bridged IPv4 traffic passes
   * the node's ip-family hooks. Default true (what a new namespace gets on this kernel).
   */
  brNetfilter?: boolean;
  /** The public segment, default 192.168.122.0/24. Every node's public IP must be inside it. */
  publicSubnet?: string;
  /** The client's address on the public segment, default 192.168.122.100. */
  clientIP?: string;
  /** The lab directory: where a VM guest's serial socket is (under its node agent's run folder). */
  labDir?: string;
  /** Dual stack: the public segment's IPv6 subnet (default fd00:122::/64) and the client's address in it. */
  publicSubnet6?: string;
  clientIPv6?: string;
}

export const DEFAULT_PUBLIC_SUBNET = '192.168.122.0/24';
export const DEFAULT_CLIENT_IP = '192.168.122.100';

/** A network interface inside a namespace. */
export interface NsDev {
  ns: string;
  dev: string;
}

export type LabStep =
  | { kind: 'netns'; ns: string }
  | { kind: 'sysctl'; ns: string; key: string; value: string }
  /** mac: the bridge's pinned MAC; absent: its own random one, pinned (src/netns/netns.ts addBridge). */
  | { kind: 'bridge'; ns: string; name: string; mac?: string }
  | { kind: 'veth'; a: NsDev; b: NsDev }
  | { kind: 'master'; ns: string; dev: string; bridge: string }
  /** flags: what `ip addr add` takes after the device, e.g. nodad (src/lab/ipv6.ts). */
  | { kind: 'addr'; ns: string; dev: string; cidr: string; flags?: string[] }
  | { kind: 'up'; ns: string; dev: string };

export interface LabNode {
  name: string;
  ns: string;
  publicIP: string;
  nodeIP: string;
  uplink: string;
  guestBridge: string;
  /** The guest bridge's MAC from the state (guestBridge.mac); absent: a random one. */
  guestBridgeMac?: string;
  trunks: string[];
  /** The trunk that is cabled to the guest VLAN; the others have no carrier (see planLab). */
  activeTrunk?: string;
  /** Netns guest driver prefix for this node's guests: `<p><node>.` */
  guestPrefix: string;
  /** Dual stack (canonical form). */
  publicIPv6?: string;
  nodeIPv6?: string;
}

export interface LabGuest {
  name: string;
  node: string;
  /** The guest's namespace and interface (the netns guest driver's eth0). */
  ns: string;
  dev: string;
  ip: string;
  /** Dual stack: the guest's IPv6 address (canonical form). */
  ipv6?: string;
  mac: string;
  /** A qemu guest (the node's hypervisor is qemu): its serial shell socket. No namespace then. */
  vm?: { serial: string };
}

export interface LabPlan {
  prefix: string;
  brNetfilter: boolean;
  /** Namespaces `up` creates itself, in creation order (guest namespaces come on top). */
  namespaces: string[];
  public: { ns: string; bridge: string; subnet: string };
  client: { ns: string; dev: string; ip: string; ipv6?: string };
  trunk: { ns: string; bridge: string };
  nodes: LabNode[];
  guests: LabGuest[];
  steps: LabStep[];
}

/** Interface names the lab itself uses inside a node namespace. */
const NODE_UPLINK_PORT = 'pub0';
const SEGMENT_BRIDGE = 'br0';
const CLIENT_DEV = 'eth0';
const GUEST_DEV = 'eth0'; // fixed by the netns guest driver
const RESERVED_NAMES = ['pub', 'client', 'trunk'];
const MAX_IFNAME = 15; // Linux IFNAMSIZ - 1

/**
 * A prefix selects the namespaces `down` deletes, so it must be specific: at least 3 characters
 * before a final '-', e.g. `cgwlab-` or `cgwt1234a-`.
 */
export function assertLabPrefix(prefix: string): void {
  if (!/^[a-z0-9][a-z0-9_.-]{2,30}-$/.test(prefix)) {
    throw new Error(`lab prefix ${JSON.stringify(prefix)} is not usable: 4-32 of [a-z0-9_.-], ending in '-'`);
  }
}

export function planLab(state: ClusterState, opts: LabOptions): LabPlan {
  assertLabPrefix(opts.prefix);
  const p = opts.prefix;
  const brNetfilter = opts.brNetfilter ?? true;
  const publicSubnet = opts.publicSubnet ?? DEFAULT_PUBLIC_SUBNET;
  const clientIP = opts.clientIP ?? DEFAULT_CLIENT_IP;
  const pub = parseCidr(publicSubnet);
  const guestLen = parseCidr(state.cluster.guestSubnet).prefix;

  const nodes = state.nodes.map((n) => withIPv6(labNode(p, n), n));
  checkNodes(state.nodes, pub, publicSubnet);
  if (!subnetContains(pub, clientIP)) throw new Error(`lab client IP ${clientIP} is not in ${publicSubnet}`);

  const publicNs = { ns: `${p}pub`, bridge: SEGMENT_BRIDGE, subnet: publicSubnet };
  const dual = labDualStack(state, opts);
  const client = { ns: `${p}client`, dev: CLIENT_DEV, ip: clientIP, ...(dual && { ipv6: dual.clientIPv6 }) };
  const trunk = { ns: `${p}trunk`, bridge: SEGMENT_BRIDGE };
  const namespaces = [publicNs.ns, client.ns, trunk.ns, ...nodes.map((n) => n.ns)];

  const steps: LabStep[] = [];
  for (const ns of namespaces) {
    steps.push({ kind: 'netns', ns });
    // IPv6 is not part of an IPv4-only lab: without it the links stay quiet (no link-local, RS,
    // MLD). Dual stack keeps it on the client and the nodes (the segments only bridge).
    if (dual && (ns === client.ns || nodes.some((n) => n.ns === ns))) continue;
    steps.push({ kind: 'sysctl', ns, key: 'net.ipv6.conf.all.disable_ipv6', value: '1' });
    steps.push({ kind: 'sysctl', ns, key: 'net.ipv6.conf.default.disable_ipv6', value: '1' });
  }
  steps.push({ kind: 'bridge', ns: publicNs.ns, name: publicNs.bridge });
  steps.push({ kind: 'bridge', ns: trunk.ns, name: trunk.bridge });

  // The client: on-link with the node public IPs only.
  steps.push(...cable({ ns: publicNs.ns, dev: 'client' }, { ns: client.ns, dev: client.dev }, publicNs.bridge));
  steps.push({ kind: 'addr', ns: client.ns, dev: client.dev, cidr: `${clientIP}/${pub.prefix}` });
  if (dual) steps.push(dual.clientStep(client));

  nodes.forEach((node, i) => {
    const ns = node.ns;
    steps.push({ kind: 'sysctl', ns, key: 'net.ipv4.ip_forward', value: '1' });
    steps.push({ kind: 'sysctl', ns, key: 'net.bridge.bridge-nf-call-iptables', value: brNetfilter ? '1' : '0' });
    steps.push({ kind: 'bridge', ns, name: node.uplink });
    steps.push({ kind: 'bridge', ns, name: node.guestBridge, ...(node.guestBridgeMac !== undefined && { mac: node.guestBridgeMac }) });
    // Uplink: node port pub0 on the uplink bridge, peer up<i> on the public segment.
    steps.push(...cable({ ns: publicNs.ns, dev: `up${i + 1}` }, { ns, dev: NODE_UPLINK_PORT }, publicNs.bridge));
    steps.push({ kind: 'master', ns, dev: NODE_UPLINK_PORT, bridge: node.uplink });
    steps.push({ kind: 'addr', ns, dev: node.uplink, cidr: `${node.publicIP}/${pub.prefix}` });
    // Guest bridge: the node IP first, so it is the primary address and the source the node picks
    // on the guest subnet; the shared gateway IP second.
    steps.push({ kind: 'addr', ns, dev: node.guestBridge, cidr: `${node.nodeIP}/${guestLen}` });
    steps.push({ kind: 'addr', ns, dev: node.guestBridge, cidr: `${state.cluster.gatewayIP}/${guestLen}` });
    if (dual) steps.push(...dual.nodeSteps(node));
    node.trunks.forEach((t, j) => {
      const peer = { ns: trunk.ns, dev: `t${i + 1}.${j + 1}` };
      if (t === node.activeTrunk) {
        steps.push(...cable(peer, { ns, dev: t }, trunk.bridge));
      } else {
        // A second cabled trunk between the same two bridges would be a loop (no STP here): the
        // extra trunks exist, so filters on them apply to a real device, but their peer stays
        // down and unattached, like an unplugged standby link.
        steps.push({ kind: 'veth', a: peer, b: { ns, dev: t } });
        steps.push({ kind: 'up', ns, dev: t });
      }
      steps.push({ kind: 'master', ns, dev: t, bridge: node.guestBridge });
    });
  });

  const nodeByName = new Map(nodes.map((n) => [n.name, n]));
  const hypervisor = new Map(state.nodes.map((n) => [n.name, n.hypervisor]));
  const guests = state.guests.map((g) => withIPv6(labGuest(g, nodeByName, hypervisor.get(g.node) === 'qemu' ? opts.labDir : undefined), g));
  return { prefix: p, brNetfilter, namespaces, public: publicNs, client, trunk, nodes, guests, steps };
}

/** Steps for a veth from `segment` (attached to bridge `bridge` there) to `end`, both up. */
function cable(segment: NsDev, end: NsDev, bridge: string): LabStep[] {
  return [
    { kind: 'veth', a: segment, b: end },
    { kind: 'master', ns: segment.ns, dev: segment.dev, bridge },
    { kind: 'up', ns: segment.ns, dev: segment.dev },
    { kind: 'up', ns: end.ns, dev: end.dev },
  ];
}

function labNode(prefix: string, n: NodeSpec): LabNode {
  return {
    name: n.name,
    ns: prefix + n.name,
    publicIP: n.uplink.publicIP,
    nodeIP: n.guestBridge.nodeIP,
    uplink: n.uplink.interface,
    guestBridge: n.guestBridge.interface,
    ...(n.guestBridge.mac !== undefined && { guestBridgeMac: n.guestBridge.mac }),
    trunks: [...n.trunks],
    activeTrunk: n.trunks[0],
    // Node names have no '.', so `<p><node>.` never matches another node's namespace.
    guestPrefix: `${prefix}${n.name}.`,
  };
}

function labGuest(g: GuestSpec, nodes: Map<string, LabNode>, vmLabDir: string | undefined): LabGuest {
  const node = nodes.get(g.node);
  if (!node) throw new Error(`guest ${g.name} runs on unknown node ${g.node}`);
  const guest = { name: g.name, node: g.node, ns: node.guestPrefix + g.name, dev: GUEST_DEV, ip: g.ip, mac: g.mac };
  if (vmLabDir === undefined) return guest;
  // The node agent's guests.runDir is <lab dir>/<node>/run (lab.ts agentConfigYaml).
  return { ...guest, vm: { serial: join(qemuRunDir(labNodeRunDir(vmLabDir, node.name), node.ns), `${g.name}.serial1`) } };
}

/** The guests.runDir of a lab node's agent. */
export function labNodeRunDir(labDir: string, node: string): string {
  return join(labDir, node, 'run');
}

/** Problems the state validation does not catch because they only matter in the lab. */
function checkNodes(nodes: NodeSpec[], pub: ReturnType<typeof parseCidr>, publicSubnet: string): void {
  for (const n of nodes) {
    if (RESERVED_NAMES.includes(n.name)) throw new Error(`node name ${n.name} is reserved in the lab (${RESERVED_NAMES.join(', ')})`);
    if (!subnetContains(pub, n.uplink.publicIP)) {
      throw new Error(`node ${n.name}: public IP ${n.uplink.publicIP} is not on the lab's public segment ${publicSubnet}`);
    }
    const names = [n.uplink.interface, n.guestBridge.interface, ...n.trunks, NODE_UPLINK_PORT, 'lo'];
    const dup = names.find((x, i) => names.indexOf(x) !== i);
    if (dup) throw new Error(`node ${n.name}: interface name ${dup} is used twice (the lab itself uses ${NODE_UPLINK_PORT})`);
    const long = names.find((x) => x.length > MAX_IFNAME);
    if (long) throw new Error(`node ${n.name}: interface name ${long} is longer than ${MAX_IFNAME} characters`);
  }
}

/** One line per step, for `lab up --dry-run` style output and error messages. */
export function describeStep(s: LabStep): string {
  switch (s.kind) {
    case 'netns':
      return `ip netns add ${s.ns}`;
    case 'sysctl':
      return `[${s.ns}] sysctl ${s.key}=${s.value}`;
    case 'bridge':
      return `[${s.ns}] ip link add ${s.name} type bridge${s.mac ? ` (address ${s.mac})` : ''}`;
    case 'veth':
      return `[${s.a.ns}] ip link add ${s.a.dev} type veth peer ${s.b.dev} netns ${s.b.ns}`;
    case 'master':
      return `[${s.ns}] ip link set ${s.dev} master ${s.bridge}`;
    case 'addr':
      return `[${s.ns}] ip addr add ${s.cidr} dev ${s.dev}${s.flags ? ` ${s.flags.join(' ')}` : ''}`;
    case 'up':
      return `[${s.ns}] ip link set ${s.dev} up`;
  }
}
