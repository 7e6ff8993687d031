// The agent's settings phase (src/agent/settings-phase.ts) against a real namespace: a node
// namespace with its guest bridge and node IP, the agent's stateDir in a temp folder, a real
// conntrackd started and stopped by the phase. Namespace cgwt-setph-<pid>-<rand>, removed in afterAll.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentConfig } from '../src/agent/config.js';
import { afterReconcile, settingsHost, settingsPhase } from '../src/agent/settings-phase.js';
import { addAddress, addBridge, runIn } from '../src/netns/netns.js';
import { processAlive } from '../src/proc/process.js';
import { conntrackdPaths, settingsDir } from '../src/settings/model.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';
import { STATE_DIR, stateInMode } from './helpers/modes-lab.js';

const BIN = join(import.meta.dirname, '..', 'dist', 'cli', 'bin.js');

describe('agent settings phase', () => {
  let env: NftNamespace;
  let config: AgentConfig;
  let tmp: string;
  const seen: Array<{ pid: number; startTime: string }> = [];

  beforeAll(async () => {
    env = await nftNamespace('setph');
    await addBridge(env.ns, 'guestbr0');
    await addAddress(env.ns, 'guestbr0', '10.5.5.251/24');
    tmp = await mkdtemp(join(tmpdir(), 'cgw-setph-'));
    config = { node: 'node1', stateDir: tmp, netns: env.ns } as AgentConfig;
  });
  afterAll(async () => {
    try {
      for (const p of seen) expect(processAlive(p.pid, p.startTime), `conntrackd ${p.pid} left running`).toBe(false);
    } finally {
      await env?.destroy();
      if (tmp) await rm(tmp, { recursive: true, force: true });
    }
  });

  const paths = () => conntrackdPaths(settingsDir(tmp));

  it('`cgw-sync plan` shows the settings beside the nft changes, text and JSON (built CLI, in the namespace)', async () => {
    const dir = join(tmp, 'state');
    await cp(STATE_DIR, dir, { recursive: true });
    const cluster = join(dir, 'cluster.yaml');
    await writeFile(cluster, (await readFile(cluster, 'utf8')).replace('mode: full-nat', 'mode: ct-sync'));
    const cli = (args: string[]) => execa('ip', ['netns', 'exec', env.ns, process.execPath, BIN, ...args], { reject: false });
    const text = await cli(['plan', '--state', dir, '--node', 'node1']);
    expect(text.exitCode, String(text.stderr)).toBe(2);
    expect(text.stdout).toContain('+ table ip cgw_raw will be created');
    expect(text.stdout).toMatch(/^settings:\n(.*\n)*  ~ sysctl net\.netfilter\.nf_conntrack_tcp_be_liberal: 0 -> 1$/m);
    expect(text.stdout).toContain('  + file /var/lib/cgw-sync/conntrackd/conntrackd.conf');
    expect(text.stdout).toContain('    +\t\tIPv4_Destination_Address 10.5.5.252');
    expect(text.stdout).toContain('  + conntrackd: start (not running)');
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
    const first = await settingsPhase(config, state);
    expect(first.error).toBeUndefined();
    expect(first.changed).toBe(true);
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

    const second = await settingsPhase(config, state);
    expect(second).toMatchObject({ changed: false, report: { changes: [], applied: false } });
    expect((await settingsHost(config).runningConntrackd(paths()))?.pid).toBe(rec!.pid);
  });

  it('restarts conntrackd when its configuration changes, and starts it again when it died', async () => {
    const state = await stateInMode('ct-sync');
    const moved = { ...state, cluster: { ...state.cluster, nat: { ...state.cluster.nat, ctSync: { port: 3790 } } } };
    const r = await settingsPhase(config, moved);
    expect(r.report.changes).toEqual(['~ file ' + paths().config, '~ conntrackd: restart (configuration changed)']);
    const rec = (await settingsHost(config).runningConntrackd(paths()))!;
    seen.push(rec);
    expect(processAlive(seen[0].pid, seen[0].startTime)).toBe(false);
    process.kill(rec.pid, 'SIGKILL');
    const outcome = await afterReconcile(config, moved, 'converged', []);
    expect(outcome.outcome).toBe('applied');
    expect(outcome.report?.changes).toEqual(['+ conntrackd: start (not running)']);
    seen.push((await settingsHost(config).runningConntrackd(paths()))!);
  });

  it('the multicast channel (more than two nodes) is a configuration conntrackd accepts', async () => {
    const state = await stateInMode('ct-sync');
    const multi = { ...state, cluster: { ...state.cluster, nat: { ...state.cluster.nat, ctSync: { multicastGroup: '225.0.0.50' } } } };
    const r = await settingsPhase(config, multi);
    expect(r.error).toBeUndefined();
    expect(r.report.changes).toContain('~ conntrackd: restart (configuration changed)');
    expect(r.report.conntrackd).toMatchObject({ running: true, answering: true });
    expect(await readFile(paths().config, 'utf8')).toContain('\tMulticast {\n\t\tIPv4_address 225.0.0.50');
    seen.push((await settingsHost(config).runningConntrackd(paths()))!);
  });

  it('leaving ct-sync stops conntrackd (by its recorded PID) and resets be_liberal', async () => {
    const errors: string[] = [];
    const r = await afterReconcile(config, await stateInMode('full-nat'), 'converged', errors);
    expect(errors).toEqual([]);
    expect(r.outcome).toBe('applied');
    expect(r.report?.changes).toEqual(['~ sysctl net.netfilter.nf_conntrack_tcp_be_liberal: 1 -> 0', expect.stringMatching(/^- conntrackd: stop \(pid \d+: the NAT mode no longer uses conntrackd\)$/)]);
    expect(r.report?.conntrackd).toBeUndefined();
    for (const p of seen) expect(processAlive(p.pid, p.startTime)).toBe(false);
    // A vetoed or failed reconcile changes nothing.
    expect(await afterReconcile(config, await stateInMode('ct-sync'), 'vetoed', [])).toEqual({ outcome: 'vetoed' });
    expect(await settingsHost(config).runningConntrackd(paths())).toBeUndefined();
  });
});
