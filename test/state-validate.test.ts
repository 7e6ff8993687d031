// A corpus of broken state directories. Each case copies state-example/ to a temporary directory,
// applies a few edits, loads it, and expects exactly the listed diagnostics (file:line:column, field,
// and a substring of the message); nothing more, so spurious follow-up errors fail the test too.
import { cpSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { formatDiagnostics, StateError } from '../src/state/diagnostics.js';
import { loadState, loadStateOrThrow } from '../src/state/load.js';
import type { Diagnostic } from '../src/state/types.js';

const exampleDir = fileURLToPath(new URL('../state-example/', import.meta.url));
const scratch = mkdtempSync(path.join(os.tmpdir(), 'cgw-state-validate-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Changes one file of the copied state directory. */
type Edit = (dir: string) => void;

/** Replaces `from` (which must occur exactly once, so an edit can never silently miss) by `to`. */
function replace(file: string, from: string, to: string): Edit {
  return (dir) => {
    const text = readFileSync(path.join(dir, file), 'utf8');
    const count = text.split(from).length - 1;
    if (count !== 1) throw new Error(`test setup: ${file} contains ${JSON.stringify(from)} ${count} times, not once`);
    writeFileSync(path.join(dir, file), text.replace(from, to));
  };
}
const write = (file: string, text: string): Edit => (dir) => writeFileSync(path.join(dir, file), text);
const remove = (file: string): Edit => (dir) => unlinkSync(path.join(dir, file));
/** Copies an example file to a new name, with replacements applied to the copy. */
const copy = (from: string, to: string, ...replacements: Array<[string, string]>): Edit => (dir) => {
  writeFileSync(path.join(dir, to), readFileSync(path.join(dir, from), 'utf8'));
  for (const [a, b] of replacements) replace(to, a, b)(dir);
};

/** Pins a node's bridge MAC in the state (guestBridge.mac, line 15). */
const bridgeMac = (node: 'node1' | 'node2', mac: string): Edit => {
  const ip = node === 'node1' ? '10.5.5.251' : '10.5.5.252';
  return replace(`nodes/${node}.yaml`, `  nodeIP: ${ip}\n`, `  nodeIP: ${ip}\n  mac: "${mac}"\n`);
};
/** A shared gateway MAC (cluster.yaml line 12) with both nodes' bridge MACs. */
const sharedMac = (quoted: string): Edit[] => [
  replace('cluster.yaml', 'gatewayIP: 10.5.5.254\n', `gatewayIP: 10.5.5.254\ngatewayMAC: ${quoted}\n`),
  bridgeMac('node1', '02:cc:00:00:00:01'),
  bridgeMac('node2', '02:cc:00:00:00:02'),
];

let caseNumber = 0;
async function loadEdited(edits: Edit[]): Promise<{ dir: string; diagnostics: Diagnostic[] }> {
  const dir = path.join(scratch, String(caseNumber++));
  cpSync(exampleDir, dir, { recursive: true });
  for (const edit of edits) edit(dir);
  return { dir, diagnostics: (await loadState(dir)).diagnostics };
}

/** An expected diagnostic: "file:line:column", the field, and part of the message. */
function at(where: string, field: string, message: string) {
  const [file, line, column] = where.split(':');
  return { file, line: Number(line), column: Number(column), field, message: expect.stringContaining(message) };
}

interface BadCase {
  name: string;
  edits: Edit[];
  expected: ReturnType<typeof at>[];
}

const INTERFACE_RULE =
  "must be a Linux interface name: 1-15 characters from A-Z, a-z, 0-9, '_', '.', '-', starting with a letter or digit";

const badCases: BadCase[] = [
  // --- YAML syntax
  {
    name: 'YAML syntax error',
    edits: [replace('guests/guest1.yaml', 'ip: 10.5.5.201', 'ip: 10.5.5.201: x')],
    // The broken guest still declares "guest1", so the forwards to it are not reported as well.
    expected: [at('guests/guest1.yaml:8:5', '', 'YAML syntax: Nested mappings are not allowed')],
  },
  {
    name: 'duplicate YAML key',
    edits: [replace('nodes/node2.yaml', 'hypervisor: xen', 'hypervisor: xen\nhypervisor: qemu')],
    expected: [at('nodes/node2.yaml:17:1', '', 'YAML syntax: Map keys must be unique')],
  },
  {
    name: 'two YAML documents in one file',
    edits: [replace('forwards/ntp.yaml', 'forwards:\n', '---\nforwards:\n')],
    expected: [at('forwards/ntp.yaml:7:1', '', 'exactly one document')],
  },
  {
    name: 'empty file',
    edits: [write('guests/spare.yaml', '# nothing here yet\n')],
    expected: [at('guests/spare.yaml:1:1', '', 'empty document; expected kind Guest')],
  },
  // --- schema
  {
    name: 'wrong type',
    edits: [replace('guests/guest1.yaml', 'vcpus: 1', 'vcpus: one')],
    expected: [at('guests/guest1.yaml:12:10', 'resources.vcpus', 'must be an integer (got "one")')],
  },
  {
    name: 'mapping where a list is expected',
    edits: [replace('nodes/node2.yaml', 'trunks: [eth1.100, eth2.100]', 'trunks: { a: eth1.100 }')],
    expected: [at('nodes/node2.yaml:15:9', 'trunks', 'must be a list (got a mapping)')],
  },
  {
    name: 'unknown property',
    edits: [replace('nodes/node1.yaml', 'hypervisor: xen', 'hypervisor: xen\nbridge: br0')],
    expected: [at('nodes/node1.yaml:17:1', 'bridge', 'unknown property "bridge"; allowed: apiVersion, kind, name, uplink')],
  },
  {
    name: 'misspelled property: unknown one reported with a hint, required one reported missing',
    edits: [replace('guests/guest1.yaml', 'memoryMiB: 1024', 'memoryMB: 1024')],
    expected: [
      at('guests/guest1.yaml:11:3', 'resources.memoryMB', 'unknown property "memoryMB" (did you mean "memoryMiB"?)'),
      at('guests/guest1.yaml:11:3', 'resources.memoryMiB', 'missing required property "memoryMiB"'),
    ],
  },
  {
    name: 'missing required field (reported at the mapping that lacks it)',
    edits: [replace('nodes/node1.yaml', '  nodeIP: 10.5.5.251\n', '')],
    expected: [at('nodes/node1.yaml:13:3', 'guestBridge.nodeIP', 'missing required property "nodeIP"')],
  },
  {
    name: 'empty value',
    edits: [replace('nodes/node1.yaml', 'publicIP: 192.168.122.11', 'publicIP:')],
    expected: [at('nodes/node1.yaml:11:3', 'uplink.publicIP', 'must be a string (got nothing)')],
  },
  {
    name: 'wrong apiVersion',
    edits: [replace('cluster.yaml', 'apiVersion: cgw-sync/v1', 'apiVersion: cgw-sync/v2')],
    expected: [at('cluster.yaml:7:13', 'apiVersion', 'must be "cgw-sync/v1" (got "cgw-sync/v2")')],
  },
  {
    name: 'value not in enum',
    edits: [replace('nodes/node1.yaml', 'hypervisor: xen', 'hypervisor: kvm')],
    expected: [at('nodes/node1.yaml:16:13', 'hypervisor', 'must be one of qemu, xen, netns (got "kvm")')],
  },
  {
    name: 'invalid IPv4 address',
    edits: [replace('guests/guest2.yaml', 'ip: 10.5.5.202', 'ip: 10.5.5.300')],
    expected: [at('guests/guest2.yaml:8:5', 'ip', 'must be an IPv4 address, e.g. 10.5.5.201 (got "10.5.5.300")')],
  },
  {
    name: 'port out of range',
    edits: [replace('forwards/ssh.yaml', 'port: 2202', 'port: 70000')],
    expected: [at('forwards/ssh.yaml:14:11', 'forwards[1].port', 'must be <= 65535 (got 70000)')],
  },
  {
    name: 'nft injection through an interface name',
    edits: [replace('nodes/node1.yaml', 'interface: xenbr0', 'interface: "eth0; flush ruleset"')],
    expected: [at('nodes/node1.yaml:10:14', 'uplink.interface', `${INTERFACE_RULE} (got "eth0; flush ruleset")`)],
  },
  {
    name: 'nft injection through a table name',
    edits: [replace('cluster.yaml', 'nat: cgw_nat', 'nat: "cgw_nat { }"')],
    expected: [at('cluster.yaml:20:8', 'tables.nat', "must be a table name starting with 'cgw_'")],
  },
  {
    name: 'interface name too long for the kernel (16 characters)',
    edits: [replace('nodes/node1.yaml', 'interface: guestbr0', 'interface: guestbridge01234')],
    expected: [at('nodes/node1.yaml:13:14', 'guestBridge.interface', `${INTERFACE_RULE} (got "guestbridge01234")`)],
  },
  {
    name: 'interface named ".."',
    edits: [replace('nodes/node2.yaml', 'interface: guestbr0', 'interface: ".."')],
    expected: [at('nodes/node2.yaml:13:14', 'guestBridge.interface', INTERFACE_RULE)],
  },
  {
    name: 'upper-case object name',
    edits: [replace('forwards/ntp.yaml', 'name: ntp-guest2', 'name: NTP-guest2')],
    expected: [at('forwards/ntp.yaml:12:11', 'forwards[1].name', 'must be a name of 1-63 characters')],
  },
  {
    name: 'same trunk listed twice',
    edits: [replace('nodes/node1.yaml', '[eth1.100, eth2.100]', '[eth1.100, eth1.100]')],
    expected: [at('nodes/node1.yaml:15:20', 'trunks[1]', 'duplicate entry: items 0 and 1 are equal')],
  },
  // --- files and kinds
  {
    name: 'missing cluster.yaml',
    edits: [remove('cluster.yaml')],
    expected: [at('cluster.yaml:1:1', '', 'missing: a state directory needs cluster.yaml')],
  },
  {
    name: 'no nodes (and everything that referenced them)',
    edits: [remove('nodes/node1.yaml'), remove('nodes/node2.yaml')],
    expected: [
      at('forwards/web.yaml:13:13', 'forwards[0].nodes[0]', 'unknown node "node1" (no nodes defined)'),
      at('forwards/web.yaml:18:13', 'forwards[1].nodes[0]', 'unknown node "node2" (no nodes defined)'),
      at('guests/guest1.yaml:7:7', 'node', 'unknown node "node1"'),
      at('guests/guest2.yaml:7:7', 'node', 'unknown node "node2"'),
      at('nodes/:1:1', '', 'no nodes: add one nodes/<name>.yaml'),
    ],
  },
  {
    name: 'unknown kind',
    edits: [replace('nodes/node2.yaml', 'kind: Node', 'kind: Nodes')],
    expected: [at('nodes/node2.yaml:7:7', 'kind', 'unknown kind "Nodes" (expected Node; kinds are Cluster, Node, Guest, Forwards)')],
  },
  {
    name: 'kind does not match its folder',
    edits: [replace('guests/guest2.yaml', 'kind: Guest', 'kind: Node')],
    expected: [at('guests/guest2.yaml:5:7', 'kind', 'a Node document does not belong in guests/ (expected kind Guest)')],
  },
  // --- references
  {
    name: 'guest on an unknown node',
    edits: [replace('guests/guest1.yaml', 'node: node1', 'node: node3')],
    expected: [at('guests/guest1.yaml:7:7', 'node', 'unknown node "node3" (defined: node1, node2)')],
  },
  {
    name: 'forward to an unknown guest',
    edits: [replace('forwards/ssh.yaml', 'guest: guest1', 'guest: guest9')],
    expected: [at('forwards/ssh.yaml:11:22', 'forwards[0].target.guest', 'unknown guest "guest9" (defined: guest1, guest2)')],
  },
  {
    name: 'forward entering on an unknown node',
    edits: [replace('forwards/web.yaml', 'nodes: [node1]', 'nodes: [node7]')],
    expected: [at('forwards/web.yaml:13:13', 'forwards[0].nodes[0]', 'unknown node "node7"')],
  },
  // --- uniqueness
  {
    name: 'duplicate guest IP',
    edits: [replace('guests/guest2.yaml', 'ip: 10.5.5.202', 'ip: 10.5.5.201')],
    expected: [at('guests/guest2.yaml:8:5', 'ip', '10.5.5.201 is already used as ip of guest "guest1" (guests/guest1.yaml:8:5)')],
  },
  {
    name: 'guest IP equal to a node IP',
    edits: [replace('guests/guest2.yaml', 'ip: 10.5.5.202', 'ip: 10.5.5.252')],
    expected: [at('guests/guest2.yaml:8:5', 'ip', 'already used as nodeIP of node "node2" (nodes/node2.yaml:14:11)')],
  },
  {
    name: 'duplicate MAC, whatever the case',
    edits: [replace('guests/guest2.yaml', '"00:16:3e:05:05:ca"', '"00:16:3E:05:05:C9"')],
    expected: [at('guests/guest2.yaml:9:6', 'mac', '00:16:3e:05:05:c9 is already used as mac of guest "guest1" (guests/guest1.yaml:9:6)')],
  },
  {
    name: 'multicast MAC',
    edits: [replace('guests/guest2.yaml', '"00:16:3e:05:05:ca"', '"01:16:3e:05:05:ca"')],
    expected: [at('guests/guest2.yaml:9:6', 'mac', 'is a multicast address')],
  },
  // --- the shared gateway MAC (cluster gatewayMAC, node guestBridge.mac): untrusted, refused strictly
  {
    name: 'shared gateway MAC that is multicast',
    edits: [...sharedMac('"03:00:5e:05:05:fe"')],
    expected: [at('cluster.yaml:12:13', 'gatewayMAC', '03:00:5e:05:05:fe is a multicast address (odd first octet); it must be a unicast MAC: every node answers ARP for 10.5.5.254 with it')],
  },
  {
    name: 'shared gateway MAC of all zeros',
    edits: [...sharedMac('"00:00:00:00:00:00"')],
    expected: [at('cluster.yaml:12:13', 'gatewayMAC', '00:00:00:00:00:00 is not a usable address')],
  },
  {
    name: 'shared gateway MAC that is a guest\'s MAC, whatever the case',
    edits: [...sharedMac('"00:16:3E:05:05:CA"')],
    expected: [at('cluster.yaml:12:13', 'gatewayMAC', '00:16:3e:05:05:ca is already used as mac of guest "guest2" (guests/guest2.yaml:9:6); the shared gateway MAC must belong to no guest and no node')],
  },
  {
    name: 'shared gateway MAC that is a node\'s bridge MAC',
    edits: [...sharedMac('"02:cc:00:00:00:02"')],
    expected: [at('cluster.yaml:12:13', 'gatewayMAC', 'already used as guestBridge.mac of node "node2" (nodes/node2.yaml:15:8)')],
  },
  {
    name: 'shared gateway MAC without the nodes\' bridge MACs',
    edits: [replace('cluster.yaml', 'gatewayIP: 10.5.5.254\n', 'gatewayIP: 10.5.5.254\ngatewayMAC: "02:00:5e:05:05:fe"\n'), bridgeMac('node1', '02:cc:00:00:00:01')],
    expected: [at('nodes/node2.yaml:13:3', 'guestBridge.mac', 'missing: the cluster has a shared gatewayMAC (cluster.yaml:12:13), so every node needs')],
  },
  {
    name: 'shared gateway MAC that is not a MAC',
    edits: [...sharedMac('"02:00:5e:05:05"')],
    expected: [at('cluster.yaml:12:13', 'gatewayMAC', 'must be a MAC address in colon form')],
  },
  {
    name: 'node bridge MAC that is multicast, or a guest\'s',
    edits: [replace('cluster.yaml', 'gatewayIP: 10.5.5.254\n', 'gatewayIP: 10.5.5.254\ngatewayMAC: "02:00:5e:05:05:fe"\n'), bridgeMac('node1', 'ff:ff:ff:ff:ff:ff'), bridgeMac('node2', '00:16:3e:05:05:c9')],
    // The node claims its MAC first, so the guest holding the same one is the one reported.
    expected: [
      at('guests/guest1.yaml:9:6', 'mac', '00:16:3e:05:05:c9 is already used as guestBridge.mac of node "node2" (nodes/node2.yaml:15:8)'),
      at('nodes/node1.yaml:15:8', 'guestBridge.mac', 'ff:ff:ff:ff:ff:ff is a multicast address'),
    ],
  },
  {
    name: 'gwmac table named like another role',
    edits: [...sharedMac('"02:00:5e:05:05:fe"'), replace('cluster.yaml', '  arp: cgw_arp\n', '  arp: cgw_arp\n  gwmac: cgw_nat\n')],
    expected: [at('cluster.yaml:23:10', 'tables.gwmac', '"cgw_nat" is already the nat table')],
  },
  {
    name: 'same guest name in two files',
    edits: [copy('guests/guest1.yaml', 'guests/zz-copy.yaml', ['ip: 10.5.5.201', 'ip: 10.5.5.209'], [':c9"', ':d1"'])],
    expected: [at('guests/zz-copy.yaml:6:7', 'name', 'duplicate guest name "guest1" (first defined at guests/guest1.yaml:6:7)')],
  },
  {
    name: 'same node in two files',
    edits: [
      copy(
        'nodes/node1.yaml',
        'nodes/node1-again.yaml',
        ['publicIP: 192.168.122.11', 'publicIP: 192.168.122.19'],
        ['nodeIP: 10.5.5.251', 'nodeIP: 10.5.5.249'],
      ),
    ],
    // "node1-again.yaml" sorts before "node1.yaml", so it is read first.
    expected: [at('nodes/node1.yaml:8:7', 'name', 'duplicate node name "node1" (first defined at nodes/node1-again.yaml:8:7)')],
  },
  {
    name: 'same forward name in two files',
    edits: [replace('forwards/ntp.yaml', 'name: ntp-guest2', 'name: ssh-guest2')],
    expected: [at('forwards/ssh.yaml:12:11', 'forwards[1].name', 'duplicate forward name "ssh-guest2" (first defined at forwards/ntp.yaml:12:11)')],
  },
  {
    name: 'duplicate public IP',
    edits: [replace('nodes/node2.yaml', 'publicIP: 192.168.122.12', 'publicIP: 192.168.122.11')],
    expected: [at('nodes/node2.yaml:11:13', 'uplink.publicIP', 'already used as publicIP of node "node1"')],
  },
  {
    name: 'one interface in two roles on a node',
    edits: [replace('nodes/node1.yaml', '[eth1.100, eth2.100]', '[xenbr0, eth2.100]')],
    expected: [at('nodes/node1.yaml:15:10', 'trunks[0]', 'interface "xenbr0" is already used as uplink.interface on this node')],
  },
  {
    name: 'forward port clash on one node',
    edits: [replace('forwards/web.yaml', 'nodes: [node2]', 'nodes: [node1]')],
    expected: [
      at('forwards/web.yaml:17:11', 'forwards[1].port', 'tcp/80 on node node1 is already taken by forward "web-node1" (forwards/web.yaml:12:11)'),
    ],
  },
  {
    name: 'forward port clash across files, on every node (no `nodes` means all)',
    edits: [replace('forwards/ssh.yaml', 'protocol: tcp\n    port: 2202', 'protocol: udp\n    port: 1231')],
    expected: [
      at('forwards/ssh.yaml:14:11', 'forwards[1].port', 'udp/1231 on node node1 is already taken by forward "ntp-guest1" (forwards/ntp.yaml:10:11)'),
      at('forwards/ssh.yaml:14:11', 'forwards[1].port', 'udp/1231 on node node2 is already taken by forward "ntp-guest1"'),
    ],
  },
  // --- address plan
  {
    name: 'guest IP outside the guest subnet',
    edits: [replace('guests/guest1.yaml', 'ip: 10.5.5.201', 'ip: 10.5.6.201')],
    expected: [at('guests/guest1.yaml:8:5', 'ip', '10.5.6.201 is outside guestSubnet 10.5.5.0/24')],
  },
  {
    name: 'node IP outside the guest subnet',
    edits: [replace('nodes/node2.yaml', 'nodeIP: 10.5.5.252', 'nodeIP: 10.5.4.252')],
    expected: [at('nodes/node2.yaml:14:11', 'guestBridge.nodeIP', '10.5.4.252 is outside guestSubnet 10.5.5.0/24')],
  },
  {
    name: 'gateway equal to a node IP',
    edits: [replace('nodes/node2.yaml', 'nodeIP: 10.5.5.252', 'nodeIP: 10.5.5.254')],
    expected: [
      at('nodes/node2.yaml:14:11', 'guestBridge.nodeIP', '10.5.5.254 is already used as the shared cluster gatewayIP (cluster.yaml:11:12)'),
    ],
  },
  {
    name: 'gateway on the network address',
    edits: [replace('cluster.yaml', 'gatewayIP: 10.5.5.254', 'gatewayIP: 10.5.5.0')],
    expected: [at('cluster.yaml:11:12', 'gatewayIP', '10.5.5.0 is the network address of guestSubnet 10.5.5.0/24')],
  },
  {
    name: 'gateway on the broadcast address',
    edits: [replace('cluster.yaml', 'gatewayIP: 10.5.5.254', 'gatewayIP: 10.5.5.255')],
    expected: [at('cluster.yaml:11:12', 'gatewayIP', '10.5.5.255 is the broadcast address of guestSubnet 10.5.5.0/24')],
  },
  {
    name: 'guest subnet with host bits set',
    edits: [replace('cluster.yaml', 'guestSubnet: 10.5.5.0/24', 'guestSubnet: 10.5.5.7/24')],
    expected: [at('cluster.yaml:10:14', 'guestSubnet', 'has host bits set; did you mean 10.5.5.0/24?')],
  },
  // --- everything at once
  {
    name: 'several problems in several files, all reported together',
    edits: [
      replace('guests/guest1.yaml', 'ip: 10.5.5.201', 'ip: 10.5.5.201: x'),
      replace('guests/guest2.yaml', 'memoryMiB: 1024', 'memoryMiB: lots'),
      replace('nodes/node2.yaml', 'interface: xenbr0', 'interface: "eth0; flush ruleset"'),
      replace('forwards/ssh.yaml', 'guest: guest1', 'guest: guest9'),
      replace('cluster.yaml', 'gatewayIP: 10.5.5.254', 'gatewayIP: 10.5.5.255\nowner: ops'),
    ],
    expected: [
      at('cluster.yaml:11:12', 'gatewayIP', 'is the broadcast address'),
      at('cluster.yaml:12:1', 'owner', 'unknown property "owner"'),
      at('forwards/ssh.yaml:11:22', 'forwards[0].target.guest', 'unknown guest "guest9"'),
      at('guests/guest1.yaml:8:5', '', 'YAML syntax'),
      at('guests/guest2.yaml:11:14', 'resources.memoryMiB', 'must be an integer (got "lots")'),
      at('nodes/node2.yaml:10:14', 'uplink.interface', INTERFACE_RULE),
    ],
  },
];

describe('loadState reports broken state directories', () => {
  it.each(badCases)('$name', async ({ edits, expected }) => {
    const { diagnostics } = await loadEdited(edits);
    expect(diagnostics).toEqual(expected);
  });
});

describe('loadState accepts edits that only look suspicious', () => {
  const goodCases: Array<{ name: string; edits: Edit[] }> = [
    { name: 'same port, other protocol', edits: [replace('forwards/ssh.yaml', 'port: 2202', 'port: 1231')] },
    { name: 'same port on disjoint nodes', edits: [] }, // web-node1/web-node2 in the example itself
    {
      name: '15-character interface name',
      edits: [replace('nodes/node1.yaml', 'interface: guestbr0', 'interface: guestbridge0123')],
    },
    { name: 'upper-case MAC', edits: [replace('guests/guest1.yaml', '"00:16:3e:05:05:c9"', '"00:16:3E:05:05:C9"')] },
    { name: 'shared gateway MAC, upper-case, universally administered', edits: sharedMac('"00:00:5E:00:01:01"') },
    { name: 'extra non-YAML file in a folder', edits: [write('guests/README.md', 'notes: [unbalanced')] },
  ];
  it.each(goodCases)('$name', async ({ edits }) => {
    const { diagnostics } = await loadEdited(edits);
    expect(diagnostics).toEqual([]);
  });
});

describe('reporting', () => {
  it('formats diagnostics compiler-style, one per line', async () => {
    const { diagnostics } = await loadEdited([
      replace('nodes/node1.yaml', 'interface: xenbr0', 'interface: "eth0; flush ruleset"'),
      remove('cluster.yaml'),
    ]);
    expect(formatDiagnostics(diagnostics).split('\n')).toEqual([
      'cluster.yaml:1:1: missing: a state directory needs cluster.yaml (kind: Cluster)',
      `nodes/node1.yaml:10:14: uplink.interface: ${INTERFACE_RULE} (got "eth0; flush ruleset")`,
    ]);
  });

  it('loadStateOrThrow throws a StateError carrying the diagnostics', async () => {
    const { dir, diagnostics } = await loadEdited([replace('guests/guest1.yaml', 'node: node1', 'node: node3')]);
    const error = await loadStateOrThrow(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StateError);
    expect((error as StateError).diagnostics).toEqual(diagnostics);
    expect((error as StateError).message).toBe(`invalid state (1 problem):\n${formatDiagnostics(diagnostics)}`);
  });

  it('reports a missing state directory instead of throwing', async () => {
    const { diagnostics, state } = await loadState(path.join(scratch, 'does-not-exist'));
    expect(state).toBeUndefined();
    expect(diagnostics).toEqual([at('.:1:1', '', 'does not exist or is not a directory')]);
  });
});
