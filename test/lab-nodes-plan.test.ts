// `lab up --nodes N`, the pure parts: the nodes, guests and forwards derived from state-example,
// the bounds, the settings more than two nodes need, the checks over every entering node x
// target guest, and ct-sync's rendering for N nodes. No namespaces here (see lab-nodes.test.ts).
import { beforeAll, describe, expect, it } from 'vitest';
import { loadStateOrThrow } from '../src/state/index.js';
import type { ClusterState } from '../src/state/types.js';
import { extendLabState, labNodeCount, labPortStride, MAX_LAB_NODES } from '../src/lab/nodes.js';
import { planLab } from '../src/lab/plan.js';
import { planChecks } from '../src/lab/check.js';
import { planReplyPathChecks } from '../src/lab/reply-path.js';
import { labCommitMessage } from '../src/lab/repo.js';
import { renderNode } from '../src/render/render.js';
import { printTable } from '../src/nft/text.js';
import { renderConntrackdConf } from '../src/settings/conntrackd.js';
import { conntrackdPaths } from '../src/settings/model.js';
import { grownLabState } from './helpers/lab-nodes.js';
import { STATE_DIR } from './helpers/modes-lab.js';
import { containForVerify } from '../src/verify/contain.js';
import { labSummary, type Lab } from '../src/lab/lab.js';

let seed: ClusterState;
beforeAll(async () => {
  seed = await loadStateOrThrow(STATE_DIR);
});

describe('extendLabState', () => {
  it('adds node3 with the next addresses, guest3 on it, and forwards from and to it', () => {
    const ext = extendLabState(seed, 3);
    expect(ext.nodes).toEqual([
      { name: 'node3', uplink: { interface: 'xenbr0', publicIP: '192.168.122.13' }, guestBridge: { interface: 'guestbr0', nodeIP: '10.5.5.253' }, trunks: ['eth1.100', 'eth2.100'], hypervisor: 'xen' },
    ]);
    expect(ext.guests.map((g) => [g.name, g.node, g.ip, g.mac])).toEqual([['guest3', 'node3', '10.5.5.203', '00:16:3e:05:05:cb']]);
    expect(ext.forwards.map((f) => `${f.name} ${f.protocol} ${f.port} ${f.nodes?.join(',') ?? 'all'} -> ${f.target.guest}:${f.target.port}`)).toEqual([
      'ntp-guest3 udp 1233 all -> guest3:123',
      'ssh-guest3 tcp 2203 all -> guest3:22',
      'web-node3 tcp 80 node3 -> guest1:80',
    ]);
    expect(extendLabState(seed, 2)).toEqual({ nodes: [], guests: [], forwards: [] });
  });

  it('at 8 nodes: node IPs above, then below the seed\'s (never the gateway), public IPs and MACs all distinct', () => {
    const ext = extendLabState(seed, MAX_LAB_NODES);
    expect(ext.nodes.map((n) => n.guestBridge.nodeIP)).toEqual(['10.5.5.253', '10.5.5.250', '10.5.5.249', '10.5.5.248', '10.5.5.247', '10.5.5.246']);
    expect(ext.nodes.map((n) => n.uplink.publicIP)).toEqual(['13', '14', '15', '16', '17', '18'].map((h) => `192.168.122.${h}`));
    expect(new Set(ext.guests.map((g) => g.mac)).size).toBe(6);
    expect(ext.guests.map((g) => g.ip)).toEqual(['203', '204', '205', '206', '207', '208'].map((h) => `10.5.5.${h}`));
    // Each new node's web forward goes to the next node's guest; the last one wraps to guest1.
    expect(ext.forwards.filter((f) => f.nodes).map((f) => `${f.nodes![0]}->${f.target.guest}`)).toEqual(['node3->guest4', 'node4->guest5', 'node5->guest6', 'node6->guest7', 'node7->guest8', 'node8->guest1']);
  });

  it('bounds --nodes: at most 8, never fewer than the seed has, whole numbers only', () => {
    expect(labNodeCount(undefined, 2)).toBe(2);
    expect(labNodeCount(3, 2)).toBe(3);
    expect(() => labNodeCount(9, 2)).toThrow('--nodes 9: the lab runs at most 8 nodes');
    expect(() => labNodeCount(1, 2)).toThrow('--nodes 1: the seed state already has 2 nodes; --nodes only adds nodes (from 2 to 8)');
    expect(() => labNodeCount(2.5, 2)).toThrow('--nodes must be a whole number of nodes, not 2.5');
  });

  it('keeps the port stride while every natTag fits, else the largest multiple of 1000 that does', () => {
    expect(labPortStride(3, 10000)).toBe(10000);
    expect(labPortStride(5, 10000)).toBe(10000); // 65535 = 6 * 10000 + 5535: tag 5 reaches 50000..59999
    expect(labPortStride(6, 10000)).toBe(9000);
    expect(labPortStride(8, 10000)).toBe(7000);
  });
});

