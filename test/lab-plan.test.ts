// The pure parts of the lab: the plan computed from a cluster state, the checks derived from it,
// the parsers of responder and arping output, the lab repository's adjustments and agent configs.
// No namespaces here (see e2e-topology.test.ts and e2e-lab-*.test.ts).
import { beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { generateNodeKey } from '../src/git/signature.js';
import { loadStateOrThrow } from '../src/state/index.js';
import type { ClusterState } from '../src/state/types.js';
import { assertLabPrefix, describeStep, planLab, type LabStep } from '../src/lab/plan.js';
import { planChecks } from '../src/lab/check.js';
import { parseArpingMacs } from '../src/lab/probes.js';
import { parseReply } from '../src/lab/responder.js';
import { labAdjustments, labCommitMessage } from '../src/lab/repo.js';
import { agentConfigYaml, distEntry, labListenerYaml } from '../src/lab/lab.js';
import { loadAgentConfig } from '../src/agent/config.js';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { parse } from 'yaml';

let state: ClusterState;
beforeAll(async () => {
  state = await loadStateOrThrow(join(import.meta.dirname, '..', 'state-example'));
});

const of = <K extends LabStep['kind']>(steps: LabStep[], kind: K) =>
  steps.filter((s): s is Extract<LabStep, { kind: K }> => s.kind === kind);

describe('planLab', () => {
  it('names every namespace with the prefix, nodes and guests from the state', () => {
    const plan = planLab(state, { prefix: 'cgwlab-' });
    expect(plan.namespaces).toEqual(['cgwlab-pub', 'cgwlab-client', 'cgwlab-trunk', 'cgwlab-node1', 'cgwlab-node2']);
    expect(plan.guests.map((g) => [g.name, g.ns, g.ip])).toEqual([
      ['guest1', 'cgwlab-node1.guest1', '10.5.5.201'],
      ['guest2', 'cgwlab-node2.guest2', '10.5.5.202'],
    ]);
    for (const s of plan.steps) {
      const nss = s.kind === 'veth' ? [s.a.ns, s.b.ns] : [s.ns];
      for (const ns of nss) expect(plan.namespaces).toContain(ns);
    }
  });

  it('puts node IP before the gateway IP on the guest bridge, public IP on the uplink', () => {
    const plan = planLab(state, { prefix: 'cgwlab-' });
    const addrs = of(plan.steps, 'addr').filter((s) => s.ns === 'cgwlab-node1').map((s) => `${s.dev} ${s.cidr}`);
    expect(addrs).toEqual(['xenbr0 192.168.122.11/24', 'guestbr0 10.5.5.251/24', 'guestbr0 10.5.5.254/24']);
    const client = of(plan.steps, 'addr').filter((s) => s.ns === 'cgwlab-client');
    expect(client).toEqual([{ kind: 'addr', ns: 'cgwlab-client', dev: 'eth0', cidr: '192.168.122.100/24' }]);
  });

  it("pins a node's guest bridge to the state's guestBridge.mac, where the state gives one", () => {
    const pinned: ClusterState = { ...state, nodes: state.nodes.map((n, i) => (i === 0 ? { ...n, guestBridge: { ...n.guestBridge, mac: '02:00:00:05:05:01' } } : n)) };
    const bridges = of(planLab(pinned, { prefix: 'cgwlab-' }).steps, 'bridge').filter((s) => s.name === 'guestbr0');
    expect(bridges).toEqual([
      { kind: 'bridge', ns: 'cgwlab-node1', name: 'guestbr0', mac: '02:00:00:05:05:01' },
      { kind: 'bridge', ns: 'cgwlab-node2', name: 'guestbr0' },
    ]);
    expect(describeStep(bridges[0] as LabStep)).toBe('[cgwlab-node1] ip link add guestbr0 type bridge (address 02:00:00:05:05:01)');
  });

  it('cables the first trunk to the guest VLAN and leaves the others without a peer on it', () => {
    const plan = planLab(state, { prefix: 'cgwlab-' });
    const onTrunkBridge = of(plan.steps, 'master').filter((s) => s.ns === 'cgwlab-trunk').map((s) => s.dev);
    expect(onTrunkBridge).toEqual(['t1.1', 't2.1']);
    const trunkUps = of(plan.steps, 'up').filter((s) => s.ns === 'cgwlab-trunk').map((s) => s.dev);
    expect(trunkUps).toEqual(['t1.1', 't2.1']);
    // Both trunks of node1 exist and sit on guestbr0.
    const ports = of(plan.steps, 'master').filter((s) => s.ns === 'cgwlab-node1' && s.bridge === 'guestbr0');
    expect(ports.map((s) => s.dev)).toEqual(['eth1.100', 'eth2.100']);
    expect(plan.nodes[0].activeTrunk).toBe('eth1.100');
  });

  it('sets br_netfilter per node as asked (default on), ip_forward on, IPv6 off everywhere', () => {
    for (const [opt, want] of [[undefined, '1'], [true, '1'], [false, '0']] as const) {
      const plan = planLab(state, { prefix: 'cgwlab-', brNetfilter: opt });
      const brnf = of(plan.steps, 'sysctl').filter((s) => s.key === 'net.bridge.bridge-nf-call-iptables');
      expect(brnf.map((s) => [s.ns, s.value])).toEqual([
        ['cgwlab-node1', want],
        ['cgwlab-node2', want],
      ]);
    }
    const plan = planLab(state, { prefix: 'cgwlab-' });
    const v6 = of(plan.steps, 'sysctl').filter((s) => s.key === 'net.ipv6.conf.default.disable_ipv6');
    expect(v6.map((s) => s.ns)).toEqual(plan.namespaces);
    const fwd = of(plan.steps, 'sysctl').filter((s) => s.key === 'net.ipv4.ip_forward');
    expect(fwd.map((s) => s.ns)).toEqual(['cgwlab-node1', 'cgwlab-node2']);
  });

  it('creates each namespace before using it and keeps interface names within 15 characters', () => {
    const plan = planLab(state, { prefix: 'cgwt1234567a-' });
    const made = new Set<string>();
    for (const s of plan.steps) {
      if (s.kind === 'netns') made.add(s.ns);
      else for (const ns of s.kind === 'veth' ? [s.a.ns, s.b.ns] : [s.ns]) expect(made.has(ns), describeStep(s)).toBe(true);
      const devs = s.kind === 'veth' ? [s.a.dev, s.b.dev] : s.kind === 'bridge' ? [s.name] : 'dev' in s ? [s.dev] : [];
      for (const d of devs) expect(d.length).toBeLessThanOrEqual(15);
    }
  });

  it('refuses unusable prefixes, public IPs off the segment, and reserved node names', () => {
    for (const bad of ['', 'c-', 'cgw', 'cgwlab', 'CGW-', 'cg/w-']) expect(() => assertLabPrefix(bad), bad).toThrow();
    expect(() => planLab(state, { prefix: 'cgwlab-', publicSubnet: '192.168.1.0/24', clientIP: '192.168.1.100' })).toThrow(
      /192.168.122.11 is not on the lab's public segment/,
    );
    expect(() => planLab(state, { prefix: 'cgwlab-', clientIP: '10.0.0.1' })).toThrow(/client IP/);
    const renamed = { ...state, nodes: state.nodes.map((n, i) => (i === 0 ? { ...n, name: 'pub' } : n)) };
    expect(() => planLab(renamed, { prefix: 'cgwlab-' })).toThrow(/reserved/);
    const clash = { ...state, nodes: state.nodes.map((n, i) => (i === 0 ? { ...n, trunks: ['pub0'] } : n)) };
    expect(() => planLab(clash, { prefix: 'cgwlab-' })).toThrow(/pub0 is used twice/);
  });
});

describe('planChecks', () => {
  it('probes every forward on every node it enters, expecting the entering node as source (full-nat)', () => {
    const plan = planLab(state, { prefix: 'cgwlab-' });
    const checks = planChecks(state, plan);
    const net = checks.filter((c) => c.kind !== 'arp' && c.ns === plan.client.ns);
    expect(net.map((c) => `${c.kind} ${c.ip}:${'port' in c ? c.port : ''} ${'expect' in c ? String(c.expect) : ''}`).sort()).toEqual(
      [
        'http 192.168.122.11:80 this is guest2 OK from 10.5.5.251 via http/80',
        'http 192.168.122.12:80 this is guest1 OK from 10.5.5.252 via http/80',
        'tcp 192.168.122.11:2201 this is guest1 OK from 10.5.5.251 via tcp/22',
        'tcp 192.168.122.11:2202 this is guest2 OK from 10.5.5.251 via tcp/22',
        'tcp 192.168.122.12:2201 this is guest1 OK from 10.5.5.252 via tcp/22',
        'tcp 192.168.122.12:2202 this is guest2 OK from 10.5.5.252 via tcp/22',
        'udp 192.168.122.11:1231 this is guest1 OK from 10.5.5.251 via udp/123',
        'udp 192.168.122.11:1232 this is guest2 OK from 10.5.5.251 via udp/123',
        'udp 192.168.122.12:1231 this is guest1 OK from 10.5.5.252 via udp/123',
        'udp 192.168.122.12:1232 this is guest2 OK from 10.5.5.252 via udp/123',
      ].sort(),
    );
    expect(checks.filter((c) => c.kind !== 'arp' && c.ns !== plan.client.ns)).toHaveLength(2); // outbound, below
    const arp = checks.filter((c) => c.kind === 'arp');
    expect(arp.map((c) => [c.ns, c.ip, c.answeredBy])).toEqual([
      ['cgwlab-node1.guest1', '10.5.5.254', { ns: 'cgwlab-node1', dev: 'guestbr0' }],
      ['cgwlab-node2.guest2', '10.5.5.254', { ns: 'cgwlab-node2', dev: 'guestbr0' }],
    ]);
  });

  it('with a shared gateway MAC, ARP for the gateway must be answered with that MAC only', () => {
    const shared: ClusterState = { ...state, cluster: { ...state.cluster, gatewayMAC: '02:00:5e:05:05:fe' } };
    const arp = planChecks(shared, planLab(shared, { prefix: 'cgwlab-' })).filter((c) => c.kind === 'arp');
    expect(arp.map((c) => [c.name, c.answeredBy])).toEqual([
      ['arp 10.5.5.254 from guest1: only the shared gateway MAC answers', { mac: '02:00:5e:05:05:fe' }],
      ['arp 10.5.5.254 from guest2: only the shared gateway MAC answers', { mac: '02:00:5e:05:05:fe' }],
    ]);
  });

  it("checks each guest's casual outbound: the client sees the public IP of the guest's node", () => {
    const plan = planLab(state, { prefix: 'cgwlab-' });
    const out = planChecks(state, plan).filter((c) => c.kind === 'tcp' && c.ns !== plan.client.ns);
    expect(out.map((c) => [c.ns, 'port' in c && `${c.ip}:${c.port}`, 'expect' in c && c.expect])).toEqual([
      ['cgwlab-node1.guest1', '192.168.122.100:22', 'this is client OK from 192.168.122.11 via tcp/22'],
      ['cgwlab-node2.guest2', '192.168.122.100:22', 'this is client OK from 192.168.122.12 via tcp/22'],
    ]);
  });

  it('expects the client as source without the forward SNAT (the negative control)', () => {
    const off = { ...state, cluster: { ...state.cluster, nat: { ...state.cluster.nat, forwardSnat: false } } };
    const checks = planChecks(off, planLab(off, { prefix: 'cgwlab-' }));
    const web = checks.find((c) => c.kind === 'http' && c.ip === '192.168.122.12')!;
    expect('expect' in web && web.expect).toBe('this is guest1 OK from 192.168.122.100 via http/80');
  });

  it('expects the client as source with ct-sync', () => {
    const ct = { ...state, cluster: { ...state.cluster, nat: { mode: 'ct-sync' as const, forwardSnat: false } } };
    const checks = planChecks(ct, planLab(ct, { prefix: 'cgwlab-' }));
    const web = checks.find((c) => c.kind === 'http' && c.ip === '192.168.122.11')!;
    expect('expect' in web && web.expect).toBe('this is guest2 OK from 192.168.122.100 via http/80');
  });
});

describe('output parsers', () => {
  it('parses responder answers and refuses anything else', () => {
    expect(parseReply('this is guest1 OK from 10.5.5.251 via tcp/22\r\n')).toEqual({
      guest: 'guest1',
      from: '10.5.5.251',
      via: 'tcp/22',
    });
    expect(parseReply('SSH-2.0-OpenSSH_9.2')).toBeUndefined();
    expect(parseReply('')).toBeUndefined();
  });

  it('collects distinct MACs from arping output', () => {
    const out = [
      'ARPING 10.5.5.254',
      '42 bytes from 0a:1b:2c:3d:4e:5f (10.5.5.254): index=0 time=1.1 usec',
      '42 bytes from 0A:1B:2C:3D:4E:5F (10.5.5.254): index=1 time=1.2 usec',
      '42 bytes from 02:00:00:00:00:01 (10.5.5.254): index=2 time=1.3 usec',
      '',
      '--- 10.5.5.254 statistics ---',
      '3 packets transmitted, 3 packets received,   0% unanswered (0 extra)',
    ].join('\n');
    expect(parseArpingMacs(out)).toEqual(['02:00:00:00:00:01', '0a:1b:2c:3d:4e:5f']);
    expect(parseArpingMacs('3 packets transmitted, 0 packets received, 100% unanswered')).toEqual([]);
  });
});

describe('the lab repository and agents (pure parts)', () => {
  const read = async (dir: string) => {
    const out: Record<string, string> = {};
    for (const f of ['cluster.yaml', 'nodes/node1.yaml', 'nodes/node2.yaml', 'guests/guest1.yaml', 'guests/guest2.yaml', 'forwards/web.yaml']) {
      out[f] = await readFile(join(dir, f), 'utf8');
    }
    return out;
  };

  it('labAdjustments: nodes become netns nodes, guests run the responder, the mode only when asked', async () => {
    const files = await read(join(import.meta.dirname, '..', 'state-example'));
    const changed = labAdjustments(files, { responderScript: '/run/lab/responder.cjs' });
    expect(Object.keys(changed).sort()).toEqual(['guests/guest1.yaml', 'guests/guest2.yaml', 'nodes/node1.yaml', 'nodes/node2.yaml']);
    expect(changed['nodes/node1.yaml']).toContain('hypervisor: netns # lab: set by `cgw-sync lab up`');
    // Everything else is kept as written, comments and flow style included.
    expect(changed['nodes/node1.yaml'].replace('hypervisor: netns # lab: set by `cgw-sync lab up`', 'hypervisor: xen')).toBe(files['nodes/node1.yaml']);
    expect(parse(changed['guests/guest2.yaml']).netns).toEqual({ command: [process.execPath, '/run/lab/responder.cjs', 'serve', 'guest2'] });
    expect(changed['guests/guest2.yaml'].startsWith(files['guests/guest2.yaml'])).toBe(true);

    const ct = labAdjustments(files, { responderScript: '/x.cjs', mode: 'ct-sync' });
    expect(parse(ct['cluster.yaml']).nat.mode).toBe('ct-sync');
    expect(labAdjustments(files, { responderScript: '/x.cjs', mode: 'full-nat' })['cluster.yaml']).toBeUndefined();
    expect(labCommitMessage('cgwlab-', ct, { responderScript: '/x.cjs', mode: 'ct-sync' })).toContain('- cluster.yaml: nat.mode ct-sync');
  });

  it('labAdjustments with node keys: each node gets its statusKey, the cluster requires signed reports, and it loads', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cgw-lab-keys-'));
    try {
      await cp(join(import.meta.dirname, '..', 'state-example'), dir, { recursive: true });
      const keys = { node1: await generateNodeKey('node1'), node2: await generateNodeKey('node2') };
      const opts = { responderScript: '/x.cjs', statusKeys: { node1: keys.node1.publicKey, node2: keys.node2.publicKey } };
      const changed = labAdjustments(await read(dir), opts);
      for (const [f, text] of Object.entries(changed)) await writeFile(join(dir, f), text);
      const state = await loadStateOrThrow(dir);
      expect(state.cluster.statusSignatures).toBe('required');
      expect(state.nodes.map((n) => n.statusKey?.trim())).toEqual([keys.node1.publicKey.trim(), keys.node2.publicKey.trim()]);
      expect(labCommitMessage('cgwlab-', changed, opts)).toContain('- nodes/*.yaml: statusKey, the public key of a signing key the lab made for each node');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the adjusted state is still a valid state (what `cgw-sync validate` checks)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cgw-lab-adjust-'));
    try {
      await cp(join(import.meta.dirname, '..', 'state-example'), dir, { recursive: true });
      for (const [f, text] of Object.entries(labAdjustments(await read(dir), { responderScript: '/x.cjs', mode: 'ct-sync' }))) await writeFile(join(dir, f), text);
      const state = await loadStateOrThrow(dir);
      expect(state.nodes.map((n) => n.hypervisor)).toEqual(['netns', 'netns']);
      expect(state.cluster.nat.mode).toBe('ct-sync');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('agent configs are valid AgentConfig files: lab repository, node namespace, every 2 s', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cgw-lab-agent-'));
    try {
      await writeFile(join(dir, 'agent.yaml'), agentConfigYaml('node1', 'cgwlab-node1', 'http://127.0.0.1:1/state.git'));
      const c = await loadAgentConfig(join(dir, 'agent.yaml'));
      expect(c).toMatchObject({ node: 'node1', netns: 'cgwlab-node1', schedule: { cron: '*/2 * * * * *', jitterSeconds: 0 }, stateDir: join(dir, 'state') });
      expect(c.guests).toMatchObject({ enabled: true, runDir: join(dir, 'run') });
      // With the node's signing key beside it (relative to the file, as lab up writes it).
      await writeFile(join(dir, 'status.key'), (await generateNodeKey('node1')).privateKey, { mode: 0o600 });
      await writeFile(join(dir, 'agent.yaml'), agentConfigYaml('node1', 'cgwlab-node1', 'http://127.0.0.1:1/state.git', undefined, 'status.key'));
      expect((await loadAgentConfig(join(dir, 'agent.yaml'))).status.signingKey).toBe(join(dir, 'status.key'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('with --webhook the agent config listens on loopback with the lab secret', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cgw-lab-agent-'));
    try {
      const secretFile = join(dir, 'webhook.secret');
      await writeFile(secretFile, `${'f'.repeat(64)}\n`, { mode: 0o600 });
      await writeFile(join(dir, 'agent.yaml'), `${agentConfigYaml('node1', 'cgwlab-node1', 'http://127.0.0.1:1/state.git')}${labListenerYaml({ port: 39380, secretFile })}`);
      const c = await loadAgentConfig(join(dir, 'agent.yaml'));
      expect(c).toMatchObject({ listen: { address: '127.0.0.1', port: 39380 }, webhook: { secretFile, path: '/hooks/push' } });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('names the missing build when dist/ lacks a program', () => {
    expect(() => distEntry('lab/no-such-program.js')).toThrow(/no-such-program\.js is missing.*npm run build/);
  });
});
