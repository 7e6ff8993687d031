// Dual stack without root: the IPv6 address parser, validation of the new (untrusted) fields with
// file:line:column:field, and the rendered tables. IPv4-only states must render exactly as before.
// The real nft's view of these rules: test/ipv6-netns.test.ts.
import { describe, expect, it } from 'vitest';
import { loadStateOrThrow } from '../src/state/index.js';
import { formatDiagnostics } from '../src/state/diagnostics.js';
import { canonicalIPv6, formatIPv6, parseIPv6, parseIPv6Cidr } from '../src/state/ipv6.js';
import { ownedTables, renderNode, stateTables } from '../src/render/render.js';
import { DEFAULT_OWNED_TABLES } from '../src/nft/ownership.js';
import { rawIPv6 } from '../src/render/ipv6.js';
import { printTable } from '../src/nft/text.js';
import { dualStackFiles, ipv6Twin } from '../src/lab/ipv6.js';
import type { Ruleset } from '../src/nft/model.js';
import { loadDualStack, type Edits } from './helpers/dual-stack.js';
import { STATE_DIR } from './helpers/modes-lab.js';
import { describeStep, planLab } from '../src/lab/plan.js';
import { planChecks } from '../src/lab/check.js';
import { labAdjustments, labCommitMessage } from '../src/lab/repo.js';
import { parseNdisc6Macs } from '../src/lab/probes.js';
import { gatewayVerdict } from '../src/rollout/checkpoint.js';
import { resolveNode } from '../src/render/node-view.js';

const table = (r: Ruleset, family: string, name: string) => r.tables.find((t) => t.family === family && t.name === name);

async function diagnostics(edits: Edits): Promise<string[]> {
  const r = await loadDualStack(edits);
  return formatDiagnostics(r.diagnostics).split('\n').filter(Boolean);
}

const replace = (from: string, to: string) => (t: string) => {
  if (!t.includes(from)) throw new Error(`edit: ${from} not in the file`);
  return t.replace(from, to);
};

