// Loads the shipped example state (the design's "lab" cluster) and checks every parsed value.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { loadState, loadStateOrThrow } from '../src/state/load.js';

const exampleDir = fileURLToPath(new URL('../state-example/', import.meta.url));

describe('loadState(state-example)', async () => {
  const { state, diagnostics } = await loadState(exampleDir);

  it('has no diagnostics', () => {
    expect(diagnostics).toEqual([]);
    expect(state).toBeDefined();
  });

  it('reads the cluster settings', () => {
    expect(state!.dir).toBe(path.resolve(exampleDir));
    expect(state!.cluster).toEqual({
      name: 'lab',
      guestSubnet: '10.5.5.0/24',
      gatewayIP: '10.5.5.254',
      nat: { mode: 'full-nat', forwardSnat: true },
      tables: { nat: 'cgw_nat', arp: 'cgw_arp', raw: 'cgw_raw', sync: 'cgw_sync', gwmac: 'cgw_gwmac', migration: 'cgw_migration' },
      health: { windowSeconds: 10, intervalSeconds: 1, checks: [] },
      rollout: { waves: [], soakSeconds: 0 },
      source: { file: 'cluster.yaml', line: 7, column: 1 },
    });
  });

  it('reads both nodes', () => {
    const node = (name: string, publicIP: string, nodeIP: string) => ({
      name,
      uplink: { interface: 'xenbr0', publicIP },
      guestBridge: { interface: 'guestbr0', nodeIP },
      trunks: ['eth1.100', 'eth2.100'],
      hypervisor: 'xen',
      source: { file: `nodes/${name}.yaml`, line: 6, column: 1 },
    });
    expect(state!.nodes).toStrictEqual([
      node('node1', '192.168.122.11', '10.5.5.251'),
      node('node2', '192.168.122.12', '10.5.5.252'),
    ]);
  });

  it('reads both guests', () => {
    const guest = (n: number, node: string, mac: string) => ({
      name: `guest${n}`,
      node,
      ip: `10.5.5.20${n}`,
      mac,
      resources: { memoryMiB: 1024, vcpus: 1 },
      boot: {
        disk: `/dev/vg0/guest${n}`,
        kernel: '/var/lib/cgw-sync/images/vmlinuz',
        initrd: '/var/lib/cgw-sync/images/initrd.img',
        append: 'root=/dev/vda ro console=hvc0',
      },
      restartOnChange: false,
      source: { file: `guests/guest${n}.yaml`, line: 4, column: 1 },
    });
    expect(state!.guests).toStrictEqual([
      guest(1, 'node1', '00:16:3e:05:05:c9'),
      guest(2, 'node2', '00:16:3e:05:05:ca'),
    ]);
  });

  it('reads all forwards from the three files, sorted by name', () => {
    const summary = state!.forwards.map((f) => ({
      name: f.name,
      rule: `${f.protocol}/${f.port} -> ${f.target.guest}:${f.target.port}`,
      nodes: f.nodes,
      file: f.source.file,
    }));
    expect(summary).toStrictEqual([
      { name: 'ntp-guest1', rule: 'udp/1231 -> guest1:123', nodes: undefined, file: 'forwards/ntp.yaml' },
      { name: 'ntp-guest2', rule: 'udp/1232 -> guest2:123', nodes: undefined, file: 'forwards/ntp.yaml' },
      { name: 'ssh-guest1', rule: 'tcp/2201 -> guest1:22', nodes: undefined, file: 'forwards/ssh.yaml' },
      { name: 'ssh-guest2', rule: 'tcp/2202 -> guest2:22', nodes: undefined, file: 'forwards/ssh.yaml' },
      { name: 'web-node1', rule: 'tcp/80 -> guest2:80', nodes: ['node1'], file: 'forwards/web.yaml' },
      { name: 'web-node2', rule: 'tcp/80 -> guest1:80', nodes: ['node2'], file: 'forwards/web.yaml' },
    ]);
    // A forward's source is the position of its list item.
    const web2 = state!.forwards.find((f) => f.name === 'web-node2')!;
    expect(web2.source).toEqual({ file: 'forwards/web.yaml', line: 15, column: 5 });
  });

  it('loadStateOrThrow returns the same state', async () => {
    expect(await loadStateOrThrow(exampleDir)).toEqual(state);
  });
});

describe('loadState applies defaults and normalises', async () => {
  // The smallest valid state: every optional field left out.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cgw-state-defaults-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const header = (kind: string) => `apiVersion: cgw-sync/v1\nkind: ${kind}\n`;
  const node = (name: string, n: number) => `${header('Node')}name: ${name}
uplink: { interface: eth0, publicIP: 198.51.100.${n} }
guestBridge: { nodeIP: 10.9.0.${n} }
hypervisor: netns
`;
  const files: Record<string, string> = {
    'cluster.yaml': `${header('Cluster')}name: mini\nguestSubnet: 10.9.0.0/16\ngatewayIP: 10.9.255.254\n`,
    'nodes/b.yaml': node('b', 2),
    'nodes/a.yml': node('a', 1),
    'guests/g.yaml': `${header('Guest')}name: g
node: a
ip: 10.9.1.1
mac: "52:54:00:AB:CD:EF"
resources: { memoryMiB: 64, vcpus: 1 }
netns: { command: [socat, "TCP-LISTEN:80", "EXEC:cat"] }
`,
    'forwards/f.yaml': `${header('Forwards')}forwards:
  - { name: f, protocol: tcp, port: 8080, target: { guest: g, port: 80 }, nodes: [b, a] }
`,
  };
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), text);
  }
  const { state, diagnostics } = await loadState(dir);

  it('loads without diagnostics', () => expect(diagnostics).toEqual([]));

  it('fills cluster defaults', () => {
    expect(state!.cluster.nat).toEqual({ mode: 'full-nat', forwardSnat: true });
    expect(state!.cluster.tables).toEqual({ nat: 'cgw_nat', arp: 'cgw_arp', raw: 'cgw_raw', sync: 'cgw_sync', gwmac: 'cgw_gwmac', migration: 'cgw_migration' });
  });

  it('fills node defaults and sorts nodes by name (.yml files too)', () => {
    expect(state!.nodes.map((n) => [n.name, n.guestBridge.interface, n.trunks, n.source.file])).toEqual([
      ['a', 'guestbr0', [], 'nodes/a.yml'],
      ['b', 'guestbr0', [], 'nodes/b.yaml'],
    ]);
  });

  it('lower-cases the MAC, defaults restartOnChange, keeps netns and leaves boot out', () => {
    expect(state!.guests).toStrictEqual([
      {
        name: 'g',
        node: 'a',
        ip: '10.9.1.1',
        mac: '52:54:00:ab:cd:ef',
        resources: { memoryMiB: 64, vcpus: 1 },
        netns: { command: ['socat', 'TCP-LISTEN:80', 'EXEC:cat'] },
        restartOnChange: false,
        source: { file: 'guests/g.yaml', line: 1, column: 1 },
      },
    ]);
  });

  it('sorts the nodes of a forward', () => {
    expect(state!.forwards[0].nodes).toEqual(['a', 'b']);
  });
});
