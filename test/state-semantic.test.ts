// validateSemantics on in-memory specs: no files, so positions come from each object's source ref
// (the default locator) and the field path names the offending value.
import { describe, expect, it } from 'vitest';
import { validateSemantics, type SemanticInput } from '../src/state/semantic.js';
import type { ClusterSettings, ForwardSpec, GuestSpec, NodeSpec } from '../src/state/types.js';

const src = (file: string, line = 1) => ({ file, line, column: 1 });

const cluster: ClusterSettings = {
  name: 'lab',
  guestSubnet: '10.5.5.0/24',
  gatewayIP: '10.5.5.254',
  nat: { mode: 'full-nat', forwardSnat: true },
  tables: { nat: 'cgw_nat', arp: 'cgw_arp' },
  source: src('cluster.yaml'),
};
const node = (name: string, n: number): NodeSpec => ({
  name,
  uplink: { interface: 'xenbr0', publicIP: `192.168.122.${10 + n}` },
  guestBridge: { interface: 'guestbr0', nodeIP: `10.5.5.${250 + n}` },
  trunks: ['eth1.100'],
  hypervisor: 'xen',
  source: src(`nodes/${name}.yaml`),
});
const guest = (name: string, nodeName: string, n: number): GuestSpec => ({
  name,
  node: nodeName,
  ip: `10.5.5.${200 + n}`,
  mac: `00:16:3e:05:05:${(200 + n).toString(16)}`,
  resources: { memoryMiB: 1024, vcpus: 1 },
  restartOnChange: false,
  source: src(`guests/${name}.yaml`),
});
const forward = (name: string, port: number, target: string, line: number, nodes?: string[]): ForwardSpec => ({
  name,
  protocol: 'tcp',
  port,
  target: { guest: target, port: 22 },
  ...(nodes && { nodes }),
  source: src('forwards/f.yaml', line),
});

const valid = (): SemanticInput => ({
  cluster,
  nodes: [node('node1', 1), node('node2', 2)],
  guests: [guest('guest1', 'node1', 1), guest('guest2', 'node2', 2)],
  forwards: [forward('ssh1', 2201, 'guest1', 3), forward('ssh2', 2202, 'guest2', 7)],
});

describe('validateSemantics', () => {
  it('accepts a consistent cluster', () => {
    expect(validateSemantics(valid())).toEqual([]);
  });

  it('locates problems by the object source and names the field', () => {
    const input = valid();
    input.forwards.push(forward('ssh3', 2201, 'guest3', 11, ['node2']));
    expect(validateSemantics(input)).toEqual([
      {
        file: 'forwards/f.yaml',
        line: 11,
        column: 1,
        field: 'target.guest',
        message: 'unknown guest "guest3" (defined: guest1, guest2)',
      },
      {
        file: 'forwards/f.yaml',
        line: 11,
        column: 1,
        field: 'port',
        message: 'tcp/2201 on node node2 is already taken by forward "ssh1" (forwards/f.yaml:3:1)',
      },
    ]);
  });

  it('does not report references to names whose documents were already found broken', () => {
    const input = valid();
    input.guests = input.guests.filter((g) => g.name !== 'guest2');
    expect(validateSemantics(input).map((d) => d.message)).toEqual(['unknown guest "guest2" (defined: guest1)']);
    expect(validateSemantics({ ...input, unchecked: { guests: ['guest2'] } })).toEqual([]);
  });

  it('skips cluster-wide address checks when there is no valid cluster', () => {
    const input = valid();
    input.guests[0].ip = '172.16.0.1';
    expect(validateSemantics(input).map((d) => d.field)).toEqual(['ip']);
    expect(validateSemantics({ ...input, cluster: undefined })).toEqual([]);
  });
});
