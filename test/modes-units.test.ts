// The pure parts of the NAT modes: validation messages (on a real state directory, so positions
// are real), rendered rulesets, the guest snippet, conntrackd.conf, sysctls and the settings plan.
// No namespaces here (see modes-stateless / modes-ctsync).
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadState } from '../src/state/index.js';
import { formatDiagnostics } from '../src/state/diagnostics.js';
import type { ClusterState } from '../src/state/types.js';
import { renderNode } from '../src/render/render.js';
import { printTable } from '../src/nft/text.js';
import { guestSnippet, taggedPort } from '../src/render/stateless.js';
import { renderConntrackdConf } from '../src/settings/conntrackd.js';
import { conntrackdPaths, renderSettings } from '../src/settings/model.js';
import { configHash, formatSettingsPlanText, planSettings, settingsPlanJson } from '../src/settings/plan.js';
import { STATE_DIR, stateInMode } from './helpers/modes-lab.js';
import { planLab } from '../src/lab/plan.js';
import { planReplyPathChecks } from '../src/lab/reply-path.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A copy of state-example with some files edited; returns the formatted diagnostics. */
async function validate(edit: Record<string, (text: string) => string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-modes-'));
  dirs.push(dir);
  await cp(STATE_DIR, dir, { recursive: true });
  for (const [file, f] of Object.entries(edit)) await writeFile(join(dir, file), f(await readFile(join(dir, file), 'utf8')));
  const r = await loadState(dir);
  return formatDiagnostics(r.diagnostics);
}

const mode = (m: string) => (t: string) => t.replace('mode: full-nat', `mode: ${m}`);
const tag = (n: number) => (t: string) => `${t}natTag: ${n}\n`;

describe('validation of mode settings', () => {
  it('stateless-nat: every node needs a natTag', async () => {
    const out = await validate({ 'cluster.yaml': mode('stateless-nat'), 'nodes/node1.yaml': tag(1) });
    expect(out).toMatch(/^nodes\/node2\.yaml:\d+:\d+: natTag: missing: nat\.mode is stateless-nat \(cluster\.yaml:16:9\), so every node needs a unique natTag/m);
    expect(out.split('\n')).toHaveLength(1);
  });

  it('stateless-nat: natTags are unique', async () => {
    const out = await validate({ 'cluster.yaml': mode('stateless-nat'), 'nodes/node1.yaml': tag(3), 'nodes/node2.yaml': tag(3) });
    expect(out).toBe('nodes/node2.yaml:17:9: natTag: natTag 3 is already used by node "node1" (nodes/node1.yaml:17:9); each node needs its own');
  });

  it('stateless-nat: tagged ports must fit in 16 bits and target ports stay below the stride', async () => {
    const out = await validate({
      'cluster.yaml': (t) => mode('stateless-nat')(t).replace('forwardSnat: true', 'forwardSnat: true\n  portStride: 20000'),
      'nodes/node1.yaml': tag(1),
      'nodes/node2.yaml': tag(4),
      'forwards/ssh.yaml': (t) => t.replace('target: { guest: guest2, port: 22 }', 'target: { guest: guest2, port: 20022 }'),
    });
    expect(out).toContain('forwards/ssh.yaml:11:36: forwards[0].target.port: entering node "node2" (natTag 4) would reach the guest on port 22 + 4 * 20000 = 80022 > 65535; use a smaller natTag or nat.portStride');
    expect(out).toContain('forwards/ssh.yaml:15:36: forwards[1].target.port: 20022 must be below nat.portStride 20000 in stateless-nat');
    expect(out.split('\n')).toHaveLength(5);
  });

  it('stateless-nat: one guest port forwarded twice on a node is refused (replies would be ambiguous)', async () => {
    const out = await validate({
      'cluster.yaml': mode('stateless-nat'),
      'nodes/node1.yaml': tag(1),
      'nodes/node2.yaml': tag(2),
      'forwards/ssh.yaml': (t) => `${t}  - name: ssh-guest1-again\n    protocol: tcp\n    port: 2222\n    target: { guest: guest1, port: 22 }\n`,
    });
    expect(out).toContain('forwards[2].port: in stateless-nat a guest port can be forwarded only once per node: tcp guest1:22 entering "node1" is already forward "ssh-guest1"');
  });

  it('ct-sync: more than two nodes need a multicast group; the group must be multicast', async () => {
    const third = (t: string) => t.replaceAll('node2', 'node3').replaceAll('192.168.122.12', '192.168.122.13').replaceAll('10.5.5.252', '10.5.5.253');
    expect(await validate({ 'cluster.yaml': mode('ct-sync') })).toBe('');
    const copy = await mkdtemp(join(tmpdir(), 'cgw-modes-'));
    dirs.push(copy);
    await cp(STATE_DIR, copy, { recursive: true });
    await writeFile(join(copy, 'cluster.yaml'), mode('ct-sync')(await readFile(join(copy, 'cluster.yaml'), 'utf8')));
    await writeFile(join(copy, 'nodes/node3.yaml'), third(await readFile(join(copy, 'nodes/node2.yaml'), 'utf8')));
    const three = formatDiagnostics((await loadState(copy)).diagnostics);
    expect(three).toBe('cluster.yaml:16:9: nat.mode: ct-sync with 3 nodes needs nat.ctSync.multicastGroup (e.g. 225.0.0.50): conntrackd\'s unicast UDP channel has exactly one peer');
    const bad = await validate({ 'cluster.yaml': (t) => mode('ct-sync')(t).replace('forwardSnat: true', 'forwardSnat: true\n  ctSync: { multicastGroup: 10.0.0.1 }') });
    expect(bad).toMatch(/^cluster\.yaml:\d+:\d+: nat\.ctSync\.multicastGroup: 10\.0\.0\.1 is not a multicast address/);
  });
});

