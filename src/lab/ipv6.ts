// The lab's IPv6 addressing plan (`lab up --ipv6`, and the dual-stack tests): every IPv4 address
// of the state gets a twin whose last group is the IPv4 address's last octet read as hex digits
// (10.5.5.201 -> fd05:5:5::201, 192.168.122.11 -> fd00:122::11), so a reader sees at once which
// addresses belong together. Pure.
import { isMap, parseDocument, type Document } from 'yaml';

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