describe('the seeded lab state with more nodes', () => {
  it('3 nodes in ct-sync: valid, with the multicast group, and said so in the lab commit', async () => {
    const { state, files, extra } = await grownLabState(3, 'ct-sync');
    expect(state.nodes.map((n) => [n.name, n.hypervisor, n.guestBridge.nodeIP])).toEqual([
      ['node1', 'netns', '10.5.5.251'],
      ['node2', 'netns', '10.5.5.252'],
      ['node3', 'netns', '10.5.5.253'],
    ]);
    expect(state.cluster.nat.ctSync?.multicastGroup).toBe('225.0.0.50');
    expect(state.guests.find((g) => g.name === 'guest3')?.netns?.command).toEqual([process.execPath, '/x.cjs', 'serve', 'guest3']);
    const message = labCommitMessage('cgwlab-', files, { responderScript: '/x.cjs', mode: 'ct-sync', nodes: 3, extraFiles: extra });
    expect(message).toContain('forwards/lab-nodes.yaml, guests/guest3.yaml, nodes/node3.yaml: added by lab up --nodes 3');
    expect(message).toContain('nat.ctSync.multicastGroup');
  });

  it('8 nodes in stateless-nat: a natTag per node and a stride every tag fits in', async () => {
    const { state } = await grownLabState(8, 'stateless-nat');
    expect(state.nodes.map((n) => n.natTag)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(state.cluster.nat.portStride).toBe(7000);
  });

  it('every entering node x every guest is probed, and every node reaches a guest on another node', async () => {
    const { state } = await grownLabState(3, 'full-nat');
    const plan = planLab(state, { prefix: 'cgwlab-' });
    expect(plan.namespaces).toEqual(['cgwlab-pub', 'cgwlab-client', 'cgwlab-trunk', 'cgwlab-node1', 'cgwlab-node2', 'cgwlab-node3']);
    const probes = planChecks(state, plan).filter((c) => c.ns === plan.client.ns);
    const pairs = new Set(probes.map((c) => `${plan.nodes.find((n) => n.publicIP === c.ip)!.name} ${/-> (\w+):/.exec(c.name)![1]}`));
    for (const n of plan.nodes) for (const g of plan.guests) expect(pairs, `${n.name} ${g.name}`).toContain(`${n.name} ${g.name}`);
    // Reply paths: one per (entering node, other guest node): 3 x 2.
    expect(planReplyPathChecks(state, plan).map((c) => `${c.entering.name}>${c.expected.name}`).sort()).toEqual(['node1>node1', 'node1>node1', 'node2>node2', 'node2>node2', 'node3>node3', 'node3>node3']);
  });
});

describe('what lab up prints', () => {
  it('every node: one curl line each, "all 3 nodes applied", the ct-sync channel or the stateless tags', async () => {
    const summary = async (mode: 'ct-sync' | 'stateless-nat') => {
      const { state } = await grownLabState(3, mode);
      const plan = planLab(state, { prefix: 'cgwlab-', brNetfilter: false });
      const lab = { prefix: 'cgwlab-', dir: '/run/cgw-sync/lab/cgwlab-', plan, state, record: { prefix: 'cgwlab-', createdAt: '', processes: [] }, repo: '/x.git', url: 'http://127.0.0.1:1/state.git', revision: 'a'.repeat(40), agents: {}, vmBootMs: {} };
      return labSummary(lab as unknown as Lab);
    };
    const ct = await summary('ct-sync');
    expect(ct).toContain('lab cgwlab- is up: node1 + node2 + node3, ct-sync, br_netfilter off; all 3 nodes applied aaaaaaaaaaaa');
    for (const [ip, node, guest] of [['11', 'node1', 'guest2'], ['12', 'node2', 'guest1'], ['13', 'node3', 'guest1']]) {
      expect(ct).toMatch(new RegExp(`  ip netns exec cgwlab-client curl -s http://192\\.168\\.122\\.${ip}/ +# enters ${node}: web-${node} -> ${guest}\n`));
    }
    expect(ct).toContain('ct-sync channel   multicast 225.0.0.50 udp/3780 between 10.5.5.251, 10.5.5.252, 10.5.5.253');
    expect(await summary('stateless-nat')).toContain('stateless tags    node1 1, node2 2, node3 3 (tagged port = target port + tag x 10000)');
  });
});

describe('verify --rev with more nodes', () => {
  it('runs a 3-node revision in a lab of 3 nodes, and refuses more than it can run with the reason', async () => {
    const three = containForVerify((await grownLabState(3, 'ct-sync')).state, { prefix: 'cgwv1-', brNetfilter: false });
    expect(three.ok && three.contained.plan.nodes.map((n) => n.name)).toEqual(['node1', 'node2', 'node3']);
    const five = containForVerify((await grownLabState(5, 'ct-sync')).state, { prefix: 'cgwv1-', brNetfilter: false });
    expect(!five.ok && five.refusals[0]).toMatch(/^5 nodes: verify runs at most 4 /);
  });
});

describe('ct-sync with 3 nodes', () => {
  it('conntrackd joins the multicast group on the guest bridge, in NOTRACK mode (FTFW tracks one sender)', async () => {
    const { state } = await grownLabState(3, 'ct-sync');
    const conf = renderConntrackdConf(state, state.nodes[2]!, conntrackdPaths('/var/lib/cgw-sync/conntrackd'));
    expect(conf).toContain('\tMulticast {\n\t\tIPv4_address 225.0.0.50\n\t\tGroup 3780\n\t\tIPv4_interface 10.5.5.253\n\t\tInterface guestbr0\n');
    expect(conf).not.toContain('UDP {');
    // The internal cache stays on: it is what flushes each message at once (src/settings/conntrackd.ts).
    expect(conf).toContain('Sync {\n\tMode NOTRACK {\n\t\tDisableExternalCache On\n\t}\n');
    expect(conf).not.toContain('FTFW');
  });

  it('the sync guard covers the group; early replies are copied to both other nodes; only the entering node sends a copy on', async () => {
    const { state } = await grownLabState(3, 'ct-sync');
    const sync = printTable(renderNode(state, 'node2').tables.find((t) => t.family === 'bridge')!);
    expect(sync).toContain('iifname != { "eth1.100", "eth2.100" } ip daddr { 10.5.5.251, 10.5.5.252, 10.5.5.253, 225.0.0.50 } udp dport 3780 drop');
    const raw = printTable(renderNode(state, 'node2').tables.find((t) => t.name === 'cgw_raw')!);
    expect(raw).toMatch(/ct state \{ invalid, new \} ether saddr \{ [^}]+ \} dup to 10\.5\.5\.251 device "guestbr0" dup to 10\.5\.5\.253 device "guestbr0" drop/);
    expect(raw).toMatch(/ip saddr \. udp sport \{ [^}]+ \} ether saddr != \{ [^}]+ \} ct original ip daddr != 192\.168\.122\.12 drop/);
    // Two nodes: the only other node is the entering one, nothing to tell apart.
    const two = printTable(renderNode({ ...seed, cluster: { ...seed.cluster, nat: { mode: 'ct-sync', forwardSnat: false } } }, 'node2').tables.find((t) => t.name === 'cgw_raw')!);
    expect(two).not.toContain('ct original');
  });
});
