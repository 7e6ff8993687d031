// Node settings through the one NodePlan and the one applier, against a real namespace: a node
// namespace with its guest bridge and node IP, the node's state dir in a temp folder, a real
// conntrackd started and stopped by the applier, and an all-or-nothing apply (a settings failure
// after the nft transaction puts the tables back). Namespace cgwt-setph-<pid>-<rand>, removed in afterAll.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentConfig } from '../src/agent/config.js';
import { defaultAgentConfig, executePlan, prepareNode, settingsHost, type NodeRuntime } from '../src/agent/node.js';
import { settingsReport } from '../src/agent/settings-phase.js';
import { addAddress, addBridge, runIn } from '../src/netns/netns.js';
import { processAlive } from '../src/proc/process.js';
import { planNft } from '../src/plan/nft-plan.js';
import { planNode } from '../src/plan/plan.js';
import { applyNodePlan } from '../src/reconcile/apply.js';
import { readLiveNode } from '../src/reconcile/live.js';
import { resolveNode } from '../src/render/node-view.js';
import { ownedTables } from '../src/render/render.js';
import { conntrackdPaths, settingsDir } from '../src/settings/model.js';
import type { ClusterState } from '../src/state/types.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';
import { STATE_DIR, stateInMode } from './helpers/modes-lab.js';

const BIN = join(import.meta.dirname, '..', 'dist', 'cli', 'bin.js');

