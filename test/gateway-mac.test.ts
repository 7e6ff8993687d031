// The one gateway MAC, without root: the shared MAC's table as rendered (src/render/gateway-mac.ts),
// the tables a state owns, and the gateway announcement to a guest that starts
// (src/guests/announce.ts) through the real applier in the agent's cycle on fakes. The kernel's
// side (ARP rewritten, frames delivered, nothing learnt across a trunk, a moved guest's entry) is
// test/lab-gateway-mac.test.ts.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStateOrThrow } from '../src/state/load.js';
import type { ClusterState } from '../src/state/types.js';
import { resolveNode } from '../src/render/node-view.js';
import { ownedTables, renderView, stateTables } from '../src/render/render.js';
import { ownershipProblem } from '../src/render/ownership.js';
import { DEFAULT_OWNED_TABLES } from '../src/nft/ownership.js';
import { printTable } from '../src/nft/text.js';
import { announceGateway, arpingArgs, gatewayAddresses, ndptoolArgs, type AnnounceRequest, type GatewayAnnouncer } from '../src/guests/announce.js';
import { checksBridgeMac, gatewayVerdict } from '../src/rollout/checkpoint.js';
import { checksumNeutralWord } from '../src/render/gateway-mac.js';
import { fakeCluster, fakeNode } from './helpers/fake-node.js';
import { loadDualStack } from './helpers/dual-stack.js';
import { PROJECT_ROOT } from './helpers/agent-fixture.js';

const SHARED = '02:00:5e:05:05:fe';
const BRIDGE = { node1: '02:cc:00:00:00:01', node2: '02:cc:00:00:00:02' } as const;

/** state-example/ with the shared gateway MAC (written upper-case: stored lower-case) and the nodes' bridge MACs. */
function withSharedMac(state: ClusterState): ClusterState {
  return {
    ...state,
    cluster: { ...state.cluster, gatewayMAC: SHARED },
    nodes: state.nodes.map((n) => ({ ...n, guestBridge: { ...n.guestBridge, mac: BRIDGE[n.name as keyof typeof BRIDGE] } })),
  };
}

/** Records what it was asked to announce; fails for the guests in `failFor`. */
class RecordingAnnouncer implements GatewayAnnouncer {
  readonly sent: AnnounceRequest[] = [];
  constructor(readonly failFor: string[] = []) {}
  async announce(r: AnnounceRequest): Promise<string> {
    this.sent.push(r);
    if (this.failFor.includes(r.guestMac)) throw new Error('arping: no such device');
    return `gratuitous ARP on ${r.bridge}`;
  }
}

let scratch: string;
let example: ClusterState;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-gwmac-'));
  example = await loadStateOrThrow(path.join(PROJECT_ROOT, 'state-example'));
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('the shared gateway MAC table', () => {
  it('is named only by a state with a gatewayMAC, and still planned where the node grants it (removing the option deletes it)', () => {
    const gwmac = { family: 'bridge', name: 'cgw_gwmac' };
    const tables = renderView(resolveNode(example, 'node1')).tables.map((t) => `${t.family} ${t.name}`);
    expect(tables).not.toContain('bridge cgw_gwmac');
    expect(stateTables(example)).not.toContainEqual(gwmac);
    expect(stateTables(withSharedMac(example))).toContainEqual(gwmac);
    // Granted (the default list, or an empty one): listed, so planning deletes a live one.
    expect(DEFAULT_OWNED_TABLES).toContain('bridge cgw_gwmac');
    expect(ownedTables(example)).toContainEqual(gwmac);
    expect(ownedTables(example, [...DEFAULT_OWNED_TABLES])).toContainEqual(gwmac);
    // A node whose explicit list predates the option is not refused, and never had the table.
    const explicit = stateTables(example).map((t) => `${t.family} ${t.name}`);
    expect(ownershipProblem(example, { ownedTables: explicit })).toBeUndefined();
    expect(ownedTables(example, explicit)).toEqual(stateTables(example));
  });

  it('rewrites ARP from the gateway IP on guest ports, takes frames to the shared MAC, keeps it off the trunks', () => {
    const table = renderView(resolveNode(withSharedMac(example), 'node1')).tables.find((t) => t.name === 'cgw_gwmac');
    expect(table).toBeDefined();
    const text = printTable(table!);
    // The node's own bridge MAC is the rewrite target; the trunks of node1 are excluded by name.
    expect(text).toContain(`oifname != { "eth1.100", "eth2.100" } arp saddr ip 10.5.5.254 ether saddr set ${SHARED} arp saddr ether set ${SHARED}`);
    expect(text).toContain(`iifname != { "eth1.100", "eth2.100" } ether daddr ${SHARED} ether daddr set ${BRIDGE.node1} meta pkttype set host`);
    expect(text).toContain(`oifname { "eth1.100", "eth2.100" } ether saddr ${SHARED} drop`);
    expect(text).toContain(`ether saddr ${SHARED} drop`);
    expect(table!.chains.map((c) => [c.name, c.base?.hook, c.base?.priority])).toEqual([
      ['output', 'output', -200],
      ['prerouting', 'prerouting', -200],
    ]);
    const node2 = printTable(renderView(resolveNode(withSharedMac(example), 'node2')).tables.find((t) => t.name === 'cgw_gwmac')!);
    expect(node2).toContain(`ether daddr set ${BRIDGE.node2} meta pkttype set host`);
  });

  it('on a node without trunks: the same rewrites, on every port', () => {
    const state = withSharedMac(example);
    const lone = { ...state, nodes: state.nodes.map((n) => ({ ...n, trunks: [] })) };
    const text = printTable(renderView(resolveNode(lone, 'node1')).tables.find((t) => t.name === 'cgw_gwmac')!);
    expect(text).not.toContain('ifname');
    expect(text).toContain(`arp saddr ip 10.5.5.254 ether saddr set ${SHARED} arp saddr ether set ${SHARED}`);
    expect(text).toContain(`ether daddr ${SHARED} ether daddr set ${BRIDGE.node1} meta pkttype set host`);
  });
});

