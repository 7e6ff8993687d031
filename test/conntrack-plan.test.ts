// Which conntrack entries an apply makes stale (src/conntrack/cleanup.ts): pure, from the nft
// plan's live and desired forward maps. No namespaces here (test/conntrack-cleanup.test.ts runs it).
import { describe, expect, it } from 'vitest';
import type { ClusterState, ForwardSpec } from '../src/state/types.js';
import { resolveNode } from '../src/render/node-view.js';
import { ownedTables, renderView } from '../src/render/render.js';
import { planNft } from '../src/plan/nft-plan.js';
import { planConntrackCleanup, cleanupArgs, type StaleForward } from '../src/conntrack/cleanup.js';
import { stateInMode } from './helpers/modes-lab.js';

/** The stale forwards node1 gets when `base` is live and `head` is desired. */
function staleOn(base: ClusterState, head: ClusterState, node = 'node1'): StaleForward[] {
  const live = renderView(resolveNode(base, node));
  const view = resolveNode(head, node);
  const desired = renderView(view);
  const owned = ownedTables(head);
  return planConntrackCleanup(view, { desired, live, owned, plan: planNft(desired, live, owned) });
}

function editForward(s: ClusterState, name: string, edit: (f: ForwardSpec) => ForwardSpec | undefined): ClusterState {
  return { ...s, forwards: s.forwards.flatMap((f) => (f.name === name ? [edit(f)].filter((x): x is ForwardSpec => !!x) : [f])) };
}
const retarget = (guest: string, cleanup?: boolean) => (f: ForwardSpec): ForwardSpec => ({ ...f, target: { ...f.target, guest }, ...(cleanup !== undefined && { conntrackCleanup: cleanup }) });

describe('planConntrackCleanup', () => {
  it('a retargeted UDP forward: its entries to the old guest, and the exact conntrack filters', async () => {
    const base = await stateInMode('full-nat');
    const stale = staleOn(base, editForward(base, 'ntp-guest1', retarget('guest2')));
    expect(stale).toEqual([{ protocol: 'udp', forward: 'ntp-guest1', publicIP: '192.168.122.11', port: 1231, from: { ip: '10.5.5.201', port: 123 }, to: { ip: '10.5.5.202', port: 123 } }]);
    expect(cleanupArgs(stale[0]!)).toEqual(['-D', '-p', 'udp', '--orig-dst', '192.168.122.11', '--orig-port-dst', '1231', '--reply-src', '10.5.5.201', '--reply-port-src', '123']);
  });

  it('nothing when no forward map element changes (even if other rules do)', async () => {
    const base = await stateInMode('full-nat');
    expect(staleOn(base, base)).toEqual([]);
    expect(staleOn(base, { ...base, cluster: { ...base.cluster, nat: { ...base.cluster.nat, forwardSnat: false } } })).toEqual([]);
  });

  it('a removed UDP forward: entries to its old target, without a name or a new target', async () => {
    const base = await stateInMode('full-nat');
    expect(staleOn(base, editForward(base, 'ntp-guest2', () => undefined))).toEqual([{ protocol: 'udp', publicIP: '192.168.122.11', port: 1232, from: { ip: '10.5.5.202', port: 123 } }]);
  });

  it('TCP only with conntrackCleanup on the forward', async () => {
    const base = await stateInMode('full-nat');
    expect(staleOn(base, editForward(base, 'ssh-guest1', retarget('guest2')))).toEqual([]);
    expect(staleOn(base, editForward(base, 'ssh-guest1', retarget('guest2', false)))).toEqual([]);
    const on = staleOn(base, editForward(base, 'ssh-guest1', retarget('guest2', true)));
    expect(on.map((s) => `${s.forward} ${s.protocol} ${s.port} ${s.from.ip}>${s.to?.ip}`)).toEqual(['ssh-guest1 tcp 2201 10.5.5.201>10.5.5.202']);
    // A per-node forward retargeted on one node only concerns that node.
    const web = editForward(base, 'web-node2', retarget('guest2', true));
    expect(staleOn(base, web, 'node1')).toEqual([]);
    expect(staleOn(base, web, 'node2').map((s) => `${s.forward} ${s.publicIP}:${s.port}`)).toEqual(['web-node2 192.168.122.12:80']);
  });

  it('a mode switch that drops the forward maps (stateless-nat) cleans every UDP forward of the node', async () => {
    const stale = staleOn(await stateInMode('ct-sync'), await stateInMode('stateless-nat'));
    expect(stale.map((s) => `${s.forward} ${s.port} ${s.from.ip} ${s.to === undefined}`)).toEqual(['ntp-guest1 1231 10.5.5.201 true', 'ntp-guest2 1232 10.5.5.202 true']);
  });
});
