// A generated cluster shaped like state-example (two nodes, the design's addresses) with any
// number of forwards: for the benchmark and for tests that need scale. Not read from YAML, so
// it measures render/plan/apply rather than the loader.
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClusterState, ForwardSpec, GuestSpec, NodeSpec } from '../state/types.js';

const src = (file: string) => ({ file, line: 1, column: 1 });

export function syntheticNode(i: number): NodeSpec {
  return {
    name: `node${i}`,
    uplink: { interface: 'xenbr0', publicIP: `192.168.122.${10 + i}` },
    guestBridge: { interface: 'guestbr0', nodeIP: `10.5.5.${250 + i}` },
    trunks: ['eth1.100', 'eth2.100'],
    hypervisor: 'netns',
    source: src(`nodes/node${i}.yaml`),
  };
}

export function syntheticGuest(i: number, node: string): GuestSpec {
  return {
    name: `guest${i}`,
    node,
    ip: `10.5.5.${200 + i}`,
    mac: `00:16:3e:05:05:${(200 + i).toString(16)}`,
    resources: { memoryMiB: 1024, vcpus: 1 },
    restartOnChange: false,
    source: src(`guests/guest${i}.yaml`),
  };
}

/** `forwards` tcp forwards on public ports 10000.. spread over both guests, entering on every node. */
export function syntheticState(forwards: number, opts: { tableSuffix?: string } = {}): ClusterState {
  const suffix = opts.tableSuffix ?? '';
  const fw: ForwardSpec[] = [];
  for (let i = 0; i < forwards; i++) {
    fw.push({
      name: `fwd-${i}`,
      protocol: i % 5 === 4 ? 'udp' : 'tcp',
      port: 10000 + i,
      target: { guest: i % 2 === 0 ? 'guest1' : 'guest2', port: 1 + (i % 1000) },
      source: src('forwards/synthetic.yaml'),
    });
  }
  return {
    dir: '/nonexistent/synthetic',
    cluster: {
      name: 'synthetic',
      guestSubnet: '10.5.5.0/24',
      gatewayIP: '10.5.5.254',
      nat: { mode: 'full-nat', forwardSnat: true },
      tables: { nat: `cgw_nat${suffix}`, arp: `cgw_arp${suffix}` },
      source: src('cluster.yaml'),
    },
    nodes: [syntheticNode(1), syntheticNode(2)],
    guests: [syntheticGuest(1, 'node1'), syntheticGuest(2, 'node2')],
    forwards: fw,
  };
}

/**
 * A state repository on disk in `dir`: state-example's cluster, nodes and guests (which define
 * guest1 and guest2) and one forwards file with `forwards` synthetic forwards, for measuring the
 * loader and `cgw-sync validate` at scale.
 */
export async function writeSyntheticStateRepo(dir: string, forwards: number): Promise<void> {
  const example = new URL('../../state-example/', import.meta.url);
  for (const part of ['cluster.yaml', 'nodes', 'guests']) await cp(new URL(part, example), join(dir, part), { recursive: true });
  await mkdir(join(dir, 'forwards'), { recursive: true });
  // Block style, as people write it (and as state-example does): 50,000 forwards stay under the
  // limit of YAML values, which flow style's braces would pass.
  const items = syntheticState(forwards).forwards.map(
    (f) => `  - name: ${f.name}\n    protocol: ${f.protocol}\n    port: ${f.port}\n    target:\n      guest: ${f.target.guest}\n      port: ${f.target.port}`,
  );
  await writeFile(join(dir, 'forwards', 'bench.yaml'), `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${items.join('\n')}\n`);
}