describe('rendering per mode', () => {
  let stateless: ClusterState;
  let ctsync: ClusterState;
  beforeAll(async () => {
    stateless = await stateInMode('stateless-nat');
    ctsync = await stateInMode('ct-sync');
  });

  it('ct-sync: the sync guard (bridge cgw_sync) keeps sync traffic on the trunks; absent without conntrackd', () => {
    const guard = (st: ClusterState, node = 'node1') => renderNode(st, node).tables.find((t) => t.family === 'bridge');
    const text = printTable(guard(ctsync)!);
    expect(text).toContain('iifname != { "eth1.100", "eth2.100" } ip daddr { 10.5.5.251, 10.5.5.252 } udp dport 3780 drop');
    expect(text.match(/type filter hook (prerouting|forward|output) priority -200; policy accept;/g)).toHaveLength(3);
    expect(text).toContain('oifname != { "eth1.100", "eth2.100" } ip daddr { 10.5.5.251, 10.5.5.252 } udp dport 3780 drop');
    const multicast = { ...ctsync, cluster: { ...ctsync.cluster, nat: { ...ctsync.cluster.nat, ctSync: { port: 3781, multicastGroup: '225.0.0.50' } } } };
    expect(printTable(guard(multicast)!)).toContain('ip daddr { 10.5.5.251, 10.5.5.252, 225.0.0.50 } udp dport 3781 drop');
    expect(guard(stateless)).toBeUndefined();
    expect(guard({ ...ctsync, nodes: ctsync.nodes.slice(0, 1) })).toBeUndefined();
  });

  it('stateless-nat: no DNAT in the nat table; raw table rewrites forwards and replies of every entering node', () => {
    const rs = renderNode(stateless, 'node1');
    expect(rs.tables.map((t) => `${t.family} ${t.name}`)).toEqual(['ip cgw_nat', 'netdev cgw_arp', 'ip cgw_raw']);
    expect(printTable(rs.tables[0])).not.toContain('dnat');
    const raw = printTable(rs.tables[2]);
    expect(raw).toContain('type filter hook prerouting priority -300; policy accept;');
    expect(raw).toContain('ip daddr 192.168.122.11 ip daddr set tcp dport map @sl_dst_tcp tcp dport set tcp dport map @sl_dport_tcp notrack');
    expect(raw).toContain('iifname "guestbr0" ip saddr 10.5.5.0/24 tcp sport 20000-29999 tcp sport set ip saddr . tcp sport map @sl_rport_tcp ip saddr set 192.168.122.12 notrack');
    // node1 (tag 1) forwards port 80 to guest2: towards the guest on 10080, the reply maps back to 80.
    expect(raw).toContain('80 : 10080,');
    expect(raw).toContain('10.5.5.202 . 10080 : 80,');
    expect(raw).toContain('10.5.5.201 . 20080 : 80,'); // node2's web forward, known here too
  });

  it('stateless-nat: the guest snippet redirects exactly its tagged ports', () => {
    const g1 = stateless.guests.find((g) => g.name === 'guest1')!;
    const snippet = guestSnippet(stateless, g1);
    expect(snippet).toContain('tcp dport 10022 redirect to :22 comment "entered node1 on 2201"');
    expect(snippet).toContain('tcp dport 20080 redirect to :80 comment "entered node2 on 80"');
    expect(snippet).toContain('udp dport 20123 redirect to :123');
    expect(snippet).not.toContain('10080'); // node1's web forward goes to guest2
    expect(snippet).toContain('net.ipv4.ip_local_reserved_ports=10022,10123,20022,20080,20123');
    expect(taggedPort(stateless, stateless.nodes[1], 22)).toBe(20022);
  });

  it('ct-sync: DNAT without forward SNAT; untracked bridged frames; early replies dropped', () => {
    const rs = renderNode(ctsync, 'node2');
    const nat = printTable(rs.tables[0]);
    expect(nat).toContain('dnat ip to tcp dport map @fwd_tcp');
    expect(nat).not.toContain('snat to 10.5.5.252');
    expect(nat).toContain('snat to 192.168.122.12'); // casual outbound stays
    const raw = printTable(rs.tables.find((t) => t.name === 'cgw_raw')!);
    expect(raw).toContain('iifname "guestbr0" ether daddr { 00:16:3e:05:05:c9, 00:16:3e:05:05:ca } notrack');
    expect(raw).toContain('ip saddr . tcp sport { 10.5.5.201 . 22, 10.5.5.201 . 80, 10.5.5.202 . 22, 10.5.5.202 . 80 } ct state { invalid, new } drop');
    expect(raw).toContain('ip saddr . udp sport { 10.5.5.201 . 123, 10.5.5.202 . 123 } ct state new drop');
    expect(raw).toContain('ip daddr 192.168.122.12 ct state invalid ip daddr set tcp dport map @ct_dst_tcp tcp dport set tcp dport map @ct_dport_tcp');
  });

  it('full-nat renders no raw table', async () => {
    const full = await stateInMode('full-nat');
    expect(renderNode(full, 'node1').tables.map((t) => t.name)).toEqual(['cgw_nat', 'cgw_arp']);
  });
});

