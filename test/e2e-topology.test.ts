// End to end on the real lab topology (src/lab): two node namespaces sharing a guest VLAN, a public
// segment with a client, netns guests running the lab responder, real nft rulesets in the nodes.
// Run once with br_netfilter off and once on in the nodes, each lab under its own prefix.
//
// Everything lives in namespaces this file creates (prefix cgwt<pid><a|b>-); nothing touches the
// root namespace. afterAll removes them (also after a failure) and asserts none is left.
import { NftCli } from '../src/nft/backend.js';
import { applyNodeNft, planNodeNft } from '../src/reconcile/nft.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadStateOrThrow } from '../src/state/index.js';
import type { ClusterState } from '../src/state/types.js';
import { namespacePids, runIn } from '../src/netns/netns.js';
import { processAlive, processStartTime } from '../src/proc/process.js';
import type { LabPlan } from '../src/lab/plan.js';
import { labDown, labNamespaces, labUp } from '../src/lab/topology.js';
import { arpProbe, httpProbe, tcpProbe, udpProbe } from '../src/lab/probes.js';
import { linkMac, planChecks, runChecks } from '../src/lab/check.js';
import { parseReply } from '../src/lab/responder.js';

const STATE_DIR = join(import.meta.dirname, '..', 'state-example');

// Each node's ruleset is rendered from state-example/ and applied by cgw-sync itself (plan ->
// one nft transaction -> read back), inside the node's namespace.
async function loadRulesets(plan: LabPlan): Promise<void> {
  for (const node of plan.nodes) {
    const nft = new NftCli({ prefix: ['ip', 'netns', 'exec', node.ns] });
    const planned = await planNodeNft(state, node.name, nft);
    expect(planned.plan.changes.map((c) => c.action)).toEqual(['create', 'create']);
    await applyNodeNft(planned, nft);
    expect((await planNodeNft(state, node.name, nft)).plan.changes).toEqual([]);
  }
}

let state: ClusterState;
beforeAll(async () => {
  state = await loadStateOrThrow(STATE_DIR);
});

