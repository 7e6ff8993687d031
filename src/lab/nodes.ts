// `lab up --nodes N`: the lab cluster grown from its seed state (state-example has two nodes) to N
// nodes, deterministically and without I/O, so the result can be unit-tested and shown in the
// lab commit:
//   - node<k>: a copy of the first node (same interface names), the next free guest-subnet
//     address as node IP (above the seed's node IPs, then below them; never the gateway, a guest
//     or the broadcast address) and the next free public IP;
//   - guest<k> on each new node: a copy of the first guest with the next free guest address and a
//     MAC built from the first guest's OUI and that address;
//   - forwards: every forward that enters every node and targets the first guest gets a copy for
//     each new guest (port + the guest's position, so ssh-guest1 2201 -> ssh-guest3 2203); every
//     forward that enters only the first node gets a copy entering each new node, aimed at the
//     guest of the next node (web-node3 -> guest1). So every node's entering traffic reaches
//     guests on other nodes, and every guest is reached through every node.
// The cluster settings that more than two nodes need (a ct-sync multicast group, a stateless-nat
// port stride that fits every tag) are set by labAdjustments (src/lab/repo.ts) from the count.
import { stringify } from 'yaml';
import type { ClusterState, ForwardSpec, GuestSpec, NodeSpec } from '../state/types.js';
import { ipv4ToNumber, numberToIPv4, parseCidr, type IPv4Subnet } from '../state/ipv4.js';
import { DEFAULT_CLIENT_IP, DEFAULT_PUBLIC_SUBNET } from './plan.js';
import type { TextFiles } from './repo.js';
import { labNodesProblem, MAX_LAB_NODES } from './names.js';

export { MAX_LAB_NODES };
/** The sync channel's group when the lab has more than two nodes and the state names none. */
export const LAB_MULTICAST_GROUP = '225.0.0.50';
/** Where the derived forwards go in the lab repository. */
export const LAB_NODES_FORWARDS_FILE = 'forwards/lab-nodes.yaml';
const MAX_PORT = 65535;

/** What --nodes adds to the seed state. */
export interface LabExtension {
  nodes: Array<Omit<NodeSpec, 'source' | 'natTag' | 'statusKey' | 'healthChecks' | 'suspend'>>;
  guests: Array<Omit<GuestSpec, 'source' | 'netns'>>;
  forwards: Array<Omit<ForwardSpec, 'source' | 'health' | 'conntrackCleanup'>>;
}

/** The node count for `--nodes`: undefined keeps the seed's; refused clearly outside [seed, MAX_LAB_NODES]. */
export function labNodeCount(requested: number | undefined, seedNodes: number): number {
  if (requested === undefined) return seedNodes;
  const problem = labNodesProblem(requested);
  if (problem) throw new Error(problem);
  if (requested < seedNodes) throw new Error(`--nodes ${requested}: the seed state already has ${seedNodes} nodes; --nodes only adds nodes (from ${seedNodes} to ${MAX_LAB_NODES})`);
  return requested;
}

/** The stateless-nat port stride for `count` nodes: the seed's (or the default) when every tag fits, else the largest multiple of 1000 that does. */
export function labPortStride(count: number, stride: number): number {
  return (count + 1) * stride - 1 <= MAX_PORT ? stride : Math.floor((MAX_PORT + 1) / (count + 1) / 1000) * 1000;
}

