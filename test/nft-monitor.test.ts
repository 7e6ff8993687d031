// nft monitor events (parsed from output recorded on this machine's nft 1.0.6) and the committed
// ruleset in memory, against real nft in a namespace this file creates.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { batchVerdict } from '../src/agent/watch.js';
import { NftCli, NftError } from '../src/nft/backend.js';
import { afterTransaction, CommittedRuleset } from '../src/nft/committed.js';
import { parseMonitorOutput, startNftMonitor, touchedTables, type MonitorBatch } from '../src/nft/monitor.js';
import { Transaction } from '../src/nft/transaction.js';
import { diffElements, planNft, planToTransaction } from '../src/plan/nft-plan.js';
import { ownedTables, renderNode } from '../src/render/render.js';
import { syntheticState } from '../src/bench/synthetic.js';
import { waitUntil } from '../src/proc/process.js';
import { PROJECT_ROOT } from './helpers/agent-fixture.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';

const fixtures = path.join(PROJECT_ROOT, 'test/fixtures');
const recorded = readFileSync(path.join(fixtures, 'nft-monitor-1.0.6.txt'), 'utf8');
const commands = (JSON.parse(readFileSync(path.join(fixtures, 'nft-monitor-1.0.6.pids.json'), 'utf8')) as { commands: { pid: number; command: string }[] }).commands;

describe('nft monitor output (recorded from nft 1.0.6)', () => {
  const batches = parseMonitorOutput(recorded);

  it('groups events into one batch per committed transaction, with the PID of the nft that committed it', () => {
    expect(batches.map((b) => b.pid)).toEqual(commands.map((c) => c.pid));
    expect(batches.map((b) => b.process)).toEqual(commands.map(() => 'nft'));
    expect(batches.map((b) => b.generation)).toEqual(commands.map((_, i) => i + 2));
    // The replace-table batch: every line of it, in one batch.
    expect(batches[0]!.events.map((e) => `${e.verb} ${e.object}`)).toEqual([
      'add table',
      'delete table',
      'add table',
      'add map',
      'add element',
      'add element',
      'add chain',
      'add rule',
    ]);
  });

  it('names the table of each event, also of a flush ruleset', () => {
    expect(batches.map((b) => [...touchedTables(b).tables].sort())).toEqual([
      ['ip cgw_nat'],
      ['ip cgw_nat'],
      ['ip cgw_nat'],
      ['ip filter_foreign'],
      ['ip filter_foreign'],
      ['ip filter_foreign'],
      ['ip filter_foreign'],
      ['ip cgw_nat'],
      ['netdev cgw_arp'],
      ['ip cgw_nat', 'netdev cgw_arp'],
    ]);
    expect(batches.every((b) => !touchedTables(b).unknown)).toBe(true);
  });

  it('tells our own transactions, foreign changes to our tables, and changes elsewhere apart', () => {
    const ours = new Set([commands[0]!.pid, commands[1]!.pid]);
    const tracked = new Set(['ip cgw_nat']);
    const verdicts = batches.map((b) => batchVerdict(b, (pid) => ours.has(pid), tracked).kind);
    expect(verdicts).toEqual(['own', 'own', 'ours', 'elsewhere', 'elsewhere', 'elsewhere', 'elsewhere', 'ours', 'elsewhere', 'ours']);
    // A foreign base chain coming or going is noted (the shadowing report reads the chains again).
    expect(batchVerdict(batches[4]!, () => false, tracked)).toEqual({ kind: 'elsewhere', chains: true });
    expect(batchVerdict(batches[3]!, () => false, tracked)).toEqual({ kind: 'elsewhere', chains: false });
  });

  it('a line it cannot read, or a generation without a writer, counts as a possible change to our tables', () => {
    const odd: MonitorBatch = { generation: 9, events: [{ verb: 'something', object: '', line: 'something new' }] };
    expect(batchVerdict(odd, () => true, new Set())).toMatchObject({ kind: 'ours' });
    const [anonymous] = parseMonitorOutput('add element ip cgw_nat fwd_tcp { 1 : 10.5.5.1 . 1 }\n# new generation 12\n');
    expect(anonymous).toMatchObject({ generation: 12, events: [{ table: 'cgw_nat' }] });
    expect(anonymous!.pid).toBeUndefined();
    expect(batchVerdict(anonymous!, () => true, new Set(['ip cgw_nat'])).kind).toBe('ours');
  });
});