/** RFC 1071 over a whole buffer (even length): the ICMPv6 checksum without the pseudo-header, which the rewrite does not touch. */
function internetChecksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += b.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** A neighbour advertisement (RFC 4861 4.4) with a target link-layer address option, checksum field zero. */
function advertisement(mac: string, spare = 0): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt8(136, 0);
  b.writeUInt8(0xa0, 4); // R and O flags
  b.writeUInt16BE(spare, 6);
  Buffer.from('fe800000000000000000000000000001', 'hex').copy(b, 8);
  b.writeUInt8(2, 24);
  b.writeUInt8(1, 25);
  Buffer.from(mac.replaceAll(':', ''), 'hex').copy(b, 26);
  return b;
}

describe('the shared gateway MAC over IPv6 (dual stack)', () => {
  it("the reserved word keeps the ICMPv6 checksum when the option's MAC is replaced (RFC 6296's trick)", () => {
    const pairs: [string, string][] = [
      [BRIDGE.node1, SHARED],
      [BRIDGE.node2, SHARED],
      ['fe:ff:ff:ff:ff:ff', '02:00:00:00:00:00'],
      ['02:00:00:00:00:01', 'fe:ff:ff:ff:ff:fe'],
      ['0a:9c:44:89:40:06', '02:00:5e:05:05:fe'],
    ];
    for (const [own, shared] of pairs) {
      const before = internetChecksum(advertisement(own));
      expect(internetChecksum(advertisement(shared, checksumNeutralWord(own, shared))), `${own} -> ${shared}`).toBe(before);
      // The probe can see a wrong word: without it the checksum changes.
      expect(internetChecksum(advertisement(shared)), `${own} -> ${shared} uncompensated`).not.toBe(before);
    }
  });

  it('rewrites NDP from both gateway addresses in a dual-stack state, and only there', async () => {
    const loaded = await loadDualStack();
    const text = printTable(renderView(resolveNode(withSharedMac(loaded.state!), 'node1')).tables.find((t) => t.name === 'cgw_gwmac')!);
    const hex = (mac: string) => BigInt(`0x${mac.replaceAll(':', '')}`);
    // Reserved word zero; option length 1 and the node's own MAC (one 56-bit match, as nft lists it); then the rewrites.
    const optionWithOwnMac = (1n << 48n) + hex(BRIDGE.node1);
    expect(text).toContain(
      `oifname != { "eth1.100", "eth2.100" } ip6 saddr { fd05:5:5::254, fe80::1 } icmpv6 type { nd-neighbor-advert, nd-neighbor-solicit } @th,48,16 0 @th,200,56 ${optionWithOwnMac} ` +
        `ether saddr set ${SHARED} @th,208,48 set ${hex(SHARED)} @th,48,16 set ${checksumNeutralWord(BRIDGE.node1, SHARED)}`,
    );
    const v4 = printTable(renderView(resolveNode(withSharedMac(example), 'node1')).tables.find((t) => t.name === 'cgw_gwmac')!);
    expect(v4).not.toContain('icmpv6');
  });
});

