// Unit tests of render + plan + transaction against the in-memory fake nft (no root needed).
import { describe, expect, it } from 'vitest';
import { syntheticState } from '../src/bench/synthetic.js';
import { FakeNft } from '../src/nft/fake.js';
import { applyNodeNft, planNodeNft, NotConverged } from '../src/reconcile/nft.js';
import { planToTransaction } from '../src/plan/nft-plan.js';
import { formatNftPlanText, nftPlanJson } from '../src/plan/format.js';
import { renderNode } from '../src/render/render.js';
import { printRule } from '../src/nft/text.js';
import { NftError, type NftBackend } from '../src/nft/backend.js';

async function converged(forwards = 4) {
  const nft = new FakeNft();
  const state = syntheticState(forwards);
  await applyNodeNft(await planNodeNft(state, 'node1', nft), nft);
  return { nft, state };
}

describe('render', () => {
  it('puts only the forwards that enter on the node into its maps', () => {
    const state = syntheticState(2);
    state.forwards[0]!.nodes = ['node2'];
    const nat1 = renderNode(state, 'node1').tables[0]!;
    const nat2 = renderNode(state, 'node2').tables[0]!;
    const keys = (t: typeof nat1) => t.maps.flatMap((m) => m.elements.map((e) => e.key));
    expect(keys(nat1)).toEqual([10001]);
    expect(keys(nat2)).toEqual([10000, 10001]);
  });

  it('uses one map lookup per protocol however many forwards there are', () => {
    const prerouting = renderNode(syntheticState(500), 'node1').tables[0]!.chains.find((c) => c.name === 'prerouting')!;
    expect(prerouting.rules.map(printRule)).toEqual([
      'ip daddr 192.168.122.11 dnat ip to tcp dport map @fwd_tcp comment "forwards: tcp ports on 192.168.122.11 to guests"',
      'ip daddr 192.168.122.11 dnat ip to udp dport map @fwd_udp comment "forwards: udp ports on 192.168.122.11 to guests"',
    ]);
  });

  it('leaves out the full-nat SNAT when the cluster turns it off (negative control)', () => {
    const state = syntheticState(1);
    state.cluster.nat.forwardSnat = false;
    const post = renderNode(state, 'node1').tables[0]!.chains.find((c) => c.name === 'postrouting')!;
    expect(post.rules.map(printRule).join('\n')).not.toContain('ct status dnat');
    expect(post.rules).toHaveLength(1);
  });

  it('names an unknown node clearly', () => {
    expect(() => renderNode(syntheticState(1), 'node9')).toThrow(/node "node9" is not in the state \(known nodes: node1, node2\)/);
  });
});

