// Dual stack end to end on the real nft (1.0.6) in network namespaces: the two-node lab (src/lab)
// made dual stack (src/lab/ipv6.ts), rulesets rendered and applied by cgw-sync, full-nat.
//
// What must hold: what cgw-sync renders for IPv6 (the ip6 nat table, the raw-payload ND target
// match, RA drops) is listed back by nft exactly as rendered (the plan after apply is empty);
// every lab check passes over IPv4 and IPv6 (forwards on every node, casual outbound, NDP for the
// shared gateway's global and link-local addresses answered by the guest's own node only); a
// node's own address is still resolved across the trunk; router advertisements from a node never
// reach a guest on another node. Negative controls: without the trunk table, the other node
// answers NDP for the gateway too and its RAs reach the other node's guests.
// Namespaces: prefix cgwv6<pid>-, removed in afterAll (also after a failure).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterState } from '../src/state/types.js';
import type { LabGuest, LabNode, LabPlan } from '../src/lab/plan.js';
import { runIn } from '../src/netns/netns.js';
import { waitUntil } from '../src/proc/process.js';
import { planChecks, linkMac, runChecks, formatResults } from '../src/lab/check.js';
import { httpProbe, ndpProbe } from '../src/lab/probes.js';
import { parseReply } from '../src/lab/responder.js';
import { applyRulesets, STATE_DIR, testLab } from './helpers/modes-lab.js';
import { loadStateOrThrow } from '../src/state/index.js';
import { loadDualStack } from './helpers/dual-stack.js';

