// One gateway MAC, in the two-node dual-stack lab (full-nat, real nft in the node namespaces). A guest that
// moves keeps its namespace and so its neighbour table, as a live-migrated VM does: its veth's node
// end is moved from node1's guest bridge to node2's. Right after the move (no waiting):
//   negative control: per-node MACs, nothing announced -> the guest's gateway entries (IPv4, and
//     IPv6 link-local) still name node1's bridge MAC and its traffic crosses the trunk to node1
//     (the client sees node1's IPs);
//   announcement: node2 sends the gratuitous ARP and unsolicited NAs (announceGateway: arping,
//     ndptool) -> the entries name node2's MAC at once and the client sees node2's IPs;
//   shared gateway MAC (table bridge cgw_gwmac): the entry names the shared MAC before and after,
//     node2 takes the frames -> the client sees node2's IP at once, over IPv4 and IPv6 (the
//     guest's entry for the gateway's link-local address, its IPv6 default route, names the shared
//     MAC too). Also: ARP from the gateway IP (replies and requests) and NDP from the gateway's
//     IPv6 addresses name the shared MAC (the guest's own kernel takes the rewritten advertisement,
//     so its checksum holds), and no bridge (node1, node2, the trunk) ever
//     learns the shared MAC, while the trunk does learn a spoofed source that is not the shared MAC.
// The nodes' guest bridges carry the state's guestBridge.mac (the lab pins them).
// Moving the veth end drops the guest's carrier for a moment, and Linux (since 5.0) evicts every
// neighbour entry of a link whose carrier goes down: the guest would start with an empty table
// and simply ask again, which is not what a migrated VM sees (its NIC never loses carrier, its
// stale entry stays). So the guest's eth0 keeps its entries on carrier loss
// (net.ipv4.conf.eth0.arp_evict_nocarrier=0, net.ipv6.conf.eth0.ndisc_evict_nocarrier=0, Linux
// 5.16+), and every move test first checks that the entry survived the move.
// Namespaces: prefix cgwgm<pid>-, removed in afterAll (also after a failure); none may be left.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterState } from '../src/state/types.js';
import type { LabGuest, LabNode, LabPlan } from '../src/lab/plan.js';
import { labDriver } from '../src/lab/topology.js';
import { arpProbe, ndpProbe, tcpProbe } from '../src/lab/probes.js';
import { formatResults, linkMac, planChecks, runChecks } from '../src/lab/check.js';
import { runIn, runInUnchecked } from '../src/netns/netns.js';
import { resolveNode } from '../src/render/node-view.js';
import { announceGateway, CommandAnnouncer } from '../src/guests/announce.js';
import { applyRulesets, testLab } from './helpers/modes-lab.js';
import { loadDualStack } from './helpers/dual-stack.js';

const prefix = `cgwgm${process.pid}-`;
const SHARED = '02:00:5e:05:05:fe';
/** Each node's guest-bridge MAC in the state (guestBridge.mac); the lab pins the bridges to them. */
const BRIDGE_MACS: Record<string, string> = { node1: '02:00:00:05:05:01', node2: '02:00:00:05:05:02' };
let plan: LabPlan;
let down: (() => Promise<void>) | undefined;
let base: ClusterState;

const node = (name: string): LabNode => plan.nodes.find((n) => n.name === name)!;
const guest1 = (): LabGuest => plan.guests.find((g) => g.name === 'guest1')!;
const gatewayIP = () => base.cluster.gatewayIP;
/** The gateway guest1 routes IPv6 through (its default route is via the link-local address). */
const gatewayLinkLocal = () => base.cluster.ipv6!.gatewayLinkLocal;

const bridgeMac = (name: string): string => BRIDGE_MACS[name]!;

/** The state with the shared gateway MAC (the nodes' bridge MACs are in base already). */
const sharedState = (): ClusterState => ({ ...base, cluster: { ...base.cluster, gatewayMAC: SHARED } });

/** guest1's node-side veth end, wherever it is now. */
const guestPort = () => labDriver(plan, node('node1')).hostIf('guest1');

/** Move guest1's port (its veth's node end) to another node's guest bridge; the guest keeps its namespace. */
async function moveGuest1(from: LabNode, to: LabNode): Promise<void> {
  const port = guestPort();
  await runIn(from.ns, 'ip', ['link', 'set', port, 'netns', to.ns]);
  await runIn(to.ns, 'ip', ['link', 'set', port, 'master', to.guestBridge]);
  await runIn(to.ns, 'ip', ['link', 'set', port, 'up']);
}

/** guest1's neighbour entry for the gateway (IPv4, or an IPv6 address): its MAC, or undefined without one. */
async function gatewayEntry(ip = gatewayIP()): Promise<string | undefined> {
  const r = await runIn(guest1().ns, 'ip', ['-j', 'neigh', 'show', 'to', ip, 'dev', guest1().dev]);
  const entry = (JSON.parse(r.stdout || '[]') as Array<{ lladdr?: string }>)[0];
  return entry?.lladdr?.toLowerCase();
}

