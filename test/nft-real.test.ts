// Integration: cgw-sync's plan/apply against the real nft 1.0.6, inside a network namespace
// that this file creates and deletes. The host's ruleset is never read or written.
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';
import { syntheticState } from '../src/bench/synthetic.js';
import { applyNodeNft, planNodeNft } from '../src/reconcile/nft.js';
import { planToTransaction } from '../src/plan/nft-plan.js';
import { NftError } from '../src/nft/backend.js';
import type { ClusterState } from '../src/state/types.js';

const envs: NftNamespace[] = [];
let env: NftNamespace;
beforeEach(async () => {
  env = await nftNamespace('real');
  envs.push(env);
});
afterAll(async () => {
  for (const e of envs) await e.destroy();
});

async function converge(state: ClusterState, node = 'node1') {
  const planned = await planNodeNft(state, node, env.nft);
  await applyNodeNft(planned, env.nft);
  return planned;
}

describe('plan and apply with the real nft', () => {
  it('creates the owned tables on an empty node, then plans nothing and runs nothing', async () => {
    const state = syntheticState(5);
    const first = await converge(state);
    expect(first.plan.changes.map((c) => `${c.action} ${c.table.family} ${c.table.name}`)).toEqual(['create ip cgw_nat', 'create netdev cgw_arp']);
    const listing = await env.raw(['list', 'table', 'ip', 'cgw_nat']);
    expect(listing).toContain('10000 : 10.5.5.201 . 1');
    expect(listing).toContain('ct status dnat oifname "guestbr0" snat to 10.5.5.251');
    const second = await planNodeNft(state, 'node1', env.nft);
    expect(second.plan.changes).toEqual([]);
    expect(planToTransaction(second.plan).empty).toBe(true);
  });

  it('leaves a foreign table byte-identical, after apply and after all forwards are removed', async () => {
    await env.raw(['add', 'table', 'inet', 'filter']);
    await env.raw(['add', 'chain', 'inet', 'filter', 'input', '{ type filter hook input priority 0; policy accept; }']);
    await env.raw(['add', 'rule', 'inet', 'filter', 'input', 'tcp', 'dport', '22', 'counter', 'accept']);
    const before = await env.raw(['-a', 'list', 'table', 'inet', 'filter']);
    const beforeJson = await env.raw(['-j', 'list', 'table', 'inet', 'filter']);
    expect(before).toContain('tcp dport 22 counter packets 0 bytes 0 accept');

    await converge(syntheticState(20));
    expect(await env.raw(['-a', 'list', 'table', 'inet', 'filter'])).toBe(before);
    await converge(syntheticState(0));
    expect(await env.raw(['-a', 'list', 'table', 'inet', 'filter'])).toBe(before);
    expect(await env.raw(['-j', 'list', 'table', 'inet', 'filter'])).toBe(beforeJson);
  });

  it('changes only map elements when only forwards change (rule handles stay)', async () => {
    await converge(syntheticState(10));
    const handlesBefore = await env.raw(['-a', 'list', 'chain', 'ip', 'cgw_nat', 'prerouting']);
    const planned = await planNodeNft(syntheticState(12), 'node1', env.nft);
    const ops = planToTransaction(planned.plan).ops.map((o) => o.op);
    // Forwards 10010 and 10011 are both tcp: one element batch, no table, chain or rule operation.
    expect(ops).toEqual(['add-elements']);
    await applyNodeNft(planned, env.nft);
    expect(await env.raw(['-a', 'list', 'chain', 'ip', 'cgw_nat', 'prerouting'])).toBe(handlesBefore);
    expect(await env.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp'])).toContain('10011 : 10.5.5.202 . 12');
  });

  it('a failing transaction changes nothing: the previous ruleset stays intact', async () => {
    await converge(syntheticState(10));
    const before = await env.raw(['list', 'ruleset']);
    // Plan a change that removes forwards 5..9 and adds a new one, then remove one of the doomed
    // elements by hand before applying: nft refuses the delete, so the whole batch must not apply.
    const next = syntheticState(5);
    next.forwards.push({ ...next.forwards[0]!, name: 'late', port: 20000 });
    const planned = await planNodeNft(next, 'node1', env.nft);
    await env.raw(['delete', 'element', 'ip', 'cgw_nat', 'fwd_tcp', '{ 10005 }']);
    const afterHandEdit = await env.raw(['list', 'ruleset']);
    await expect(applyNodeNft(planned, env.nft)).rejects.toBeInstanceOf(NftError);
    expect(await env.raw(['list', 'ruleset'])).toBe(afterHandEdit);
    expect(afterHandEdit).not.toBe(before);
    expect(afterHandEdit).not.toContain('20000');
  });

  it('plans and corrects hand-made drift: a deleted rule and an added map element', async () => {
    const state = syntheticState(4);
    await converge(state);
    const chain = await env.raw(['-a', 'list', 'chain', 'ip', 'cgw_nat', 'postrouting']);
    const handle = /ct status dnat .* # handle (\d+)/.exec(chain)?.[1];
    expect(handle).toBeDefined();
    await env.raw(['delete', 'rule', 'ip', 'cgw_nat', 'postrouting', 'handle', handle!]);
    await env.raw(['add', 'element', 'ip', 'cgw_nat', 'fwd_tcp', '{ 4444 : 10.5.5.99 . 44 }']);

    const drift = await planNodeNft(state, 'node1', env.nft);
    expect(drift.plan.changes).toHaveLength(1);
    const change = drift.plan.changes[0]!;
    expect(change.action).toBe('update');
    if (change.action !== 'update') throw new Error('unreachable');
    expect(change.chains.map((c) => [c.chain, c.added.length, c.removed.length])).toEqual([['postrouting', 1, 0]]);
    expect(change.maps).toEqual([{ map: 'fwd_tcp', add: [], remove: [{ key: 4444, value: { concat: ['10.5.5.99', 44] } }] }]);

    await applyNodeNft(drift, env.nft);
    expect((await planNodeNft(state, 'node1', env.nft)).plan.changes).toEqual([]);
    expect(await env.raw(['list', 'chain', 'ip', 'cgw_nat', 'postrouting'])).toContain('ct status dnat');
  });

  it('replaces a table whose structure was changed by hand, and deletes a table no longer needed', async () => {
    const state = syntheticState(3);
    await converge(state);
    await env.raw(['add', 'chain', 'ip', 'cgw_nat', 'intruder']);
    const planned = await planNodeNft(state, 'node1', env.nft);
    expect(planned.plan.changes.map((c) => c.action)).toEqual(['replace']);
    await applyNodeNft(planned, env.nft);
    expect(await env.raw(['list', 'table', 'ip', 'cgw_nat'])).not.toContain('intruder');

    const noTrunks = syntheticState(3);
    noTrunks.nodes[0]!.trunks = [];
    const del = await planNodeNft(noTrunks, 'node1', env.nft);
    expect(del.plan.changes.map((c) => `${c.action} ${c.table.name}`)).toEqual(['delete cgw_arp']);
    await applyNodeNft(del, env.nft);
    expect(await env.raw(['list', 'tables'])).not.toContain('cgw_arp');
  });

  it('loads on a node whose interfaces do not exist yet', async () => {
    const state = syntheticState(1);
    state.nodes[0]!.uplink.interface = 'notyet0';
    state.nodes[0]!.trunks = ['notyet1.100'];
    await converge(state);
    expect(await env.raw(['list', 'table', 'netdev', 'cgw_arp'])).toContain('device "notyet1.100"');
  });
});
