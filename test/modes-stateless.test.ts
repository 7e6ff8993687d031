// stateless-nat end to end in network namespaces: the two-node lab (src/lab) with rulesets rendered
// in stateless-nat and applied by cgw-sync, the guests configured with the snippet cgw-sync prints
// (`render --guest`). Run with br_netfilter on (the default in a new namespace) and off.
//
// What must hold: forwards work across nodes for TCP and UDP, the guest sees the client's own
// address, the reply leaves through the guest's own node (counters in a test-only table), and no
// node keeps a conntrack entry for the forwarded flows.
// Namespaces: prefix cgwsl<pid><a|b>-, removed in afterAll (also after a failure).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterState } from '../src/state/types.js';
import type { LabPlan } from '../src/lab/plan.js';
import { labDown, labNamespaces, labUp } from '../src/lab/topology.js';
import { runIn } from '../src/netns/netns.js';
import { tcpProbe, udpProbe, httpProbe } from '../src/lab/probes.js';
import { parseReply } from '../src/lab/responder.js';
import { runReplyPathChecks } from '../src/lab/reply-path.js';
import { configureLabGuests } from '../src/lab/mode-guests.js';
import { applyRulesets, applySettings, conntrackEntries, counterPackets, stateInMode } from './helpers/modes-lab.js';

describe.each([
  { brNetfilter: true, tag: 'a' },
  { brNetfilter: false, tag: 'b' },
])('stateless-nat in namespaces, br_netfilter $brNetfilter', ({ brNetfilter, tag }) => {
  const prefix = `cgwsl${process.pid}${tag}-`;
  let tmp: string;
  let plan: LabPlan;
  let state: ClusterState;
  const node = (name: string) => plan.nodes.find((n) => n.name === name)!;

  beforeAll(async () => {
    state = await stateInMode('stateless-nat');
    tmp = await mkdtemp(join(tmpdir(), 'cgw-sl-'));
    plan = await labUp(state, { prefix, brNetfilter, runRoot: tmp });
    await applyRulesets(state, plan);
    const settings = await applySettings(state, plan, tmp);
    // accept_local on the guest bridge was the one sysctl the lab did not have already.
    expect(settings[0].plan.changes.map((c) => (c.kind === 'sysctl' ? `${c.key}=${c.to}` : c.kind))).toContain('net.ipv4.conf.guestbr0.accept_local=1');
    // The guests load the snippet `cgw-sync render --guest <name>` prints (twice: it replaces itself).
    await configureLabGuests(state, plan);
    await configureLabGuests(state, plan);
    // Test-only counters in the nodes' forward hook (priority 10, after everything cgw-sync owns):
    // replies leaving through the uplink with the entering node's public address as source.
    for (const n of plan.nodes) {
      const other = plan.nodes.find((x) => x !== n)!;
      const file = join(tmp, `${n.name}-counters.nft`);
      await writeFile(
        file,
        `table ip cgwtest {
          chain replies {
            type filter hook forward priority 10; policy accept;
            oifname "${n.uplink}" ip saddr ${other.publicIP} tcp sport 80 counter
            oifname "${n.uplink}" ip saddr ${n.publicIP} tcp sport 80 counter
            oifname "${n.uplink}" ip saddr 10.5.5.0/24 counter
          }
        }\n`,
      );
      await runIn(n.ns, 'nft', ['-f', file]);
    }
  }, 60_000);

  afterAll(async () => {
    try {
      await labDown(prefix, { runRoot: tmp });
    } finally {
      if (tmp) await rm(tmp, { recursive: true, force: true });
    }
    expect(await labNamespaces(prefix)).toEqual([]);
  });

  it('HTTP across nodes: the guest sees the client address; the reply leaves through the guest node', async () => {
    const [viaNode1, viaNode2] = await Promise.all([
      httpProbe(plan.client.ns, node('node1').publicIP, 80),
      httpProbe(plan.client.ns, node('node2').publicIP, 80),
    ]);
    expect(viaNode1.ok, viaNode1.detail).toBe(true);
    expect(parseReply(viaNode1.reply!)).toEqual({ guest: 'guest2', from: plan.client.ip, via: 'http/80' });
    expect(viaNode2.ok, viaNode2.detail).toBe(true);
    expect(parseReply(viaNode2.reply!)).toEqual({ guest: 'guest1', from: plan.client.ip, via: 'http/80' });
    // node2 sent guest2's reply as node1 (192.168.122.11:80), and vice versa; nothing untranslated.
    const [n1, n2] = await Promise.all([counterPackets(node('node1').ns, 'cgwtest', 'replies'), counterPackets(node('node2').ns, 'cgwtest', 'replies')]);
    expect(n2[0]).toBeGreaterThan(0);
    expect(n1[0]).toBeGreaterThan(0);
    expect(n1[2] + n2[2]).toBe(0);
  });

  it('lab check reply paths: each cross-node SYN-ACK leaves through the guest node\'s uplink', async () => {
    const results = await runReplyPathChecks(state, plan);
    expect(results).toHaveLength(2);
    for (const r of results) {
      expect(r.ok, `${r.name}: ${r.detail}`).toBe(true);
      expect(r.name).toMatch(/entering (node1 \(guest on node2\) is answered through node2|node2 \(guest on node1\) is answered through node1)$/);
    }
  });

  it('TCP and UDP forwards reach the right guest from both nodes with the client address', async () => {
    const cases = plan.nodes.flatMap((n) => [
      { n, proto: 'tcp', port: 2201, guest: 'guest1', via: 'tcp/22' },
      { n, proto: 'tcp', port: 2202, guest: 'guest2', via: 'tcp/22' },
      { n, proto: 'udp', port: 1231, guest: 'guest1', via: 'udp/123' },
      { n, proto: 'udp', port: 1232, guest: 'guest2', via: 'udp/123' },
    ]);
    const results = await Promise.all(cases.map((c) => (c.proto === 'tcp' ? tcpProbe : udpProbe)(plan.client.ns, c.n.publicIP, c.port)));
    const got = results.map((r) => `${r.name}: ${r.ok ? JSON.stringify(parseReply(r.reply!)) : r.detail}`);
    const want = cases.map((c, i) => `${results[i].name}: ${JSON.stringify({ guest: c.guest, from: plan.client.ip, via: c.via })}`);
    expect(got).toEqual(want);
  });

  it('negative control: without the guest snippet the tagged port finds no service', async () => {
    await configureLabGuests({ ...state, cluster: { ...state.cluster, nat: { ...state.cluster.nat, mode: 'full-nat' } } }, plan);
    try {
      const r = await tcpProbe(plan.client.ns, node('node1').publicIP, 2202, { timeoutS: 1 });
      expect(r.ok).toBe(false);
    } finally {
      await configureLabGuests(state, plan);
    }
    const again = await tcpProbe(plan.client.ns, node('node1').publicIP, 2202);
    expect(again.ok, again.detail).toBe(true);
  });

  it('no node keeps a conntrack entry for the forwarded flows', async () => {
    for (const n of plan.nodes) expect(await conntrackEntries(n.ns, plan.client.ip), n.name).toEqual([]);
  });
});
