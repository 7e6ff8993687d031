// The lab's IPv6 addressing plan (`lab up --ipv6`, and the dual-stack tests): every IPv4 address
// of the state gets a twin whose last group is the IPv4 address's last octet read as hex digits
// (10.5.5.201 -> fd05:5:5::201, 192.168.122.11 -> fd00:122::11), so a reader sees at once which
// addresses belong together. Pure.
import { isMap, parseDocument, type Document } from 'yaml';
import type { ClusterState, GuestSpec, NodeSpec } from '../state/types.js';
import { canonicalIPv6, ipv6SubnetContains, parseIPv6, parseIPv6Cidr } from '../state/ipv6.js';
import type { LabGuest, LabNode, LabOptions, LabPlan, LabStep } from './plan.js';

export const LAB_IPV6 = {
  /** The guest subnet beside 10.5.5.0/24. */
  guestSubnet: 'fd05:5:5::/64',
  /** The public segment beside 192.168.122.0/24 (lab plan: uplinks and the client). */
  publicSubnet: 'fd00:122::/64',
  gatewayLinkLocal: 'fe80::1',
} as const;

/** The IPv6 twin of an IPv4 address in a /64 given by its CIDR ("fd05:5:5::/64"). */
export function ipv6Twin(ipv4: string, subnet: string): string {
  const lastOctet = ipv4.split('.').pop() as string;
  return `${subnet.split('::/')[0]}::${lastOctet}`;
}

type TextFiles = Record<string, string>;

/** A state's YAML files made dual stack (cluster ipv6, node and guest addresses); only changed files. */
export function dualStackFiles(files: TextFiles): TextFiles {
  const changed: TextFiles = {};
  const edit = (file: string, change: (doc: Document) => void) => {
    const doc = parseDocument(files[file] as string);
    if (!isMap(doc.contents)) return;
    change(doc);
    changed[file] = doc.toString({ flowCollectionPadding: false });
  };
  const guest = (v4: unknown) => ipv6Twin(String(v4), LAB_IPV6.guestSubnet);
  for (const file of Object.keys(files).sort()) {
    if (file === 'cluster.yaml') {
      edit(file, (doc) => doc.set('ipv6', { guestSubnet: LAB_IPV6.guestSubnet, gatewayIP: guest(doc.get('gatewayIP')), gatewayLinkLocal: LAB_IPV6.gatewayLinkLocal }));
    } else if (/^nodes\/[^/]+\.ya?ml$/.test(file)) {
      edit(file, (doc) => {
        doc.setIn(['uplink', 'publicIPv6'], ipv6Twin(String(doc.getIn(['uplink', 'publicIP'])), LAB_IPV6.publicSubnet));
        doc.setIn(['guestBridge', 'nodeIPv6'], guest(doc.getIn(['guestBridge', 'nodeIP'])));
      });
    } else if (/^guests\/[^/]+\.ya?ml$/.test(file)) {
      edit(file, (doc) => doc.set('ipv6', guest(doc.get('ip'))));
    }
  }
  return changed;
}

/** A lab node or guest with its IPv6 address from the state (canonical), when it has one. */
export function withIPv6<T extends LabNode | LabGuest>(x: T, spec: NodeSpec | GuestSpec): T {
  if ('uplink' in spec) {
    const { publicIPv6 } = spec.uplink;
    const { nodeIPv6 } = spec.guestBridge;
    return publicIPv6 === undefined || nodeIPv6 === undefined ? x : { ...x, publicIPv6: canonicalIPv6(publicIPv6), nodeIPv6: canonicalIPv6(nodeIPv6) };
  }
  return spec.ipv6 === undefined ? x : { ...x, ipv6: canonicalIPv6(spec.ipv6) };
}

/**
 * The lab's IPv6 steps for a dual-stack state: the client's address on the public segment, each
 * node's public address, forwarding, its own and the shared gateway's addresses (global and
 * link-local) on the guest bridge. Every address without duplicate address detection: the shared
 * ones exist on every node by design, and the others are usable at once. The shared ones are
 * also deprecated (preferred_lft 0): they still receive, but the node never picks them as the
 * source of its own packets (RFC 6724 rule 3), so its neighbour solicitations towards other
 * nodes' guests come from its own addresses, which the trunks let through. undefined for IPv4 only.
 */
export function labDualStack(state: ClusterState, opts: LabOptions) {
  const v6 = state.cluster.ipv6;
  if (!v6) return undefined;
  const publicSubnet = opts.publicSubnet6 ?? LAB_IPV6.publicSubnet;
  const pub = parseIPv6Cidr(publicSubnet);
  if (!pub) throw new Error(`lab IPv6 public subnet ${publicSubnet} is not an IPv6 subnet`);
  const clientIPv6 = canonicalIPv6(opts.clientIPv6 ?? ipv6Twin(opts.clientIP ?? '0.0.0.100', publicSubnet));
  for (const addr of [clientIPv6, ...state.nodes.map((n) => n.uplink.publicIPv6 ?? '')]) {
    const n = parseIPv6(addr);
    if (n === undefined || !ipv6SubnetContains(pub, n)) throw new Error(`lab: ${addr || 'a node without publicIPv6'} is not on the lab's IPv6 public segment ${publicSubnet}`);
  }
  const guestLen = v6.guestSubnet.split('/')[1];
  const addr = (ns: string, dev: string, cidr: string, shared = false): LabStep => ({ kind: 'addr', ns, dev, cidr, flags: shared ? ['nodad', 'preferred_lft', '0'] : ['nodad'] });
  return {
    clientIPv6,
    clientStep: (client: LabPlan['client']): LabStep => addr(client.ns, client.dev, `${clientIPv6}/${pub.prefix}`),
    nodeSteps: (node: LabNode): LabStep[] => [
      { kind: 'sysctl', ns: node.ns, key: 'net.ipv6.conf.all.forwarding', value: '1' },
      // Bridged IPv6 passes the node's ip6 hooks exactly when bridged IPv4 passes its ip hooks.
      { kind: 'sysctl', ns: node.ns, key: 'net.bridge.bridge-nf-call-ip6tables', value: (opts.brNetfilter ?? true) ? '1' : '0' },
      addr(node.ns, node.uplink, `${node.publicIPv6}/${pub.prefix}`),
      addr(node.ns, node.guestBridge, `${node.nodeIPv6}/${guestLen}`),
      addr(node.ns, node.guestBridge, `${canonicalIPv6(v6.gatewayIP)}/${guestLen}`, true),
      addr(node.ns, node.guestBridge, `${canonicalIPv6(v6.gatewayLinkLocal)}/64`, true),
    ],
  };
}