describe('plan against the fake nft', () => {
  it('creates both tables on an empty node and is idempotent', async () => {
    const nft = new FakeNft();
    const state = syntheticState(3);
    const p = await planNodeNft(state, 'node1', nft);
    expect(p.plan.changes.map((c) => c.action)).toEqual(['create', 'create']);
    await applyNodeNft(p, nft);
    expect((await planNodeNft(state, 'node1', nft)).plan.changes).toEqual([]);
    expect(nft.history).toHaveLength(1);
  });

  it('changes a forward target as delete+add of one element', async () => {
    const { nft, state } = await converged();
    state.forwards[1]!.target.port = 2222;
    const p = await planNodeNft(state, 'node1', nft);
    const ops = planToTransaction(p.plan).ops;
    expect(ops.map((o) => o.op)).toEqual(['delete-elements', 'add-elements']);
    expect(planToTransaction(p.plan).toText()).toBe(
      'delete element ip cgw_nat fwd_tcp { 10001 }\nadd element ip cgw_nat fwd_tcp { 10001 : 10.5.5.202 . 2222 }\n',
    );
    await applyNodeNft(p, nft);
    expect((await planNodeNft(state, 'node1', nft)).plan.changes).toEqual([]);
  });

  it('replaces the nat table when a chain hook priority was changed by hand', async () => {
    const { nft, state } = await converged();
    nft.edit((t) => {
      t.get('ip cgw_nat')!.chains[0]!.base!.priority = 50;
    });
    const p = await planNodeNft(state, 'node1', nft);
    expect(p.plan.changes).toMatchObject([{ action: 'replace', reasons: ['chain postrouting is "nat hook postrouting priority 50 policy accept"'] }]);
    expect(planToTransaction(p.plan).toText()).toMatch(/^add table ip cgw_nat\ndelete table ip cgw_nat\nadd table ip cgw_nat\n/);
  });

  it('rewrites a chain whose rules were reordered, keeping the desired order', async () => {
    const { nft, state } = await converged();
    nft.edit((t) => {
      const pre = t.get('ip cgw_nat')!.chains.find((c) => c.name === 'prerouting')!;
      pre.rules.reverse();
    });
    const p = await planNodeNft(state, 'node1', nft);
    expect(planToTransaction(p.plan).ops.map((o) => o.op)).toEqual(['flush-chain', 'add-rule', 'add-rule']);
    await applyNodeNft(p, nft);
    expect((await planNodeNft(state, 'node1', nft)).plan.changes).toEqual([]);
  });

  it('reports NotConverged when the read-back still differs', async () => {
    const { nft, state } = await converged();
    state.forwards[0]!.target.port = 7;
    const p = await planNodeNft(state, 'node1', nft);
    // A backend that accepts the transaction but does nothing: apply must notice.
    const lying: NftBackend = { list: nft.list.bind(nft), listBaseChains: nft.listBaseChains.bind(nft), run: async () => {} };
    await expect(applyNodeNft(p, lying)).rejects.toBeInstanceOf(NotConverged);
  });

  it('a transaction the fake refuses leaves its tables untouched', async () => {
    const { nft, state } = await converged(5);
    const udp = state.forwards.pop()!; // 10004, the only udp forward
    expect(udp.protocol).toBe('udp');
    state.forwards.push({ ...state.forwards[0]!, name: 'late', port: 30000 });
    const p = await planNodeNft(state, 'node1', nft);
    // Someone removes the doomed element before apply: the delete fails, so nothing applies.
    nft.edit((t) => {
      t.get('ip cgw_nat')!.maps.find((x) => x.name === 'fwd_udp')!.elements = [];
    });
    const before = await nft.list([{ family: 'ip', name: 'cgw_nat' }]);
    await expect(applyNodeNft(p, nft)).rejects.toBeInstanceOf(NftError);
    expect(await nft.list([{ family: 'ip', name: 'cgw_nat' }])).toEqual(before);
  });
});

describe('plan output', () => {
  it('prints a unified diff naming the changed element, and JSON with the exact batch', async () => {
    const { nft, state } = await converged();
    state.forwards.push({ name: 'new', protocol: 'udp', port: 123, target: { guest: 'guest2', port: 123 }, source: state.forwards[0]!.source });
    const p = await planNodeNft(state, 'node1', nft);
    const text = formatNftPlanText(p.plan);
    expect(text).toContain('~ table ip cgw_nat will be updated in place');
    expect(text).toMatch(/^\+\t\t\t123 : 10\.5\.5\.202 \. 123,$/m);
    expect(text).toContain('map elements +1/-0');
    const json = nftPlanJson(p.plan);
    expect(json.changed).toBe(true);
    expect(json.tables).toEqual([{ table: 'ip cgw_nat', action: 'update', reasons: [], chains: [], maps: [{ map: 'fwd_udp', add: ['123 : 10.5.5.202 . 123'], remove: [] }] }]);
    expect(json.batch).toBe('add element ip cgw_nat fwd_udp { 123 : 10.5.5.202 . 123 }\n');
  });

  it('says so when nothing changes', async () => {
    const { nft, state } = await converged();
    const p = await planNodeNft(state, 'node1', nft);
    expect(formatNftPlanText(p.plan)).toMatch(/no changes/);
    expect(nftPlanJson(p.plan)).toMatchObject({ changed: false, batch: '' });
  });
});