describe('IPv6 addresses', () => {
  it('parses the textual forms and prints the one nft lists (RFC 5952)', () => {
    const cases: Array<[string, string]> = [
      ['fd05:5:5::fe', 'fd05:5:5::fe'],
      ['FD05:0005:0005:0000:0000:0000:0000:00FE', 'fd05:5:5::fe'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      ['::', '::'],
      ['::1', '::1'],
      ['fe80::', 'fe80::'],
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ];
    for (const [text, canonical] of cases) expect(canonicalIPv6(text)).toBe(canonical);
  });

  it('refuses what is not plain colon-hex', () => {
    for (const bad of ['', ':', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '::ffff:10.0.0.1', 'fe80::1%eth0', '12345::', 'g::1', '1:2:3:4:5:6:7:8::']) {
      expect(parseIPv6(bad), bad).toBeUndefined();
    }
    expect(parseIPv6Cidr('fd05::/129')).toBeUndefined();
    expect(formatIPv6(parseIPv6Cidr('fd05:5:5::7/64')!.network)).toBe('fd05:5:5::');
  });

  it('the lab plan twins each IPv4 address', () => {
    expect(ipv6Twin('10.5.5.201', 'fd05:5:5::/64')).toBe('fd05:5:5::201');
    expect(ipv6Twin('192.168.122.11', 'fd00:122::/64')).toBe('fd00:122::11');
  });
});

describe('dual-stack validation', () => {
  it('accepts the dual-stack state-example', async () => {
    expect(await diagnostics({})).toEqual([]);
  });

  it('refuses IPv6 in the modes that have no IPv6 rules, naming the file, line and field', async () => {
    for (const mode of ['ct-sync', 'stateless-nat']) {
      const out = await diagnostics({ 'cluster.yaml': replace('mode: full-nat', `mode: ${mode}`), 'nodes/node1.yaml': (t) => `${t}natTag: 1\n`, 'nodes/node2.yaml': (t) => `${t}natTag: 2\n` });
      expect(out).toEqual([expect.stringMatching(new RegExp(`^cluster\\.yaml:\\d+:\\d+: ipv6: IPv6 is supported in full-nat only; nat\\.mode ${mode} \\(cluster\\.yaml:16:9\\) has no IPv6 rules yet`))]);
    }
  });

  it('refuses addresses of the wrong class, outside the subnet, or used twice', async () => {
    const out = await diagnostics({
      'cluster.yaml': replace('gatewayLinkLocal: fe80::1', 'gatewayLinkLocal: fe80:0:0:1::1'),
      'nodes/node1.yaml': (t) => replace('publicIPv6: fd00:122::11', 'publicIPv6: ff02::1')(replace('nodeIPv6: fd05:5:5::251', 'nodeIPv6: fd05:5:6::251')(t)),
      'nodes/node2.yaml': replace('publicIPv6: fd00:122::12', 'publicIPv6: fd05:5:5::12'),
      'guests/guest1.yaml': replace('ipv6: fd05:5:5::201', 'ipv6: FD05:5:5:0::252'),
      'guests/guest2.yaml': replace('ipv6: fd05:5:5::202', 'ipv6: "fd05:5:5::"'),
    });
    expect(out).toEqual([
      expect.stringMatching(/^cluster\.yaml:\d+:\d+: ipv6\.gatewayLinkLocal: fe80:0:0:1::1 must be a link-local host address in fe80::\/64/),
      expect.stringMatching(/^guests\/guest1\.yaml:\d+:\d+: ipv6: fd05:5:5::252 is already used as nodeIPv6 of node "node2" \(nodes\/node2\.yaml:\d+:\d+\)$/),
      expect.stringMatching(/^guests\/guest2\.yaml:\d+:\d+: ipv6: fd05:5:5:: is the subnet-router anycast address of ipv6\.guestSubnet fd05:5:5::\/64$/),
      expect.stringMatching(/^nodes\/node1\.yaml:\d+:\d+: uplink\.publicIPv6: ff02::1 is a multicast address \(ff00::\/8\); it must be global unicast/),
      expect.stringMatching(/^nodes\/node1\.yaml:\d+:\d+: guestBridge\.nodeIPv6: fd05:5:6::251 is outside ipv6\.guestSubnet fd05:5:5::\/64$/),
      expect.stringMatching(/^nodes\/node2\.yaml:\d+:\d+: uplink\.publicIPv6: fd05:5:5::12 is inside ipv6\.guestSubnet fd05:5:5::\/64; the public address lives on the uplink$/),
    ]);
  });

  it('refuses a guest subnet that is link-local, multicast, too wide or too narrow, or has host bits', async () => {
    const subnet = (s: string) => diagnostics({ 'cluster.yaml': replace('guestSubnet: fd05:5:5::/64', `guestSubnet: "${s}"`) });
    expect((await subnet('fe80::/64'))[0]).toMatch(/ipv6\.guestSubnet: fe80::\/64 is a link-local address \(fe80::\/10\); the guest subnet must be global unicast/);
    expect((await subnet('ff05::/64'))[0]).toMatch(/ipv6\.guestSubnet: ff05::\/64 is a multicast address/);
    expect((await subnet('fd05::/32'))[0]).toMatch(/ipv6\.guestSubnet: prefix length \/32 is outside 48-124/);
    expect((await subnet('fd05:5:5::/128'))[0]).toMatch(/prefix length \/128 is outside 48-124/);
    expect(await subnet('fd05:5:5::1/64')).toEqual([expect.stringMatching(/ipv6\.guestSubnet: has host bits set; did you mean fd05:5:5::\/64\?$/)]);
    expect((await subnet('fd05:5:5::1::/64'))[0]).toMatch(/ipv6\.guestSubnet: "fd05:5:5::1::\/64" is not an IPv6 subnet/);
  });

  it('refuses syntax the renderer must never see (schema), and unparsable addresses (semantics)', async () => {
    const out = await diagnostics({ 'guests/guest1.yaml': replace('ipv6: fd05:5:5::201', 'ipv6: "fd05::1; flush ruleset"'), 'guests/guest2.yaml': replace('ipv6: fd05:5:5::202', 'ipv6: "1::2::3"') });
    expect(out).toEqual([
      expect.stringMatching(/^guests\/guest1\.yaml:\d+:\d+: ipv6: must be an IPv6 address in colon-hex form/),
      expect.stringMatching(/^guests\/guest2\.yaml:\d+:\d+: ipv6: "1::2::3" is not an IPv6 address/),
    ]);
  });

  it('a dual-stack cluster needs every node addressed; IPv6 fields need the cluster section', async () => {
    const unaddressed = await diagnostics({ 'nodes/node2.yaml': (t) => t.replace(/^ {2}(publicIPv6|nodeIPv6): .*\n/gm, '') });
    expect(unaddressed).toEqual([
      expect.stringMatching(/^nodes\/node2\.yaml:\d+:\d+: uplink\.publicIPv6: missing: the cluster is dual stack \(ipv6 at cluster\.yaml:\d+:\d+\), so every node needs it$/),
      expect.stringMatching(/^nodes\/node2\.yaml:\d+:\d+: guestBridge\.nodeIPv6: missing: /),
    ]);
    const noCluster = await diagnostics({ 'cluster.yaml': (t) => t.replace(/^ipv6:\n( {2}.*\n)+/m, '') });
    expect(noCluster).toHaveLength(6);
    expect(noCluster[0]).toMatch(/^guests\/guest1\.yaml:\d+:\d+: ipv6: cluster\.yaml has no ipv6 section/);
  });
});

describe('dual-stack rendering', () => {
  it('an IPv4-only state renders no IPv6 at all and owns no ip6 table', async () => {
    const state = await loadStateOrThrow(STATE_DIR);
    const text = JSON.stringify(renderNode(state, 'node1'));
    expect(text).not.toMatch(/ip6|icmpv6|nd-/);
    expect(stateTables(state).map((t) => t.family)).not.toContain('ip6');
    expect(Object.keys(dualStackFiles({ 'README.md': 'x' }))).toEqual([]);
  });

  it('an IPv4-only state still plans the ip6 nat table where the node grants it, so removing ipv6 deletes it', async () => {
    const state = await loadStateOrThrow(STATE_DIR);
    const nat6 = { family: 'ip6', name: 'cgw_nat6' };
    expect(ownedTables(state)).toContainEqual(nat6);
    expect(ownedTables(state, [...DEFAULT_OWNED_TABLES])).toContainEqual(nat6);
    // A node whose config never granted it (init from an IPv4 state) never had it: not listed.
    const ipv4Grant = stateTables(state).map((t) => `${t.family} ${t.name}`);
    expect(ownedTables(state, ipv4Grant)).toEqual(stateTables(state));
    // Nothing is rendered into it: planning deletes it where it is live.
    expect(renderNode(state, 'node1').tables.map((t) => t.family)).not.toContain('ip6');
  });

  it('full-nat: the ip6 nat table mirrors the IPv4 one with the IPv6 addresses', async () => {
    const { state } = await loadDualStack();
    const r = renderNode(state!, 'node1');
    const v6 = table(r, 'ip6', 'cgw_nat6')!;
    expect(printTable(v6)).toBe(
      [
        'table ip6 cgw_nat6 {',
        '\tmap fwd_tcp {',
        '\t\ttype inet_service : ipv6_addr . inet_service',
        '\t\telements = {',
        '\t\t\t80 : fd05:5:5::202 . 80,',
        '\t\t\t2201 : fd05:5:5::201 . 22,',
        '\t\t\t2202 : fd05:5:5::202 . 22,',
        '\t\t}',
        '\t}',
        '\tmap fwd_udp {',
        '\t\ttype inet_service : ipv6_addr . inet_service',
        '\t\telements = {',
        '\t\t\t1231 : fd05:5:5::201 . 123,',
        '\t\t\t1232 : fd05:5:5::202 . 123,',
        '\t\t}',
        '\t}',
        '\tchain postrouting {',
        '\t\ttype nat hook postrouting priority 100; policy accept;',
        '\t\tct status dnat oifname "guestbr0" snat to fd05:5:5::251 comment "full-nat: replies to forwarded flows return through this node"',
        '\t\toifname "xenbr0" ip6 saddr fd05:5:5::/64 ip6 daddr != fd05:5:5::/64 snat to fd00:122::11 comment "casual outbound: guests leave with this node public IP"',
        '\t}',
        '\tchain prerouting {',
        '\t\ttype nat hook prerouting priority -100; policy accept;',
        '\t\tip6 daddr fd00:122::11 dnat ip6 to tcp dport map @fwd_tcp comment "forwards: tcp ports on fd00:122::11 to guests"',
        '\t\tip6 daddr fd00:122::11 dnat ip6 to udp dport map @fwd_udp comment "forwards: udp ports on fd00:122::11 to guests"',
        '\t}',
        '}',
        '',
      ].join('\n'),
    );
    // The IPv4 table is the one an IPv4-only state renders.
    const v4only = renderNode(await loadStateOrThrow(STATE_DIR), 'node1');
    expect(table(r, 'ip', 'cgw_nat')).toEqual(table(v4only, 'ip', 'cgw_nat'));
    expect(ownedTables(state!)).toContainEqual({ family: 'ip6', name: 'cgw_nat6' });
  });

  it('a guest without ipv6 is forwarded on IPv4 only', async () => {
    const { state } = await loadDualStack({ 'guests/guest2.yaml': (t) => t.replace(/^ipv6: .*\n/m, '') });
    const v6 = table(renderNode(state!, 'node1'), 'ip6', 'cgw_nat6')!;
    expect(v6.maps.flatMap((m) => m.elements.map((e) => e.key))).toEqual([2201, 1231]);
  });

  it('trunks: NDP for and from the gateway addresses and all RAs are dropped after the ARP rules', async () => {
    const { state } = await loadDualStack();
    const arp = table(renderNode(state!, 'node2'), 'netdev', 'cgw_arp')!;
    const v4only = table(renderNode(await loadStateOrThrow(STATE_DIR), 'node2'), 'netdev', 'cgw_arp')!;
    expect(arp.chains.map((c) => c.name)).toEqual(['egress_eth1.100', 'egress_eth2.100']);
    for (const [i, chain] of arp.chains.entries()) {
      expect(chain.rules.slice(0, 2)).toEqual(v4only.chains[i]!.rules);
      expect(printTable({ ...arp, chains: [chain] }).split('\n').slice(5, 8)).toEqual([
        '\t\tip6 saddr { fd05:5:5::254, fe80::1 } icmpv6 type { nd-neighbor-advert, nd-neighbor-solicit } drop comment "shared gateway: no NDP from it leaves to other nodes"',
        `\t\ticmpv6 type { nd-neighbor-advert, nd-neighbor-solicit } @th,64,128 { ${rawIPv6('fd05:5:5::254')}, ${rawIPv6('fe80::1')} } drop comment "shared gateway: no NDP for it leaves to other nodes"`,
        '\t\ticmpv6 type nd-router-advert drop comment "router advertisements never leave this node"',
      ]);
    }
    expect(rawIPv6('fe80::1')).toBe('0xfe800000000000000000000000000001');
  });
});

describe('dual-stack lab (planning only)', () => {
  it('plans IPv6 on the client and nodes only, shared gateway addresses without DAD, IPv4 steps unchanged', async () => {
    const { state } = await loadDualStack();
    const v4 = planLab(await loadStateOrThrow(STATE_DIR), { prefix: 'cgwlab-' });
    const plan = planLab(state!, { prefix: 'cgwlab-' });
    const lines = plan.steps.map(describeStep);
    expect(lines).toEqual(expect.arrayContaining([
      '[cgwlab-client] ip addr add fd00:122::100/64 dev eth0 nodad',
      '[cgwlab-node1] sysctl net.ipv6.conf.all.forwarding=1',
      '[cgwlab-node1] ip addr add fd00:122::11/64 dev xenbr0 nodad',
      '[cgwlab-node1] ip addr add fd05:5:5::251/64 dev guestbr0 nodad',
      '[cgwlab-node1] sysctl net.bridge.bridge-nf-call-ip6tables=1',
      '[cgwlab-node1] ip addr add fd05:5:5::254/64 dev guestbr0 nodad preferred_lft 0',
      '[cgwlab-node1] ip addr add fe80::1/64 dev guestbr0 nodad preferred_lft 0',
      '[cgwlab-node2] ip addr add fd05:5:5::252/64 dev guestbr0 nodad',
    ]));
    const disabled = lines.filter((l) => l.includes('disable_ipv6=1')).map((l) => l.slice(1, l.indexOf(']')));
    expect([...new Set(disabled)]).toEqual(['cgwlab-pub', 'cgwlab-trunk']);
    // Without the IPv6 steps and the IPv6 sysctls the plan is the IPv4 lab's.
    const v4Only = (l: string) => !/fd0|fe80|ipv6|ip6tables/.test(l);
    expect(lines.filter(v4Only)).toEqual(v4.steps.map(describeStep).filter(v4Only));
    expect(plan.guests.map((g) => g.ipv6)).toEqual(['fd05:5:5::201', 'fd05:5:5::202']);
    expect(v4.client.ipv6).toBeUndefined();
  });

  it('lab check adds every forward over IPv6, IPv6 outbound and NDP for both gateway addresses', async () => {
    const { state } = await loadDualStack();
    const plan = planLab(state!, { prefix: 'cgwlab-' });
    const v4 = planChecks(await loadStateOrThrow(STATE_DIR), planLab(await loadStateOrThrow(STATE_DIR), { prefix: 'cgwlab-' }));
    const checks = planChecks(state!, plan);
    expect(checks.slice(0, v4.length)).toEqual(v4);
    const added = checks.slice(v4.length);
    expect(added.filter((c) => c.name.includes('(IPv6)') && c.ns === plan.client.ns)).toHaveLength(v4.filter((c) => c.ns === plan.client.ns).length);
    expect(added).toContainEqual({ kind: 'tcp', name: 'ssh-guest1 (IPv6): tcp [fd00:122::12]:2201 (node2) -> guest1:22', ns: 'cgwlab-client', ip: 'fd00:122::12', port: 2201, expect: 'this is guest1 OK from fd05:5:5::252 via tcp/22' });
    expect(added).toContainEqual(expect.objectContaining({ kind: 'tcp', name: 'outbound (IPv6): guest2 (on node2) -> client fd00:122::100:22', ip: 'fd00:122::100', expect: 'this is client OK from fd00:122::12 via tcp/22' }));
    expect(added.filter((c) => c.kind === 'ndp').map((c) => c.name)).toEqual([
      'ndp fd05:5:5::254 from guest1: only node1 answers',
      'ndp fe80::1 from guest1: only node1 answers',
      'ndp fd05:5:5::254 from guest2: only node2 answers',
      'ndp fe80::1 from guest2: only node2 answers',
    ]);
  });

  it('lab up --ipv6 seeds the twins and says so in the lab commit', () => {
    const files = { 'cluster.yaml': 'guestSubnet: 10.5.5.0/24\ngatewayIP: 10.5.5.254\n', 'guests/g.yaml': 'name: g\nip: 10.5.5.9\n' };
    const changed = labAdjustments(files, { ipv6: true, responderScript: '/r.cjs' });
    expect(changed['cluster.yaml']).toContain('ipv6:\n  guestSubnet: fd05:5:5::/64\n  gatewayIP: fd05:5:5::254\n  gatewayLinkLocal: fe80::1\n');
    expect(changed['guests/g.yaml']).toMatch(/^ipv6: fd05:5:5::9$/m);
    expect(changed['guests/g.yaml']).toContain('netns:');
    expect(labCommitMessage('cgwlab-', changed, { ipv6: true, responderScript: '/r.cjs' })).toContain('dual stack (lab up --ipv6)');
  });

  it('reads the MACs of every ndisc6 answer', () => {
    const out = 'Soliciting fe80::1 (fe80::1) on eth0...\nTarget link-layer address: 02:AA:00:00:00:01\n from fe80::1\nTarget link-layer address: 02:aa:00:00:00:02\n from fe80::1\nTarget link-layer address: 02:AA:00:00:00:01\n';
    expect(parseNdisc6Macs(out)).toEqual(['02:aa:00:00:00:01', '02:aa:00:00:00:02']);
  });
});

describe('dual-stack health', () => {
  it('the built-in gateway check wants every gateway address on the guest bridge', async () => {
    const { state } = await loadDualStack();
    const view = resolveNode(state!, 'node1');
    expect(gatewayVerdict(view, ['10.5.5.251', '10.5.5.254', 'fd05:5:5::254', 'fe80::1'])).toEqual({ ok: true, detail: '10.5.5.254, fd05:5:5::254, fe80::1 on guestbr0' });
    expect(gatewayVerdict(view, ['10.5.5.254', 'fd05:5:5::254'])).toEqual({ ok: false, detail: 'fe80::1 is not on guestbr0' });
    const v4 = resolveNode(await loadStateOrThrow(STATE_DIR), 'node1');
    expect(gatewayVerdict(v4, ['10.5.5.254'])).toEqual({ ok: true, detail: '10.5.5.254 on guestbr0' });
  });
});
