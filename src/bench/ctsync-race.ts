// `npm run bench:ctsync-race`: how many cross-node ct-sync connections pay for the race between the
// guest's first reply and conntrackd's state synchronisation, with and without steering early
// replies to the other nodes (src/render/ctsync.ts). The two-node lab in ct-sync (real conntrackd
// per node namespace), a client program that opens N TCP connections and asks N UDP questions
// across nodes, each from a fresh source port, and times each one itself (no process start per
// probe). "Paid" means the answer took longer than 900 ms: a retransmitted SYN-ACK (the guest's
// 1 s RTO) or a repeated UDP question (the client asks again after 1 s). Prints, never asserts.
// Builds its lab under prefix cgwrace<pid>- and removes it (and stops its conntrackd) at the end.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadStateOrThrow } from '../state/index.js';
import type { ClusterState } from '../state/types.js';
import { labDown, labUp } from '../lab/topology.js';
import type { LabPlan } from '../lab/plan.js';
import { NftCli } from '../nft/backend.js';
import type { Ruleset } from '../nft/model.js';
import { resolveNode } from '../render/node-view.js';
import { ownedTables, renderView } from '../render/render.js';
import { planNft, planToTransaction } from '../plan/nft-plan.js';
import { SettingsHost } from '../settings/host.js';
import { applyNodeSettings, planNodeSettings } from '../settings/reconcile.js';
import { runIn } from '../netns/netns.js';
import { waitUntil } from '../proc/process.js';

const N = Number(process.env.CGW_RACE_N ?? 100);
const PAID_MS = 900;

const CLIENT = String.raw`
'use strict';
const net = require('node:net');
const dgram = require('node:dgram');
const [proto, host, port, n] = process.argv.slice(1);
const times = [];
const once = () => new Promise((resolve) => {
  const t0 = process.hrtime.bigint();
  const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
  const give = (v) => { clearTimeout(limit); resolve(v); };
  const limit = setTimeout(() => give(-1), 5000);
  if (proto === 'tcp') {
    const s = net.connect(Number(port), host);
    // Timed at the handshake; then the banner is read to the server's close (a reset would be rude).
    let t = -1;
    s.on('connect', () => (t = ms()));
    s.on('data', () => {});
    s.on('end', () => { s.end(); give(t); });
    s.on('error', (e) => { process.stderr.write('tcp: ' + e.message + '\n'); give(-1); });
  } else {
    const s = dgram.createSocket('udp4');
    let again;
    s.on('message', () => { const t = ms(); clearInterval(again); s.close(); give(t); });
    s.on('error', () => {});
    s.connect(Number(port), host, () => { s.send('q'); again = setInterval(() => s.send('q'), 1000); });
    setTimeout(() => { clearInterval(again); try { s.close(); } catch {} }, 5000);
  }
});
(async () => { for (let i = 0; i < Number(n); i++) times.push(await once()); process.stdout.write(JSON.stringify(times)); })();
`;