describe('committed ruleset in memory (real nft)', () => {
  let n: NftNamespace;
  const state = syntheticState(20);
  const owned = ownedTables(state);
  const desired = renderNode(state, 'node1');
  const nat = { family: 'ip' as const, name: 'cgw_nat' };
  const element = (port: number) => ({ key: port, value: { concat: ['10.5.5.201', 22] } });

  beforeAll(async () => {
    n = await nftNamespace('monitor');
  });
  afterAll(async () => {
    await n?.destroy();
  });

  /** A memory over a real backend whose reads are counted. */
  async function converged(): Promise<{ mem: CommittedRuleset; cli: NftCli }> {
    await n.raw(['flush', 'ruleset']);
    const cli = new NftCli({ prefix: ['ip', 'netns', 'exec', n.ns] });
    const mem = new CommittedRuleset(cli);
    await mem.run(planToTransaction(planNft(desired, await mem.list(owned), owned)));
    return { mem, cli };
  }

  it('answers from memory after the first read; a committed element change is patched in, not listed', async () => {
    const { mem } = await converged();
    expect(mem.reads).toMatchObject({ full: 1, tables: 1 }); // the first read, then the created table read back
    const first = await mem.list(owned);
    expect(planNft(desired, first, owned).changes).toEqual([]);
    expect(await mem.list(owned)).toBe(first);
    const tx = new Transaction().add({ op: 'add-elements', table: nat, map: 'fwd_tcp', elements: [element(40001)] }).add({ op: 'delete-elements', table: nat, map: 'fwd_tcp', elements: [{ key: 10000, value: null }] });
    await mem.run(tx);
    expect(mem.reads).toMatchObject({ full: 1, tables: 1 });
    // Memory and the kernel agree on the result.
    const remembered = await mem.list(owned);
    const listed = await new NftCli({ prefix: ['ip', 'netns', 'exec', n.ns] }).list(owned);
    expect(planNft(remembered, listed, owned).changes).toEqual([]);
    expect(JSON.stringify(remembered)).toContain('40001');
  });

  it('a failed transaction changes nothing and makes the next list a full read', async () => {
    const { mem } = await converged();
    const before = await n.raw(['list', 'table', 'ip', 'cgw_nat']);
    const doomed = new Transaction().add({ op: 'add-elements', table: nat, map: 'fwd_tcp', elements: [element(40002)] }).add({ op: 'delete-elements', table: nat, map: 'fwd_tcp', elements: [{ key: 39999, value: null }] });
    await expect(mem.run(doomed)).rejects.toBeInstanceOf(NftError);
    expect(await n.raw(['list', 'table', 'ip', 'cgw_nat'])).toBe(before);
    expect(mem.holds(owned)).toBe(false);
    const reads = mem.reads.full;
    await mem.list(owned);
    expect(mem.reads.full).toBe(reads + 1);
  });

  it('a structural change re-lists only the changed table; a table memory does not hold is read, never guessed', () => {
    const tables = new Map([['ip cgw_nat', desired.tables[0]!]]);
    const add = new Transaction().add({ op: 'add-elements', table: nat, map: 'fwd_tcp', elements: [element(40003)] });
    const { patched, reread } = afterTransaction(tables, add.ops);
    expect(reread).toEqual([]);
    const fwd = patched.get('ip cgw_nat')!.maps.find((m) => m.name === 'fwd_tcp')!;
    expect(fwd.elements.map((e) => e.key)).toContain(40003);
    // Kept in port order, as nft lists it.
    expect(fwd.elements.map((e) => e.key as number)).toEqual([...fwd.elements.map((e) => e.key as number)].sort((a, b) => a - b));
    const flush = new Transaction().add({ op: 'flush-chain', table: nat, chain: 'prerouting' });
    expect(afterTransaction(tables, flush.ops).reread).toEqual([nat]);
    expect(afterTransaction(new Map(), add.ops).reread).toEqual([nat]);
    expect(afterTransaction(tables, new Transaction().add({ op: 'add-elements', table: nat, map: 'no_such_map', elements: [element(1)] }).ops).reread).toEqual([nat]);
  });

  it('the merge-walk diff of port-ordered maps gives what the general diff gives', () => {
    const el = (port: number, ip: string) => ({ key: port, value: { concat: [ip, 22] } });
    const desired = [el(1, 'a'), el(3, 'b'), el(4, 'c'), el(7, 'd'), el(9, 'e')];
    const live = [el(0, 'z'), el(3, 'b'), el(4, 'x'), el(8, 'y'), el(9, 'e'), el(10, 'w')];
    const ordered = diffElements('m', desired, live);
    // Out of order, the same elements take the general (hashing) path.
    const general = diffElements('m', desired, [...live].reverse());
    expect(ordered).toEqual({ map: 'm', add: [el(1, 'a'), el(4, 'c'), el(7, 'd')], remove: [el(4, 'x'), el(0, 'z'), el(8, 'y'), el(10, 'w')] });
    expect(new Set(general!.add)).toEqual(new Set(ordered!.add));
    expect(new Set(general!.remove)).toEqual(new Set(ordered!.remove));
    expect(diffElements('m', desired, desired)).toBeUndefined();
  });

  it('the monitor process reports a foreign change with its writer, and stops by PID', async () => {
    await converged();
    const batches: MonitorBatch[] = [];
    const m = startNftMonitor(['ip', 'netns', 'exec', n.ns, 'nft', 'monitor'], (b) => batches.push(b));
    try {
      // Subscribed once a change made now is seen (retried: the first may precede the subscription).
      let port = 41000;
      const seen = await waitUntil(async () => {
        await n.raw(['add', 'element', 'ip', 'cgw_nat', 'fwd_tcp', `{ ${port++} : 10.5.5.202 . 22 }`]);
        return batches.some((b) => b.events.some((e) => e.object === 'element' && e.table === 'cgw_nat'));
      }, 10_000, 200);
      expect(seen).toBe(true);
      expect(batches.at(-1)).toMatchObject({ process: 'nft', events: [{ verb: 'add', object: 'element', family: 'ip', table: 'cgw_nat' }] });
    } finally {
      await m.stop();
    }
    expect(await m.exited).toMatch(/ended \(signal SIGTERM\)/);
  });
});