describe.each([
  { brNetfilter: false, tag: 'a' },
  { brNetfilter: true, tag: 'b' },
])('lab topology, full-nat, br_netfilter $brNetfilter', ({ brNetfilter, tag }) => {
  const prefix = `cgwt${process.pid}${tag}-`;
  let tmp: string;
  let plan: LabPlan;
  /** Distinct MACs answering ARP for the gateway from each guest BEFORE the ARP filter exists. */
  let unfilteredArp: Record<string, string[]>;

  const node = (name: string) => plan.nodes.find((n) => n.name === name)!;
  const guest = (name: string) => plan.guests.find((g) => g.name === name)!;
  const client = () => plan.client.ns;

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'cgw-lab-'));
    plan = await labUp(state, { prefix, brNetfilter, runRoot: tmp });
    // Negative control for the ARP probe: without the egress filter both nodes answer.
    const arp = await Promise.all(plan.guests.map((g) => arpProbe(g.ns, g.dev, state.cluster.gatewayIP)));
    unfilteredArp = Object.fromEntries(plan.guests.map((g, i) => [g.name, arp[i].macs]));
    await loadRulesets(plan);
  });

  afterAll(async () => {
    // The guests' responder processes, to check that down stops them too.
    const procs: Array<{ pid: number; start?: string }> = [];
    try {
      for (const ns of await labNamespaces(prefix)) {
        for (const pid of await namespacePids(ns)) procs.push({ pid, start: processStartTime(pid) });
      }
      await labDown(prefix, { runRoot: tmp });
    } finally {
      if (tmp) await rm(tmp, { recursive: true, force: true });
    }
    expect(await labNamespaces(prefix)).toEqual([]);
    expect(procs.length).toBeGreaterThan(0);
    expect(procs.filter((p) => processAlive(p.pid, p.start))).toEqual([]);
  });

  it('builds the namespaces and sets br_netfilter as asked', async () => {
    const names = await labNamespaces(prefix);
    for (const ns of [...plan.namespaces, ...plan.guests.map((g) => g.ns)]) expect(names).toContain(ns);
    for (const n of plan.nodes) {
      const r = await runIn(n.ns, 'sysctl', ['-n', 'net.bridge.bridge-nf-call-iptables']);
      expect(r.stdout.trim()).toBe(brNetfilter ? '1' : '0');
    }
  });

  it('keeps IPv6 off on every lab link', async () => {
    for (const ns of [...plan.namespaces, ...plan.guests.map((g) => g.ns)]) {
      const r = await runIn(ns, 'ip', ['-6', '-o', 'addr', 'show']);
      expect(r.stdout.trim(), ns).toBe('');
    }
  });

  it('refuses a second lab up on the same prefix and leaves the running lab alone', async () => {
    await expect(labUp(state, { prefix, brNetfilter, runRoot: tmp })).rejects.toThrow(/already exists/);
    const r = await httpProbe(client(), node('node1').publicIP, 80);
    expect(r.ok, r.detail).toBe(true);
  });

  it('client reaches the node public IPs but not the guest subnet', async () => {
    await runIn(client(), 'ping', ['-c1', '-W2', node('node1').publicIP]);
    await runIn(client(), 'ping', ['-c1', '-W2', node('node2').publicIP]);
    const direct = await httpProbe(client(), guest('guest1').ip, 80, { timeoutS: 1 });
    expect(direct.ok).toBe(false);
  });

  it('HTTP to node1 reaches guest2 (on node2), to node2 reaches guest1 (on node1); source = entering node', async () => {
    const [viaNode1, viaNode2] = await Promise.all([
      httpProbe(client(), node('node1').publicIP, 80),
      httpProbe(client(), node('node2').publicIP, 80),
    ]);
    expect(viaNode1.ok, viaNode1.detail).toBe(true);
    expect(parseReply(viaNode1.reply!)).toEqual({ guest: 'guest2', from: node('node1').nodeIP, via: 'http/80' });
    expect(viaNode2.ok, viaNode2.detail).toBe(true);
    expect(parseReply(viaNode2.reply!)).toEqual({ guest: 'guest1', from: node('node2').nodeIP, via: 'http/80' });
  });

  it('TCP 2201/2202 and UDP 1231/1232 reach the right guest from both nodes', async () => {
    const cases = plan.nodes.flatMap((n) => [
      { n, proto: 'tcp', port: 2201, guest: 'guest1', via: 'tcp/22' },
      { n, proto: 'tcp', port: 2202, guest: 'guest2', via: 'tcp/22' },
      { n, proto: 'udp', port: 1231, guest: 'guest1', via: 'udp/123' },
      { n, proto: 'udp', port: 1232, guest: 'guest2', via: 'udp/123' },
    ]);
    const results = await Promise.all(
      cases.map((c) => (c.proto === 'tcp' ? tcpProbe : udpProbe)(client(), c.n.publicIP, c.port)),
    );
    cases.forEach((c, i) => {
      const r = results[i];
      expect(r.ok, `${r.name}: ${r.detail}`).toBe(true);
      expect(parseReply(r.reply!), r.name).toEqual({ guest: c.guest, from: c.n.nodeIP, via: c.via });
    });
  });

  it('guests reach the public segment through the gateway IP (outbound SNAT to the node public IP)', async () => {
    for (const g of plan.guests) {
      const route = await runIn(g.ns, 'ip', ['route', 'show', 'default']);
      expect(route.stdout).toContain(`via ${state.cluster.gatewayIP}`);
      await runIn(g.ns, 'ping', ['-c1', '-W2', plan.client.ip]);
    }
  });

  it('a port without a forward gets no answer', async () => {
    const r = await tcpProbe(client(), node('node1').publicIP, 2299, { timeoutS: 1 });
    expect(r.ok).toBe(false);
  });

  it('ARP for the gateway IP is answered on each guest segment only by the local node', async () => {
    await Promise.all(
      plan.guests.map(async (g) => {
        const local = node(g.node);
        const other = plan.nodes.find((n) => n !== local)!;
        const localMac = await linkMac({ ns: local.ns, dev: local.guestBridge });
        const otherMac = await linkMac({ ns: other.ns, dev: other.guestBridge });
        // Before the filter both nodes answered, so the probe does see a second answer.
        expect(unfilteredArp[g.name], g.name).toEqual([localMac, otherMac].sort());
        const r = await arpProbe(g.ns, g.dev, state.cluster.gatewayIP, { expectMacs: [localMac] });
        expect(r.ok, `${g.name}: ${r.detail}`).toBe(true);
        expect(r.macs).toEqual([localMac]);
      }),
    );
  });

  it('lab check (the product check derived from the state) passes', async () => {
    const results = await runChecks(planChecks(state, plan));
    // 2 web forwards (one per node) + 4 ssh/ntp forwards on each of 2 nodes + outbound and ARP
    // from 2 guests.
    expect(results).toHaveLength(2 + 8 + 2 + 2);
    for (const r of results) expect(r.ok, `${r.name}: ${r.detail}`).toBe(true);
  });
});