/** A router advertisement (RFC 4861 4.2): type 134, code 0, checksum (the kernel fills it), hop limit 64, no flags, router lifetime 1800 s, reachable and retransmission timers 0. */
const ROUTER_ADVERTISEMENT = Buffer.from([134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);

/** Send one RA from the node's guest bridge to all nodes (ff02::1), hop limit 255 as RFC 4861 requires. */
async function sendRouterAdvertisement(node: LabNode): Promise<void> {
  // IPPROTO_IPV6 (41), IPV6_MULTICAST_HOPS (18).
  await runIn(node.ns, 'socat', ['-u', 'STDIN', `IP6-SENDTO:[ff02::1]:58,so-bindtodevice=${node.guestBridge},setsockopt-int=41:18:255`], { input: ROUTER_ADVERTISEMENT });
}

/** Default routes the guest learnt from router advertisements. */
async function raRoutes(guest: LabGuest): Promise<string> {
  return (await runIn(guest.ns, 'ip', ['-6', 'route', 'show', 'default', 'proto', 'ra'])).stdout.trim();
}

/** Send RAs from node until the guest has learnt one (bounded): the guest's kernel took it. */
async function advertiseUntilLearnt(node: LabNode, guest: LabGuest): Promise<boolean> {
  return waitUntil(async () => {
    await sendRouterAdvertisement(node);
    return (await raRoutes(guest)) !== '';
  }, 5_000);
}

async function forgetRouters(guests: LabGuest[]): Promise<void> {
  for (const g of guests) {
    await runIn(g.ns, 'ip', ['-6', 'route', 'flush', 'proto', 'ra']);
    await runIn(g.ns, 'ip', ['-6', 'neigh', 'flush', 'dev', g.dev]);
  }
}

describe('dual stack in namespaces (full-nat, real nft)', () => {
  const prefix = `cgwv6${process.pid}-`;
  let down: (() => Promise<void>) | undefined;
  let plan: LabPlan;
  let state: ClusterState;
  const node = (name: string) => plan.nodes.find((n) => n.name === name)!;
  const guest = (name: string) => plan.guests.find((g) => g.name === name)!;
  const dropTrunkTables = () => Promise.all(plan.nodes.map((n) => runIn(n.ns, 'nft', ['delete', 'table', 'netdev', state.cluster.tables.arp])));

  beforeAll(async () => {
    const loaded = await loadDualStack();
    expect(loaded.diagnostics).toEqual([]);
    state = loaded.state!;
    ({ plan, down } = await testLab(state, { prefix, brNetfilter: false }));
    // Applies, then plans again: an empty plan means nft lists every IPv6 expression as rendered.
    await applyRulesets(state, plan);
  }, 90_000);

  afterAll(() => down?.());

  it('nft 1.0.6 lists the ND target match as raw payload on the trunks', async () => {
    const listed = (await runIn(node('node1').ns, 'nft', ['list', 'table', 'netdev', state.cluster.tables.arp])).stdout;
    // Set items in the kernel's order: either way round.
    const target = /icmpv6 type \{ nd-neighbor-(?:solicit|advert), nd-neighbor-(?:solicit|advert) \} @th,64,128 \{ (0x[0-9a-f]+), (0x[0-9a-f]+) \} drop/.exec(listed);
    expect(target?.slice(1).sort()).toEqual(['0xfd050005000500000000000000000254', '0xfe800000000000000000000000000001']);
    expect(listed).toContain('icmpv6 type nd-router-advert drop');
  });

  it('lab check passes over IPv4 and IPv6: forwards, outbound, ARP and NDP for the gateway', async () => {
    const checks = planChecks(state, plan);
    expect(checks.filter((c) => c.kind === 'ndp')).toHaveLength(4);
    expect(checks.filter((c) => c.name.includes('(IPv6)'))).toHaveLength(12);
    const results = await runChecks(checks, 5, 4);
    expect(results.filter((r) => !r.ok), formatResults(results)).toEqual([]);
  }, 120_000);

  it('a cross-node IPv6 forward: the guest sees the entering node\'s guest-bridge IPv6 (full-nat SNAT)', async () => {
    const r = await httpProbe(plan.client.ns, node('node1').publicIPv6!, 80);
    expect(r.ok, r.detail).toBe(true);
    expect(parseReply(r.reply!)).toEqual({ guest: 'guest2', from: node('node1').nodeIPv6, via: 'http/80' });
  });

  it("a node's own address still resolves across the trunk", async () => {
    const r = await ndpProbe(guest('guest2').ns, 'eth0', node('node1').nodeIPv6!, { expectMacs: [await linkMac({ ns: node('node1').ns, dev: 'guestbr0' })] });
    expect(r.ok, r.detail).toBe(true);
  });

  it('router advertisements never cross a trunk (negative control: without the trunk table they do)', async () => {
    const [g1, g2] = [guest('guest1'), guest('guest2')];
    try {
      expect(await advertiseUntilLearnt(node('node1'), g1)).toBe(true);
      expect(await raRoutes(g2)).toBe('');
      await forgetRouters([g1, g2]);
      await dropTrunkTables();
      expect(await advertiseUntilLearnt(node('node1'), g2)).toBe(true);
    } finally {
      await forgetRouters([g1, g2]);
      await applyRulesets(state, plan);
    }
  }, 30_000);

  it('negative control: without the trunk table the other node answers NDP for the gateway too', async () => {
    const g2 = guest('guest2');
    const both = await Promise.all(plan.nodes.map((n) => linkMac({ ns: n.ns, dev: n.guestBridge })));
    try {
      await dropTrunkTables();
      const r = await ndpProbe(g2.ns, g2.dev, 'fd05:5:5::254', { expectMacs: both });
      expect(r.ok, r.detail).toBe(true);
    } finally {
      await forgetRouters([g2]);
      await applyRulesets(state, plan);
    }
    const again = await ndpProbe(g2.ns, g2.dev, 'fd05:5:5::254', { expectMacs: [both[1]!] });
    expect(again.ok, again.detail).toBe(true);
  }, 30_000);
  it('removing ipv6 from the state deletes the ip6 nat table; a foreign ip6 table stays byte-identical', async () => {
    const ns = node('node1').ns;
    await runIn(ns, 'nft', ['add', 'table', 'ip6', 'foreign']);
    await runIn(ns, 'nft', ['add chain ip6 foreign c { type filter hook output priority 0; ip6 daddr ::1 accept; }']);
    const foreign = async () => (await runIn(ns, 'nft', ['list', 'table', 'ip6', 'foreign'])).stdout;
    const before = await foreign();
    const tables = async () => (await runIn(ns, 'nft', ['list', 'tables'])).stdout.split('\n').filter(Boolean).sort();
    try {
      expect(await tables()).toContain(`table ip6 ${state.cluster.tables.nat6 ?? 'cgw_nat6'}`);
      await applyRulesets(await loadStateOrThrow(STATE_DIR), plan);
      const after = await tables();
      expect(after.filter((t) => t.startsWith('table ip6'))).toEqual(['table ip6 foreign']);
      expect(after).toContain(`table ip ${state.cluster.tables.nat}`);
      expect(await foreign()).toBe(before);
    } finally {
      await runIn(ns, 'nft', ['delete', 'table', 'ip6', 'foreign']);
      await applyRulesets(state, plan);
    }
  }, 30_000);
});