/** The nodes, guests and forwards that grow `state` to `count` nodes (nothing when it has them). */
export function extendLabState(state: ClusterState, count: number, publicSubnet = DEFAULT_PUBLIC_SUBNET, clientIP = DEFAULT_CLIENT_IP): LabExtension {
  const ext: LabExtension = { nodes: [], guests: [], forwards: [] };
  const extra = count - state.nodes.length;
  if (extra <= 0) return ext;
  const [node0] = state.nodes;
  const [guest0] = state.guests;
  if (!node0) throw new Error('--nodes: the seed state has no node to copy');
  if (!guest0) throw new Error('--nodes: the seed state has no guest to copy onto the new nodes');

  const guestNet = parseCidr(state.cluster.guestSubnet);
  const usedGuestNet = new Set([state.cluster.gatewayIP, ...state.nodes.map((n) => n.guestBridge.nodeIP), ...state.guests.map((g) => g.ip)]);
  const usedPublic = new Set([clientIP, ...state.nodes.map((n) => n.uplink.publicIP)]);
  const usedMacs = new Set(state.guests.map((g) => g.mac));
  const nodeNames = new Set(state.nodes.map((n) => n.name));
  const guestNames = new Set(state.guests.map((g) => g.name));
  const oui = guest0.mac.split(':').slice(0, 3).join(':');

  for (let i = 0; i < extra; i++) {
    const name = freeName('node', state.nodes.length + 1 + i, nodeNames);
    const nodeIP = nextFree(guestNet, state.nodes.map((n) => n.guestBridge.nodeIP), usedGuestNet, `a node IP for ${name} in ${state.cluster.guestSubnet}`);
    const publicIP = nextFree(parseCidr(publicSubnet), state.nodes.map((n) => n.uplink.publicIP), usedPublic, `a public IP for ${name} in ${publicSubnet}`);
    ext.nodes.push({ name, uplink: { ...node0.uplink, publicIP }, guestBridge: { ...node0.guestBridge, nodeIP }, trunks: [...node0.trunks], hypervisor: node0.hypervisor });

    const guestName = freeName('guest', state.guests.length + 1 + i, guestNames);
    const ip = nextFree(guestNet, state.guests.map((g) => g.ip), usedGuestNet, `a guest IP for ${guestName} in ${state.cluster.guestSubnet}`);
    const mac = `${oui}:${ip.split('.').slice(1).map((o) => Number(o).toString(16).padStart(2, '0')).join(':')}`;
    if (usedMacs.has(mac)) throw new Error(`--nodes: the MAC ${mac} derived for ${guestName} is already a guest's`);
    usedMacs.add(mac);
    ext.guests.push({ name: guestName, node: name, ip, mac, resources: { ...guest0.resources }, ...(guest0.boot && { boot: { ...guest0.boot } }), restartOnChange: guest0.restartOnChange });
  }

  const guests = [...state.guests, ...ext.guests];
  const nodeOrder = [...state.nodes, ...ext.nodes].map((n) => n.name);
  const used = new Set(state.forwards.map((f) => `${f.protocol} ${f.port}`));
  // Every guest through every node: the first guest's every-node forwards, once per new guest.
  for (const f of state.forwards.filter((f) => f.nodes === undefined && f.target.guest === guest0.name)) {
    for (const g of ext.guests) {
      const port = f.port + guests.indexOf(g);
      if (port > MAX_PORT || used.has(`${f.protocol} ${port}`)) throw new Error(`--nodes: forward ${f.name} cannot be copied for ${g.name}: ${f.protocol} port ${port} is taken or out of range`);
      used.add(`${f.protocol} ${port}`);
      ext.forwards.push({ name: renamed(f.name, guest0.name, g.name), protocol: f.protocol, port, target: { guest: g.name, port: f.target.port } });
    }
  }
  // Each new node's own forwards (like web-node1): to the guest of the next node, across nodes.
  const firstGuestOn = (node: string) => guests.find((g) => g.node === node);
  for (const f of state.forwards.filter((f) => f.nodes?.length === 1 && f.nodes[0] === node0.name)) {
    for (const n of ext.nodes) {
      const next = nodeOrder[(nodeOrder.indexOf(n.name) + 1) % nodeOrder.length]!;
      const target = firstGuestOn(next);
      if (!target) continue;
      ext.forwards.push({ name: renamed(f.name, node0.name, n.name), protocol: f.protocol, port: f.port, nodes: [n.name], target: { guest: target.name, port: f.target.port } });
    }
  }
  return ext;
}

/** The extension as state files (nodes/<n>.yaml, guests/<g>.yaml, one forwards file); refuses to overwrite the seed's. */
export function extensionFiles(ext: LabExtension, count: number, existing: Iterable<string>): TextFiles {
  const files: TextFiles = {};
  const head = (what: string) => `# Added by \`cgw-sync lab up --nodes ${count}\`: ${what}\n`;
  for (const n of ext.nodes) {
    files[`nodes/${n.name}.yaml`] = head(`a copy of the first node with the next free addresses.`) + stringify({ apiVersion: 'cgw-sync/v1', kind: 'Node', ...n });
  }
  for (const g of ext.guests) {
    files[`guests/${g.name}.yaml`] = head(`a copy of the first guest, on ${g.node}.`) + stringify({ apiVersion: 'cgw-sync/v1', kind: 'Guest', ...g });
  }
  if (ext.forwards.length) {
    files[LAB_NODES_FORWARDS_FILE] =
      head('every new guest through every node, and each new node\'s own forwards to a guest on another node.') +
      stringify({ apiVersion: 'cgw-sync/v1', kind: 'Forwards', forwards: ext.forwards });
  }
  const taken = new Set(existing);
  const clash = Object.keys(files).find((f) => taken.has(f));
  if (clash) throw new Error(`--nodes: the seed state already has ${clash}; the lab would overwrite it`);
  return files;
}

/** `<base><n>`, or the next number that is free. */
function freeName(base: string, n: number, taken: Set<string>): string {
  let k = n;
  while (taken.has(`${base}${k}`)) k++;
  taken.add(`${base}${k}`);
  return `${base}${k}`;
}

/** The first free host address above `near`'s highest, else below its lowest; marks it used. */
function nextFree(net: IPv4Subnet, near: string[], used: Set<string>, what: string): string {
  const nums = near.map(ipv4ToNumber);
  const hi = nums.length ? Math.max(...nums) : net.network;
  const lo = nums.length ? Math.min(...nums) : net.broadcast;
  const candidates = function* () {
    for (let a = hi + 1; a < net.broadcast; a++) yield a;
    for (let a = lo - 1; a > net.network; a--) yield a;
  };
  for (const a of candidates()) {
    const ip = numberToIPv4(a);
    if (!used.has(ip)) {
      used.add(ip);
      return ip;
    }
  }
  throw new Error(`--nodes: no free address left for ${what}`);
}

function renamed(name: string, from: string, to: string): string {
  return name.includes(from) ? name.replace(from, to) : `${name}-${to}`;
}