describe('node settings in the node plan', () => {
  let env: NftNamespace;
  let config: AgentConfig;
  let tmp: string;
  const seen: Array<{ pid: number; startTime: string }> = [];

  beforeAll(async () => {
    env = await nftNamespace('setph');
    await addBridge(env.ns, 'guestbr0');
    await addAddress(env.ns, 'guestbr0', '10.5.5.251/24');
    tmp = await mkdtemp(join(tmpdir(), 'cgw-setph-'));
    config = { ...defaultAgentConfig('node1'), stateDir: tmp, netns: env.ns, guests: { ...defaultAgentConfig('node1').guests, enabled: false, runDir: tmp, stopTimeoutSeconds: 1 } };
  });
  afterAll(async () => {
    try {
      for (const p of seen) expect(processAlive(p.pid, p.startTime), `conntrackd ${p.pid} left running`).toBe(false);
    } finally {
      await env?.destroy();
      if (tmp) await rm(tmp, { recursive: true, force: true });
    }
  });

  const runtime = (): NodeRuntime => ({ config, nft: env.nft, settings: settingsHost(config), isAtOrAfter: async () => false, hooks: false });
  const paths = () => conntrackdPaths(settingsDir(tmp));

  /** Plan and apply a state the way the agent and `cgw-sync apply` do; the settings part of the report. */
  async function reconcile(state: ClusterState) {
    const rt = runtime();
    const prepared = await prepareNode(rt, state, 'r1', {});
    const executed = await executePlan(rt, prepared);
    return { prepared, executed, report: await settingsReport(prepared.plan, executed.result, rt.settings) };
  }

  it('`cgw-sync plan` shows the settings beside the nft changes, text and JSON (built CLI, in the namespace)', async () => {
    const dir = join(tmp, 'state');
    await cp(STATE_DIR, dir, { recursive: true });
    const cluster = join(dir, 'cluster.yaml');
    await writeFile(cluster, (await readFile(cluster, 'utf8')).replace('mode: full-nat', 'mode: ct-sync'));
    const cli = (args: string[]) => execa('ip', ['netns', 'exec', env.ns, process.execPath, BIN, ...args], { reject: false });
    const text = await cli(['plan', '--state', dir, '--node', 'node1']);
    expect(text.exitCode, String(text.stderr)).toBe(2);
    expect(text.stdout).toContain('+ table ip cgw_raw will be created');
    expect(text.stdout).toMatch(/^settings:\n(.*\n)* {2}~ sysctl net\.netfilter\.nf_conntrack_tcp_be_liberal: 0 -> 1$/m);
    expect(text.stdout).toContain('  + file /var/lib/cgw-sync/conntrackd/conntrackd.conf');
    expect(text.stdout).toContain('    +\t\tIPv4_Destination_Address 10.5.5.252');
    expect(text.stdout).toContain('  + conntrackd: start (not running)');
    // --state-dir moves conntrackd's files with the node's state dir.
    expect((await cli(['plan', '--state', dir, '--node', 'node1', '--state-dir', join(tmp, 'elsewhere')])).stdout).toContain(`  + file ${join(tmp, 'elsewhere')}/conntrackd/conntrackd.conf`);
    const json = JSON.parse(String((await cli(['plan', '--json', '--state', dir, '--node', 'node1'])).stdout));
    // render --guest: nothing to do for a guest in ct-sync; the redirect snippet in stateless-nat.
    expect(String((await cli(['render', '--state', dir, '--guest', 'guest1'])).stdout)).toBe('# ct-sync: guest guest1 needs no configuration from cgw-sync');
    await writeFile(cluster, (await readFile(cluster, 'utf8')).replace('mode: ct-sync', 'mode: stateless-nat'));
    for (const [i, n] of ['node1', 'node2'].entries()) await writeFile(join(dir, 'nodes', `${n}.yaml`), `${await readFile(join(dir, 'nodes', `${n}.yaml`), 'utf8')}natTag: ${i + 1}\n`);
    const snippet = await cli(['render', '--state', dir, '--guest', 'guest1']);
    expect(snippet.exitCode, String(snippet.stderr)).toBe(0);
    expect(String(snippet.stdout)).toContain('tcp dport 20080 redirect to :80 comment "entered node2 on 80"');
    expect(json.settings.changed).toBe(true);
    expect(json.settings.changes.map((c: { kind: string }) => c.kind)).toEqual(expect.arrayContaining(['sysctl', 'conntrackd-config', 'conntrackd-start']));
  });

  it('ct-sync: writes conntrackd.conf, starts conntrackd in the namespace, sets the sysctls; then nothing to do', async () => {
    const state = await stateInMode('ct-sync');
    const first = await reconcile(state);
    expect(first.executed.result).toMatchObject({ nft: { status: 'done' }, settings: { status: 'done' }, rollback: { status: 'skipped' } });
    expect(first.report.changes).toContain('+ conntrackd: start (not running)');
    expect(first.report.conntrackd).toMatchObject({ running: true, answering: true });
    const rec = await settingsHost(config).runningConntrackd(paths());
    expect(rec).toBeDefined();
    seen.push(rec!);
    // The process really is in the node's namespace.
    const ns = await runIn(env.ns, 'readlink', [`/proc/${rec!.pid}/ns/net`]);
    const own = await runIn(env.ns, 'readlink', ['/proc/self/ns/net']);
    expect(ns.stdout.trim()).toBe(own.stdout.trim());
    expect(await readFile(paths().config, 'utf8')).toContain('IPv4_Destination_Address 10.5.5.252');
    expect((await runIn(env.ns, 'sysctl', ['-n', 'net.netfilter.nf_conntrack_tcp_be_liberal'])).stdout.trim()).toBe('1');

    const second = await reconcile(state);
    expect(second.executed.result).toBeUndefined();
    expect(second.report).toMatchObject({ changes: [], applied: false });
    expect((await settingsHost(config).runningConntrackd(paths()))?.pid).toBe(rec!.pid);
  });

  it('a conntrackd in another namespace is never taken for ours, even with our record', async () => {
    // A host without the node's namespace (the root namespace) sees the same record but not its process.
    const other = settingsHost({ ...config, netns: undefined });
    expect(await other.runningConntrackd(paths())).toBeUndefined();
    expect(await settingsHost(config).runningConntrackd(paths())).toBeDefined();
  });

  it('restarts conntrackd when its configuration changes, and starts it again when it died', async () => {
    const state = await stateInMode('ct-sync');
    const moved = { ...state, cluster: { ...state.cluster, nat: { ...state.cluster.nat, ctSync: { port: 3790 } } } };
    const r = await reconcile(moved);
    expect(r.report.changes).toEqual(['~ file ' + paths().config, '~ conntrackd: restart (configuration changed)']);
    const rec = (await settingsHost(config).runningConntrackd(paths()))!;
    seen.push(rec);
    expect(processAlive(seen[0].pid, seen[0].startTime)).toBe(false);
    process.kill(rec.pid, 'SIGKILL');
    const again = await reconcile(moved);
    expect(again.executed.result?.settings.status).toBe('done');
    expect(again.report.changes).toEqual(['+ conntrackd: start (not running)']);
    seen.push((await settingsHost(config).runningConntrackd(paths()))!);
  });

  it('the multicast channel (more than two nodes) is a configuration conntrackd accepts', async () => {
    const state = await stateInMode('ct-sync');
    const multi = { ...state, cluster: { ...state.cluster, nat: { ...state.cluster.nat, ctSync: { multicastGroup: '225.0.0.50' } } } };
    const r = await reconcile(multi);
    expect(r.executed.result?.settings.status).toBe('done');
    expect(r.report.changes).toContain('~ conntrackd: restart (configuration changed)');
    expect(r.report.conntrackd).toMatchObject({ running: true, answering: true });
    expect(await readFile(paths().config, 'utf8')).toContain('\tMulticast {\n\t\tIPv4_address 225.0.0.50');
    seen.push((await settingsHost(config).runningConntrackd(paths()))!);
  });

  it('leaving ct-sync stops conntrackd (by its recorded PID) and resets be_liberal', async () => {
    const r = await reconcile(await stateInMode('full-nat'));
    expect(r.executed.result).toMatchObject({ nft: { status: 'done' }, settings: { status: 'done' } });
    expect(r.report.changes).toEqual(['~ sysctl net.netfilter.nf_conntrack_tcp_be_liberal: 1 -> 0', expect.stringMatching(/^- conntrackd: stop \(pid \d+: the NAT mode no longer uses conntrackd\)$/)]);
    expect(r.report.conntrackd).toBeUndefined();
    for (const p of seen) expect(processAlive(p.pid, p.startTime)).toBe(false);
  });

  it('a sysctl that cannot be written after the nft transaction: the tables are rolled back, the node is as it was', async () => {
    const rt = runtime();
    const owned = ownedTables(await stateInMode('full-nat'));
    const before = await env.nft.list(owned);
    // ct-sync adds a raw table; its settings carry one key this namespace cannot write
    // (nf_conntrack_max is read-only outside the initial namespace).
    const view = resolveNode(await stateInMode('ct-sync'), 'node1', tmp);
    const max = Number((await runIn(env.ns, 'sysctl', ['-n', 'net.netfilter.nf_conntrack_max'])).stdout.trim());
    view.settings.sysctls['net.netfilter.nf_conntrack_max'] = String(max + 1);
    delete view.settings.conntrackd;
    const plan = planNode(view, await readLiveNode(view, { nft: rt.nft, settings: rt.settings, guests: 'not here' }));
    expect(plan.nft.plan.changes.length).toBeGreaterThan(0);
    const result = await applyNodePlan(plan, { nft: rt.nft, settings: rt.settings });
    expect(result.nft).toEqual({ status: 'done' });
    expect(result.settings).toMatchObject({ status: 'failed', error: expect.stringContaining('net.netfilter.nf_conntrack_max') });
    expect(result.rollback).toEqual({ status: 'done' });
    expect(planNft(before, await env.nft.list(owned), owned).changes).toEqual([]);
  });

  it('a sysctl key that does not exist fails before anything changes', async () => {
    const rt = runtime();
    const owned = ownedTables(await stateInMode('full-nat'));
    const before = await env.nft.list(owned);
    const view = resolveNode(await stateInMode('stateless-nat'), 'node1', tmp);
    view.settings.sysctls['net.ipv4.conf.nosuchif0.accept_local'] = '1';
    const plan = planNode(view, await readLiveNode(view, { nft: rt.nft, settings: rt.settings, guests: 'not here' }));
    const result = await applyNodePlan(plan, { nft: rt.nft, settings: rt.settings });
    expect(result.precheck).toMatchObject({ status: 'failed', error: expect.stringContaining('net.ipv4.conf.nosuchif0.accept_local: no such key') });
    expect(result.nft).toEqual({ status: 'skipped' });
    expect(planNft(before, await env.nft.list(owned), owned).changes).toEqual([]);
  });
});