describe('lab expectations per mode', () => {
  it('reply paths: full-nat through the entering node, ct-sync and stateless-nat through the guest node, none for the negative control', async () => {
    const paths = async (m: 'full-nat' | 'ct-sync' | 'stateless-nat', forwardSnat = true) => {
      const s = await stateInMode(m);
      const st = { ...s, cluster: { ...s.cluster, nat: { ...s.cluster.nat, forwardSnat } } };
      return planReplyPathChecks(st, planLab(st, { prefix: 'cgwlab-' })).map((c) => `${c.entering.name}:${c.port} -> ${c.expected.name}`);
    };
    expect(await paths('full-nat')).toEqual(['node1:2202 -> node1', 'node2:2201 -> node2']);
    expect(await paths('ct-sync')).toEqual(['node1:2202 -> node2', 'node2:2201 -> node1']);
    expect(await paths('stateless-nat')).toEqual(['node1:2202 -> node2', 'node2:2201 -> node1']);
    expect(await paths('full-nat', false)).toEqual([]);
  });
});

describe('node settings', () => {
  const paths = conntrackdPaths('/run/cgw-sync/node1');

  it('conntrackd.conf: FTFW, external cache off, unicast to the one peer, own lock and socket, guests only', async () => {
    const state = await stateInMode('ct-sync');
    const conf = renderConntrackdConf(state, state.nodes[0], paths);
    expect(conf).toContain('\tMode FTFW {\n\t\tDisableExternalCache On\n\t}');
    expect(conf).toContain('\tUDP {\n\t\tIPv4_address 10.5.5.251\n\t\tIPv4_Destination_Address 10.5.5.252\n\t\tPort 3780\n\t\tInterface guestbr0');
    expect(conf).toContain('\tLockFile /run/cgw-sync/node1/conntrackd.lock');
    expect(conf).toContain('\t\tPath /run/cgw-sync/node1/conntrackd.ctl');
    expect(conf).toContain('\tSystemd off');
    expect(conf).toContain('\tFilter From Userspace {\n\t\tProtocol Accept {\n\t\t\tTCP\n\t\t\tUDP\n\t\t}\n\t\tAddress Accept {\n\t\t\tIPv4_address 10.5.5.201\n\t\t\tIPv4_address 10.5.5.202\n\t\t}');
    const multi = { ...state, cluster: { ...state.cluster, nat: { ...state.cluster.nat, ctSync: { multicastGroup: '225.0.0.50', port: 3781 } } } };
    const m = renderConntrackdConf(multi, multi.nodes[1], paths);
    expect(m).toContain('\tMulticast {\n\t\tIPv4_address 225.0.0.50\n\t\tGroup 3781\n\t\tIPv4_interface 10.5.5.252\n\t\tInterface guestbr0');
    expect(m).not.toContain('UDP {');
    // Two senders on the group: FTFW's single sequence number still fits.
    expect(m).toContain('\tMode FTFW {');
  });

  /** node1's settings in a mode. */
  const settingsIn = async (m: 'full-nat' | 'ct-sync' | 'stateless-nat') => {
    const st = await stateInMode(m);
    return renderSettings({ state: st, node: st.nodes[0]! }, paths);
  };

  it('sysctls per mode; conntrackd only in ct-sync', async () => {
    const s = settingsIn;
    expect((await s('full-nat')).sysctls).toEqual({ 'net.ipv4.ip_forward': '1' });
    expect((await s('full-nat')).resets).toEqual({ 'net.ipv4.conf.guestbr0.accept_local': '0', 'net.netfilter.nf_conntrack_tcp_be_liberal': '0' });
    expect((await s('ct-sync')).sysctls['net.netfilter.nf_conntrack_tcp_be_liberal']).toBe('1');
    expect((await s('stateless-nat')).sysctls).toMatchObject({ 'net.ipv4.conf.guestbr0.accept_local': '1', 'net.ipv4.conf.guestbr0.rp_filter': '2' });
    expect((await s('full-nat')).conntrackd).toBeUndefined();
    expect((await s('ct-sync')).conntrackd?.paths).toEqual(paths);
  });

  it('settings plan: sysctls that differ, a new config file with start, restart on change, stop when left', async () => {
    const desired = await settingsIn('ct-sync');
    const config = desired.conntrackd!.config;
    const fresh = planSettings(desired, { sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.guestbr0.accept_local': '0', 'net.netfilter.nf_conntrack_tcp_be_liberal': '0' }, conntrackd: {} });
    expect(fresh.changes.map((c) => c.kind)).toEqual(['sysctl', 'conntrackd-config', 'conntrackd-start']);
    expect(fresh.changes[0]).toEqual({ kind: 'sysctl', key: 'net.netfilter.nf_conntrack_tcp_be_liberal', from: '0', to: '1' });
    const text = formatSettingsPlanText(fresh);
    expect(text).toContain('~ sysctl net.netfilter.nf_conntrack_tcp_be_liberal: 0 -> 1');
    expect(text).toContain('+ file /run/cgw-sync/node1/conntrackd.conf');
    expect(text).toContain('    +\t\tDisableExternalCache On');
    expect(text).toContain('+ conntrackd: start (not running)');
    expect(settingsPlanJson(fresh).changed).toBe(true);

    const running = { pid: 4242, startTime: '1', configHash: configHash(config), netns: 1 };
    const sysctls = { ...desired.sysctls, ...desired.resets };
    expect(planSettings(desired, { sysctls, conntrackd: { config, running } }).changes).toEqual([]);
    const stale = planSettings(desired, { sysctls, conntrackd: { config: 'old', running: { ...running, configHash: configHash('old') } } });
    expect(stale.changes.map((c) => c.kind)).toEqual(['conntrackd-config', 'conntrackd-restart']);
    const left = planSettings(await settingsIn('full-nat'), { sysctls: { 'net.ipv4.ip_forward': '1', 'net.netfilter.nf_conntrack_tcp_be_liberal': '1' }, conntrackd: { config, running } });
    // A reset of a key that exists is planned; of one that does not (no bridge here), not.
    expect(left.changes.filter((c) => c.kind === 'sysctl')).toEqual([{ kind: 'sysctl', key: 'net.netfilter.nf_conntrack_tcp_be_liberal', from: '1', to: '0' }]);
    expect(left.changes.filter((c) => c.kind.startsWith('conntrackd'))).toEqual([{ kind: 'conntrackd-stop', reason: 'pid 4242: the NAT mode no longer uses conntrackd' }]);
  });
});