/** A connection from guest1 to the client (over IPv4, or IPv6): the public IP the client saw it come from. */
async function outboundSource(family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<string | undefined> {
  const r = await tcpProbe(guest1().ns, family === 'ipv4' ? plan.client.ip : plan.client.ipv6!, 22, { timeoutS: 3 });
  return r.ok ? /OK from (\S+) via/.exec(r.reply ?? '')?.[1] : undefined;
}

/** guest1 back on node1 with a fresh gateway entry (learnt by talking to the client). */
async function resetOnNode1(): Promise<void> {
  if ((await runInUnchecked(node('node2').ns, 'ip', ['link', 'show', guestPort()])).exitCode === 0) await moveGuest1(node('node2'), node('node1'));
  await runIn(guest1().ns, 'ip', ['neigh', 'flush', 'dev', guest1().dev]);
  expect(await outboundSource()).toBe(node('node1').publicIP);
  expect(await outboundSource('ipv6')).toBe(node('node1').publicIPv6);
}

/** MACs a bridge's forwarding database has learnt (or holds), lower case. */
async function fdbMacs(ns: string, bridge: string): Promise<string[]> {
  const r = await runIn(ns, 'bridge', ['-j', 'fdb', 'show', 'br', bridge]);
  return (JSON.parse(r.stdout || '[]') as Array<{ mac: string }>).map((e) => e.mac.toLowerCase());
}

/** Every bridge of the guest VLAN: both guest bridges and the trunk segment. */
const vlanBridges = () => [...plan.nodes.map((n) => ({ ns: n.ns, bridge: n.guestBridge })), { ns: plan.trunk.ns, bridge: plan.trunk.bridge }];

beforeAll(async () => {
  const loaded = await loadDualStack();
  expect(loaded.diagnostics).toEqual([]);
  const s = loaded.state!;
  base = { ...s, nodes: s.nodes.map((n) => ({ ...n, guestBridge: { ...n.guestBridge, mac: bridgeMac(n.name) } })) };
  ({ plan, down } = await testLab(base, { prefix, brNetfilter: false }));
  // A migrated VM keeps its neighbour entries; see the header.
  await runIn(guest1().ns, 'sysctl', ['-q', '-w', `net.ipv4.conf.${guest1().dev}.arp_evict_nocarrier=0`, `net.ipv6.conf.${guest1().dev}.ndisc_evict_nocarrier=0`]);
  await applyRulesets(base, plan);
}, 120_000);

afterAll(async () => {
  await down?.();
}, 60_000);

it("the lab pins each node's guest bridge to the state's guestBridge.mac", async () => {
  for (const n of plan.nodes) expect(await linkMac({ ns: n.ns, dev: n.guestBridge }), n.name).toBe(bridgeMac(n.name));
});

describe('a guest moved between nodes, per-node gateway MACs', () => {
  it('negative control: without an announcement its gateway entry stays node1 and its traffic goes back to node1', async () => {
    await resetOnNode1();
    expect(await gatewayEntry()).toBe(bridgeMac('node1'));
    expect(await gatewayEntry(gatewayLinkLocal())).toBe(bridgeMac('node1'));
    await moveGuest1(node('node1'), node('node2'));
    expect(await gatewayEntry()).toBe(bridgeMac('node1'));
    expect(await gatewayEntry(gatewayLinkLocal())).toBe(bridgeMac('node1'));
    expect(await outboundSource()).toBe(node('node1').publicIP);
    expect(await outboundSource('ipv6')).toBe(node('node1').publicIPv6);
  }, 60_000);

  it('announced by node2 (gratuitous ARP, unsolicited NA): the entries name node2 at once, and the traffic leaves through node2', async () => {
    await resetOnNode1();
    await moveGuest1(node('node1'), node('node2'));
    expect(await gatewayEntry()).toBe(bridgeMac('node1'));
    expect(await gatewayEntry(gatewayLinkLocal())).toBe(bridgeMac('node1'));
    const t0 = Date.now();
    const view = resolveNode(base, 'node2');
    const sent = await announceGateway(view, base.guests.find((g) => g.name === 'guest1')!, new CommandAnnouncer({ prefix: ['ip', 'netns', 'exec', node('node2').ns] }));
    const na = 'unsolicited neighbour advertisement on guestbr0';
    expect(sent).toEqual([
      { family: 'ipv4', ip: gatewayIP(), guest: 'guest1', ok: true, detail: 'gratuitous ARP on guestbr0' },
      { family: 'ipv6', ip: base.cluster.ipv6!.gatewayIP, guest: 'guest1', ok: true, detail: na },
      { family: 'ipv6', ip: gatewayLinkLocal(), guest: 'guest1', ok: true, detail: na },
    ]);
    expect(await gatewayEntry()).toBe(bridgeMac('node2'));
    expect(await gatewayEntry(gatewayLinkLocal())).toBe(bridgeMac('node2'));
    expect(await outboundSource()).toBe(node('node2').publicIP);
    expect(await outboundSource('ipv6')).toBe(node('node2').publicIPv6);
    console.log(`announcement: guest1 reached the client through node2 over IPv4 and IPv6 ${Date.now() - t0} ms after the move (arping, ndptool included)`);
  }, 60_000);
});

describe('a guest moved between nodes, one shared gateway MAC', () => {
  beforeAll(async () => {
    await resetOnNode1();
    await applyRulesets(sharedState(), plan);
  }, 60_000);

  it('ARP for the gateway is answered with the shared MAC, by the local node only', async () => {
    const arp = await arpProbe(guest1().ns, guest1().dev, gatewayIP(), { count: 2, timeoutS: 2 });
    expect(arp.macs).toEqual([SHARED]);
  });

  it("NDP for the gateway's IPv6 addresses is answered with the shared MAC, by the local node only", async () => {
    for (const ip of [gatewayLinkLocal(), base.cluster.ipv6!.gatewayIP]) {
      const ndp = await ndpProbe(guest1().ns, guest1().dev, ip, { count: 2, timeoutS: 2 });
      expect(ndp.macs, ip).toEqual([SHARED]);
    }
  });

  it("the guest's own kernel takes the rewritten advertisement (its checksum holds): the IPv6 gateway entry names the shared MAC", async () => {
    await runIn(guest1().ns, 'ip', ['neigh', 'flush', 'dev', guest1().dev]);
    expect(await outboundSource('ipv6')).toBe(node('node1').publicIPv6);
    expect(await gatewayEntry(gatewayLinkLocal())).toBe(SHARED);
  });

  it("lab check passes with the shared MAC: every forward and outbound path, ARP and NDP answered with the shared MAC only", async () => {
    const checks = planChecks(sharedState(), plan);
    const neighbour = checks.filter((c) => c.kind === 'arp' || c.kind === 'ndp');
    expect(neighbour.length).toBeGreaterThan(0);
    for (const c of neighbour) expect(c.name).toContain('only the shared gateway MAC answers');
    const results = await runChecks(checks, 5, 4);
    expect(results.filter((r) => !r.ok), formatResults(results)).toEqual([]);
  }, 120_000);

  it('a request the node sends from the gateway IP names the shared MAC too', async () => {
    await runIn(guest1().ns, 'ip', ['neigh', 'flush', 'dev', guest1().dev]);
    // The guest takes an entry for the sender of a request for its own address.
    await runInUnchecked(node('node1').ns, 'arping', ['-c', '1', '-w', '1', '-i', node('node1').guestBridge, '-S', gatewayIP(), guest1().ip]);
    expect(await gatewayEntry()).toBe(SHARED);
  });

  it('the guest keeps its gateway entry when it moves, and its traffic leaves through the new node at once', async () => {
    await runIn(guest1().ns, 'ip', ['neigh', 'flush', 'dev', guest1().dev]);
    expect(await outboundSource()).toBe(node('node1').publicIP);
    expect(await outboundSource('ipv6')).toBe(node('node1').publicIPv6);
    expect(await gatewayEntry()).toBe(SHARED);
    expect(await gatewayEntry(gatewayLinkLocal())).toBe(SHARED);
    await moveGuest1(node('node1'), node('node2'));
    const t0 = Date.now();
    expect(await gatewayEntry()).toBe(SHARED);
    expect(await gatewayEntry(gatewayLinkLocal())).toBe(SHARED);
    expect(await outboundSource()).toBe(node('node2').publicIP);
    expect(await outboundSource('ipv6')).toBe(node('node2').publicIPv6);
    console.log(`shared MAC: guest1 reached the client through node2 ${Date.now() - t0} ms after the move, nothing announced`);
  }, 60_000);

  it('no bridge ever learns the shared MAC; a frame from it towards the trunk is dropped, another spoofed source is not', async () => {
    // node1 floods an ARP request from its node IP with a spoofed source MAC: the shared one, then another.
    const other = '02:dd:00:00:00:01';
    const arping = (mac: string) => runInUnchecked(node('node1').ns, 'arping', ['-c', '1', '-w', '1', '-i', node('node1').guestBridge, '-s', mac, '-S', node('node1').nodeIP, '10.5.5.99']);
    await arping(SHARED);
    await arping(other);
    for (const b of vlanBridges()) expect(await fdbMacs(b.ns, b.bridge), `${b.ns} ${b.bridge}`).not.toContain(SHARED);
    // The probe can see a leak: the other spoofed source crossed the trunk and was learnt there.
    expect(await fdbMacs(plan.trunk.ns, plan.trunk.bridge)).toContain(other);
    expect(await fdbMacs(node('node2').ns, node('node2').guestBridge)).toContain(other);
  }, 30_000);
});