function clientRun(ns: string, proto: 'tcp' | 'udp', host: string, port: number, n = N): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', CLIENT, proto, host, String(port), String(n)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d;
    });
    child.on('exit', () => {
      try {
        resolve(JSON.parse(out) as number[]);
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** Every node's tables; `steer` false removes the steering rules (the `dup` ones) from the forward filter. */
async function applyTables(state: ClusterState, plan: LabPlan, steer: boolean): Promise<void> {
  for (const n of plan.nodes) {
    const nft = new NftCli({ prefix: ['ip', 'netns', 'exec', n.ns] });
    const desired: Ruleset = renderView(resolveNode(state, n.name));
    const tables = steer ? desired.tables : desired.tables.map((t) => ({ ...t, chains: t.chains.map((c) => ({ ...c, rules: c.rules.filter((r) => !r.expr.some((e) => typeof e === 'object' && e !== null && 'dup' in e)) })) }));
    const owned = ownedTables(state);
    const p = planNft({ tables }, await nft.list(owned), owned);
    if (p.changes.length) await nft.run(planToTransaction(p));
  }
}

async function applySettings(state: ClusterState, plan: LabPlan, dir: string): Promise<void> {
  for (const n of plan.nodes) {
    const host = new SettingsHost({ prefix: ['ip', 'netns', 'exec', n.ns], netns: n.ns });
    const view = resolveNode(state, n.name, join(dir, n.name));
    await applyNodeSettings(planNodeSettings(view.settings, await host.readLive(view.settings, view.conntrackdPaths), view.conntrackdPaths), host);
  }
}

/** Counters on the guest's node: its SYN-ACKs, and its replies that found no state yet. */
const COUNTERS = `table ip cgwrace {
  chain early {
    type filter hook forward priority -10; policy accept;
    ip saddr 10.5.5.202 tcp sport 22 tcp flags & (syn | ack) == syn | ack counter
    ip saddr 10.5.5.202 tcp sport 22 ct state invalid,new counter
    ip saddr 10.5.5.202 udp sport 123 ct state new counter
  }
}`;

async function counters(ns: string): Promise<number[]> {
  const r = await runIn(ns, 'nft', ['list', 'chain', 'ip', 'cgwrace', 'early']);
  return [...r.stdout.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
}

function summary(label: string, times: number[]): string {
  const ok = times.filter((t) => t >= 0);
  const paid = ok.filter((t) => t > PAID_MS).length;
  const sorted = [...ok].sort((a, b) => a - b);
  const pct = (q: number) => (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN).toFixed(1);
  return `${label.padEnd(34)} n=${times.length} failed=${times.length - ok.length} paid(>${PAID_MS} ms)=${paid} (${((100 * paid) / times.length).toFixed(1)} %)  median ${pct(0.5)} ms  p95 ${pct(0.95)} ms  max ${pct(1)} ms`;
}

async function main(): Promise<void> {
  const stateDir = process.env.CGW_RACE_STATE ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'state-example');
  const base = await loadStateOrThrow(stateDir);
  // It measures node1 -> guest2 (on node2) of the two-node lab; more nodes are `lab up --nodes` (test/lab-nodes.test.ts).
  const named = ['node1', 'node2'].every((n) => base.nodes.some((x) => x.name === n)) && base.guests.some((g) => g.name === 'guest2' && g.node === 'node2');
  if (base.nodes.length !== 2 || !named) throw new Error(`bench:ctsync-race measures the two-node lab (node1, node2, guest2 on node2); ${stateDir} has ${base.nodes.map((n) => n.name).join(', ')}`);
  const state: ClusterState = { ...base, cluster: { ...base.cluster, nat: { ...base.cluster.nat, mode: 'ct-sync' } } };
  const prefix = `cgwrace${process.pid}-`;
  const tmp = await mkdtemp(join(tmpdir(), 'cgw-race-'));
  try {
    const modes = process.env.CGW_RACE_BRNF ? [process.env.CGW_RACE_BRNF === 'on'] : [false, true];
    for (const brNetfilter of modes) {
      const plan = await labUp(state, { prefix, brNetfilter, runRoot: tmp });
      try {
        await applyTables(state, plan, true);
        await applySettings(state, plan, tmp);
        const node1 = plan.nodes.find((n) => n.name === 'node1')!;
        const node2 = plan.nodes.find((n) => n.name === 'node2')!;
        // nft cannot read a batch from Node's stdin (FACTS): a file.
        await writeFile(join(tmp, 'counters.nft'), COUNTERS);
        await runIn(node2.ns, 'nft', ['-f', join(tmp, 'counters.nft')]);
        // Until the freshly started conntrackd pair carries flows (their first resync), nothing is measured.
        const warm = await waitUntil(async () => (await clientRun(plan.client.ns, 'tcp', node1.publicIP, 2202, 1))[0]! >= 0 && (await clientRun(plan.client.ns, 'udp', node1.publicIP, 1232, 1))[0]! >= 0, 30_000, 500);
        if (!warm) throw new Error('the lab does not carry cross-node flows: nothing to measure');
        for (const steer of [false, true]) {
          await applyTables(state, plan, steer);
          // Deltas: `nft reset counters` does not reset anonymous counters in 1.0.6.
          const before = await counters(node2.ns);
          // node1:2202 -> guest2:22 and node1:1232 -> guest2:123, guest2 on node2: every flow crosses.
          const tcp = await clientRun(plan.client.ns, 'tcp', node1.publicIP, 2202);
          const udp = await clientRun(plan.client.ns, 'udp', node1.publicIP, 1232);
          const [synAcks, tcpEarly, udpEarly] = (await counters(node2.ns)).map((v, i) => v - (before[i] ?? 0));
          const what = `br_netfilter ${brNetfilter ? 'on ' : 'off'}, ${steer ? 'steered' : 'dropped'}`;
          console.log(summary(`TCP connect, ${what}`, tcp));
          console.log(summary(`UDP answer,  ${what}`, udp));
          console.log(`  guest node: SYN-ACKs sent ${synAcks} for ${N} connections; replies before the state: TCP ${tcpEarly}, UDP ${udpEarly}`);
        }
      } finally {
        await applySettings({ ...state, cluster: { ...state.cluster, nat: { ...state.cluster.nat, mode: 'full-nat' } } }, plan, tmp).catch(() => undefined);
        await labDown(prefix, { runRoot: tmp });
      }
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
