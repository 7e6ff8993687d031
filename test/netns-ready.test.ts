// waitForLinks (src/netns/netns.ts), which every namespace test relies on before it probes: it
// must see a bridge port that does not forward yet, a link without carrier and a tentative
// address, and return once they are ready. A bridge with STP on keeps a new port listening, then
// learning, for twice its forward delay: a state to wait for that does not pass by itself in
// microseconds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addAddress, addBridge, addVeth, linkNotReady, linksNotReady, linkUp, runIn, setMaster, waitForLinks } from '../src/netns/netns.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';

describe('linkNotReady (pure)', () => {
  const up = { ifname: 'v0', flags: ['BROADCAST', 'UP', 'LOWER_UP'], operstate: 'UP' };
  it('names what is missing, in order', () => {
    expect(linkNotReady({ ...up, flags: ['BROADCAST'] }, [])).toBe('down');
    expect(linkNotReady({ ...up, flags: ['UP', 'NO-CARRIER'] }, [])).toBe('no carrier');
    expect(linkNotReady({ ...up, operstate: 'DOWN' }, [])).toBe('operstate DOWN');
    expect(linkNotReady({ ...up, linkinfo: { info_slave_kind: 'bridge', info_slave_data: { state: 'learning' } } }, [])).toBe('bridge port learning');
    expect(linkNotReady(up, [{ local: 'fe80::1', tentative: true }])).toBe('tentative fe80::1');
    // A failed duplicate address detection never ends: not something to wait for.
    expect(linkNotReady(up, [{ local: 'fe80::1', tentative: true, dadfailed: true }])).toBeUndefined();
    expect(linkNotReady({ ...up, operstate: 'UNKNOWN', linkinfo: { info_slave_kind: 'bridge', info_slave_data: { state: 'forwarding' } } }, [{ local: '10.0.0.1' }])).toBeUndefined();
  });
});

describe('waitForLinks in a namespace', () => {
  let env: NftNamespace;
  beforeAll(async () => {
    env = await nftNamespace('ready');
  });
  afterAll(async () => {
    await env?.destroy();
  });

  it('waits for a bridge port through listening and learning, a peer coming up and DAD', async () => {
    const ns = env.ns;
    await addBridge(ns, 'br0');
    // Forward delay 2 s (the kernel's minimum): the port listens 2 s, then learns 2 s.
    await runIn(ns, 'ip', ['link', 'set', 'br0', 'type', 'bridge', 'stp_state', '1', 'forward_delay', '200']);
    await addVeth({ ns, name: 'p0' }, { ns, name: 'p1' });
    await setMaster(ns, 'p0', 'br0');
    await addAddress(ns, 'p1', '10.9.9.1/24');
    await linkUp(ns, 'p0');
    // p0 is up but its peer is not: no carrier.
    expect(await linksNotReady(ns, ['p0'])).toEqual(['p0: no carrier']);
    const t0 = Date.now();
    await linkUp(ns, 'p1');
    const pending = (await linksNotReady(ns, ['p0', 'p1'])).join('; ');
    expect(pending).toMatch(/p0: (operstate \w+|bridge port (listening|learning|blocking))/);
    expect(pending).toMatch(/p1: (operstate \w+|tentative fe80::)/);

    await waitForLinks(ns, ['p0', 'p1']);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_000); // at least the listening phase
    const port = JSON.parse((await runIn(ns, 'bridge', ['-j', 'link', 'show', 'dev', 'p0'])).stdout) as Array<{ state: string }>;
    expect(port[0].state).toBe('forwarding');
    expect(await linksNotReady(ns)).toEqual([]);
  });

  it('a new namespace does not forward, whatever the host does (its IPv4 settings are copied from the host)', async () => {
    expect((await runIn(env.ns, 'sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('0');
  });

  it("a bridge keeps its MAC when a port with a lower MAC joins or leaves (the node's IPs do not move)", async () => {
    const ns = env.ns;
    await addBridge(ns, 'brmac0');
    const mac = async () => (await runIn(ns, 'cat', ['/sys/class/net/brmac0/address'])).stdout.trim();
    const before = await mac();
    await runIn(ns, 'ip', ['link', 'add', 'lowmac0', 'address', '02:00:00:00:00:01', 'type', 'veth', 'peer', 'name', 'lowmac1']);
    await setMaster(ns, 'lowmac0', 'brmac0');
    expect(await mac()).toBe(before);
    await runIn(ns, 'ip', ['link', 'del', 'lowmac0']);
    expect(await mac()).toBe(before);
  });

  it('says which links are still not ready when the deadline passes', async () => {
    await expect(waitForLinks(env.ns, ['nosuch0'], 200)).rejects.toThrow(`links in ${env.ns} not ready after 200 ms: nosuch0: missing`);
  });
});