describe('the gateway health check with a shared gateway MAC', () => {
  it('reads the bridge MAC only with a shared MAC, and fails when it is not the one the state names', () => {
    expect(checksBridgeMac(resolveNode(example, 'node1'))).toBe(false);
    const view = resolveNode(withSharedMac(example), 'node1');
    expect(checksBridgeMac(view)).toBe(true);
    const ips = ['10.5.5.251', '10.5.5.254'];
    expect(gatewayVerdict(view, ips, BRIDGE.node1)).toEqual({ ok: true, detail: '10.5.5.254 on guestbr0' });
    expect(gatewayVerdict(view, ips, '02:cc:00:00:00:99')).toEqual({ ok: false, detail: `guestbr0 has MAC 02:cc:00:00:00:99, the state's guestBridge.mac is ${BRIDGE.node1}: frames to the shared gateway MAC would not reach this node` });
    expect(gatewayVerdict(view, ips, new Error('Device "guestbr0" does not exist.'))).toMatchObject({ ok: false, detail: expect.stringContaining('cannot read the MAC of guestbr0') });
    expect(gatewayVerdict(view, ['10.5.5.251'], BRIDGE.node1)).toEqual({ ok: false, detail: '10.5.5.254 is not on guestbr0' });
  });
});

describe('the gateway announcement', () => {
  it('arping sends one unsolicited ARP from the gateway IP on the guest bridge', () => {
    expect(arpingArgs({ family: 'ipv4', ip: '10.5.5.254', bridge: 'guestbr0', guestMac: '00:16:3e:05:05:c9' })).toEqual(['-q', '-U', '-c', '1', '-i', 'guestbr0', '-S', '10.5.5.254', '10.5.5.254']);
  });

  it('dual stack: each IPv6 gateway address gets one unsolicited neighbour advertisement (ndptool)', async () => {
    const dual = (await loadDualStack()).state!;
    expect(gatewayAddresses(dual)).toEqual([
      { family: 'ipv4', ip: '10.5.5.254' },
      { family: 'ipv6', ip: 'fd05:5:5::254' },
      { family: 'ipv6', ip: 'fe80::1' },
    ]);
    expect(gatewayAddresses(example)).toEqual([{ family: 'ipv4', ip: '10.5.5.254' }]);
    expect(ndptoolArgs({ family: 'ipv6', ip: 'fe80::1', bridge: 'guestbr0', guestMac: '00:16:3e:05:05:c9' })).toEqual(['-t', 'na', '-U', '-T', 'fe80::1', '-i', 'guestbr0', 'send']);
  });

  it('announces each gateway address; a failure is an outcome, not a throw; nothing to send with a shared MAC', async () => {
    const view = resolveNode(example, 'node1');
    const guest = view.guests[0]!;
    const ok = new RecordingAnnouncer();
    expect(await announceGateway(view, guest, ok)).toEqual([{ family: 'ipv4', ip: '10.5.5.254', guest: guest.name, ok: true, detail: 'gratuitous ARP on guestbr0' }]);
    expect(ok.sent).toEqual([{ family: 'ipv4', ip: '10.5.5.254', bridge: 'guestbr0', guestMac: guest.mac }]);

    const failing = new RecordingAnnouncer([guest.mac]);
    expect(await announceGateway(view, guest, failing)).toEqual([expect.objectContaining({ ok: false, detail: 'arping: no such device' })]);

    const shared = new RecordingAnnouncer();
    const outcome = await announceGateway(resolveNode(withSharedMac(example), 'node1'), guest, shared);
    expect(outcome).toEqual([expect.objectContaining({ ok: true, detail: `not needed: shared gateway MAC ${SHARED}` })]);
    expect(shared.sent).toEqual([]);
  });

  it('the applier announces after each guest start, and the report says so (a failure is an error)', async () => {
    const c = await fakeCluster(scratch, 'announce');
    const announcer = new RecordingAnnouncer();
    const n = fakeNode(c, 'node1', {}, { announce: announcer });
    await n.cycle();
    expect(announcer.sent).toEqual([]); // the guest waits for node2's word: nothing started, nothing announced
    await fakeNode(c, 'node2').cycle();
    const started = await n.cycle();
    expect(n.guests.history).toEqual(['start guest1']);
    expect(announcer.sent).toEqual([{ family: 'ipv4', ip: '10.5.5.254', bridge: 'guestbr0', guestMac: '00:16:3e:05:05:c9' }]);
    expect(started.notes).toContain('gateway 10.5.5.254 announced to guest guest1: gratuitous ARP on guestbr0');
    expect(started.errors).toEqual([]);

    // Restarted after its command changed (restartOnChange), with an announcer that fails: reported as an error.
    const file = path.join(c.state, 'guests', 'guest1.yaml');
    await writeFile(file, (await readFile(file, 'utf8')).replace('restartOnChange: false', 'restartOnChange: true').replace('"600"', '"601"'));
    announcer.failFor.push('00:16:3e:05:05:c9');
    const restarted = await n.cycle();
    expect(n.guests.history).toEqual(['start guest1', 'stop guest1', 'start guest1']);
    expect(announcer.sent).toHaveLength(2);
    expect(restarted.errors).toContain('gateway 10.5.5.254 could not be announced to guest guest1: arping: no such device');
  });
});
