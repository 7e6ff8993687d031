// The rendered ruleset matches interfaces by name, so it must load before they exist and keep
// working after ifupdown or Xen hotplug delete and re-create them (new ifindex). One node in a
// namespace of its own, a client, a guest and a trunk peer, all created and deleted here.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { addAddress, addBridge, addVeth, createNamespace, deleteNamespace, linkUp, runIn, setMaster, sysctl, waitForLinks, waitForListening } from '../src/netns/netns.js';
import { tcpProbe, type ProbeResult } from '../src/lab/probes.js';
import { NftCli } from '../src/nft/backend.js';
import { applyNodeNft, planNodeNft } from '../src/reconcile/nft.js';
import { syntheticState } from '../src/bench/synthetic.js';
import { processAlive, processStartTime, terminate } from '../src/proc/process.js';
import { execa, type ResultPromise } from 'execa';

const tag = `${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const NS = { node: `cgwt-if-${tag}-node`, client: `cgwt-if-${tag}-cli`, guest: `cgwt-if-${tag}-g1`, peer: `cgwt-if-${tag}-peer` };
const state = syntheticState(1); // forward tcp 10000 on 192.168.122.11 -> guest1 10.5.5.201:1
const nft = new NftCli({ prefix: ['ip', 'netns', 'exec', NS.node] });
let responder: ResultPromise | undefined;

async function makeGuestBridge(): Promise<void> {
  await addBridge(NS.node, 'guestbr0');
  await setMaster(NS.node, 'g1', 'guestbr0');
  await setMaster(NS.node, 'eth1.100', 'guestbr0');
  await addAddress(NS.node, 'guestbr0', '10.5.5.251/24');
  await addAddress(NS.node, 'guestbr0', '10.5.5.254/24');
}

async function makeUplink(): Promise<void> {
  await addBridge(NS.node, 'xenbr0');
  await setMaster(NS.node, 'pub0', 'xenbr0');
  await addAddress(NS.node, 'xenbr0', '192.168.122.11/24');
}

async function makeTrunk(): Promise<void> {
  await addVeth({ ns: NS.node, name: 'eth1.100' }, { ns: NS.peer, name: 'trunk0' });
  await linkUp(NS.node, 'eth1.100');
  await linkUp(NS.peer, 'trunk0');
}

/**
 * The client's TCP probe of the forward: `reply` is the guest's answer. It reads until the guest
 * closes, bounded by the probe's timeout; a client that sends and half-closes, like `socat -`
 * with input, gives up 0.5 s after its EOF, which a loaded machine overruns.
 */
function viaForward(timeoutS?: number): Promise<ProbeResult> {
  return tcpProbe(NS.client, '192.168.122.11', 10000, { timeoutS });
}

async function expectForwardWorks(): Promise<void> {
  const r = await viaForward();
  expect(r.reply, r.detail).toBe('guest1 saw 10.5.5.251');
}

/** Every link of every namespace here carries traffic (carrier, forwarding bridge ports, no DAD). */
async function linksReady(): Promise<void> {
  await Promise.all(Object.values(NS).map((ns) => waitForLinks(ns)));
}

/** ARP requests the trunk peer saw for `ip`, counted by an ingress counter in the peer namespace. */
async function arpSeenByPeer(ip: string): Promise<number> {
  const out = (await runIn(NS.peer, 'nft', ['list', 'chain', 'netdev', 'watch', 'in'])).stdout;
  const m = new RegExp(`arp daddr ip ${ip.replace(/\./g, '\\.')} counter packets (\\d+)`).exec(out);
  return Number(m?.[1] ?? NaN);
}

async function arpFromGuest(ip: string): Promise<void> {
  await runIn(NS.guest, 'arping', ['-c', '2', '-w', '2', '-i', 'eth0', ip]).catch(() => undefined); // nobody answers; we count requests
}

beforeAll(async () => {
  for (const ns of Object.values(NS)) await createNamespace(ns);
  await sysctl(NS.node, 'net.ipv4.ip_forward', '1');
  // The ruleset first, before any interface it names exists.
  await applyNodeNft(await planNodeNft(state, 'node1', nft), nft);

  await addVeth({ ns: NS.node, name: 'pub0' }, { ns: NS.client, name: 'eth0' });
  await addVeth({ ns: NS.node, name: 'g1' }, { ns: NS.guest, name: 'eth0' });
  await makeTrunk();
  await makeUplink();
  await makeGuestBridge();
  for (const dev of ['pub0', 'g1', 'xenbr0', 'guestbr0']) await linkUp(NS.node, dev);
  await addAddress(NS.client, 'eth0', '192.168.122.100/24');
  await linkUp(NS.client, 'eth0');
  await addAddress(NS.guest, 'eth0', '10.5.5.201/24');
  await linkUp(NS.guest, 'eth0');
  await runIn(NS.guest, 'ip', ['route', 'add', 'default', 'via', '10.5.5.254']);
  await runIn(NS.peer, 'nft', ['add table netdev watch; add chain netdev watch in { type filter hook ingress device "trunk0" priority 0; }; add rule netdev watch in arp daddr ip 10.5.5.254 counter; add rule netdev watch in arp daddr ip 10.5.5.99 counter']);
  responder = execa('ip', ['netns', 'exec', NS.guest, 'socat', 'TCP-LISTEN:1,fork,reuseaddr', 'SYSTEM:echo guest1 saw $SOCAT_PEERADDR'], { reject: false });
  await waitForListening(NS.guest, ['tcp/1'], 'the guest responder');
  await linksReady();
});

afterAll(async () => {
  if (responder?.pid) {
    const pid = responder.pid;
    await terminate(pid, processStartTime(pid), 3000).catch(() => undefined);
    expect(processAlive(pid)).toBe(false);
  }
  for (const ns of Object.values(NS)) await deleteNamespace(ns);
});

describe('interfaces matched by name', () => {
  it('the forward works on interfaces created after the ruleset was loaded', async () => {
    await expectForwardWorks();
  });

  it('keeps working after the guest bridge and the uplink bridge are deleted and re-created', async () => {
    await runIn(NS.node, 'ip', ['link', 'del', 'guestbr0']);
    await runIn(NS.node, 'ip', ['link', 'del', 'xenbr0']);
    expect((await viaForward(2)).ok).toBe(false);
    await makeUplink();
    await makeGuestBridge();
    for (const dev of ['xenbr0', 'guestbr0']) await linkUp(NS.node, dev);
    await linksReady();
    await expectForwardWorks();
    // Nothing to re-apply: the live tables still match.
    expect((await planNodeNft(state, 'node1', nft)).plan.changes).toEqual([]);
  });

  it('the trunk ARP filter holds on a trunk created later and again after it is re-created', async () => {
    await arpFromGuest('10.5.5.99');
    await arpFromGuest('10.5.5.254');
    expect(await arpSeenByPeer('10.5.5.99')).toBeGreaterThan(0); // the peer does see ARP from the guest
    expect(await arpSeenByPeer('10.5.5.254')).toBe(0);

    await runIn(NS.node, 'ip', ['link', 'del', 'eth1.100']);
    await makeTrunk();
    await setMaster(NS.node, 'eth1.100', 'guestbr0');
    await linksReady();
    await runIn(NS.peer, 'nft', ['add table netdev watch; delete table netdev watch; add table netdev watch; add chain netdev watch in { type filter hook ingress device "trunk0" priority 0; }; add rule netdev watch in arp daddr ip 10.5.5.254 counter; add rule netdev watch in arp daddr ip 10.5.5.99 counter']);
    await arpFromGuest('10.5.5.99');
    await arpFromGuest('10.5.5.254');
    expect(await arpSeenByPeer('10.5.5.99')).toBeGreaterThan(0);
    expect(await arpSeenByPeer('10.5.5.254')).toBe(0);
  });
});
