// The lab with real VMs (issue 14): `lab up --guests qemu` (labStart, as the CLI), every guest a
// qemu VM booting the lab's Debian kernel + busybox initramfs, started by the agents through the
// qemu driver, tap on the node's guest bridge inside the node namespace. One lab, so the VMs boot
// once (TCG here: ~20 s each): `lab check` passes in full-nat, ct-sync and stateless-nat (switched
// through Git), each with br_netfilter off and on; stateless-nat's guest snippet is loaded by the
// real nft inside the VM; a VM moved to another node in Git is stopped on one node before the other
// starts it, and the probes follow; a VM with `migration: live` moved in Git is live-migrated by the
// agents (a held TCP connection survives, the UDP downtime is measured, the guest then holds its new
// node's gateway MAC), and one the destination refuses leaves it on its source; `lab down` leaves no qemu.
// Needs root and a built dist/.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatMode } from '../src/state/types.js';
import { labCheck, labStart, stateAt, waitForVmResponder, type Lab } from '../src/lab/lab.js';
import { linkMac } from '../src/lab/check.js';
import { configureLabGuests } from '../src/lab/mode-guests.js';
import { guestDriver } from '../src/agent/node.js';
import { loadAgentConfig } from '../src/agent/config.js';
import { resolveNode } from '../src/render/node-view.js';
import { labDown, labNamespaces, labRunDir } from '../src/lab/topology.js';
import { planLab } from '../src/lab/plan.js';
import { readNodeStatus, statusHistory } from '../src/lab/status.js';
import type { NodeStatus } from '../src/agent/report.js';
import { MAX_MIGRATION_ATTEMPTS, MIGRATION_PORTS } from '../src/reconcile/live-migration.js';
import { serialExec } from '../src/lab/guest-exec.js';
import { tcpProbe } from '../src/lab/probes.js';
import { GUEST_TABLE } from '../src/render/stateless.js';
import { identityFromCmdline } from '../src/guests/qemu.js';
import { listNamespaces, namespacePids, runIn } from '../src/netns/netns.js';
import { delay, processAlive, processCmdline, processStartTime } from '../src/proc/process.js';
import { gitCli } from './helpers/git-server.js';
import { commitAndPush, editYamlFile, pushMode, waitApplied, waitForReports } from './helpers/lab-git.js';

const STATE_DIR = path.join(import.meta.dirname, '..', 'state-example');
/** A commit converges within a few 2-s cycles; ct-sync also starts conntrackd. */
const CONVERGE_MS = 30_000;
/** A TCG VM boots in ~20 s on an idle box; CI shares two cores. */
const VM_BOOT_MS = 150_000;

describe('lab with qemu VMs: every NAT mode, br_netfilter off and on, a move through Git', () => {
  const prefix = `cgwt${process.pid}qv-`;
  let tmp: string;
  let lab: Lab;
  let clone: string;
  let upMs = 0;
  const home = { node1: ['guest1'], node2: ['guest2'] };

  const runOpts = () => ({ runRoot: tmp });
  const node = (name: string) => lab.plan.nodes.find((n) => n.name === name)!;

  /** qemu processes per node namespace: node -> [{ guest, pid, start, incoming: started as a migration destination }]. */
  type Qemu = { guest?: string; pid: number; start?: string; incoming: boolean };
  async function qemus(): Promise<Record<string, Qemu[]>> {
    const out: Record<string, Qemu[]> = {};
    for (const n of lab.plan.nodes) {
      out[n.name] = [];
      for (const pid of await namespacePids(n.ns)) {
        const cmd = processCmdline(pid) ?? [];
        // One read of the command line per process: one that exits meanwhile is not misread.
        if (cmd[0]?.endsWith('qemu-system-x86_64')) out[n.name].push({ guest: identityFromCmdline(cmd).name, pid, start: processStartTime(pid), incoming: cmd.includes('-incoming') });
      }
    }
    return out;
  }

  /** guest2's qemus by PID at each poll; `incoming`: those started as a migration destination (-incoming on the command line). */
  type Guest2Sample = { node1: number[]; node2: number[]; incoming: number[] };
  function watchGuest2(samples: Guest2Sample[]): () => Promise<void> {
    return async () => {
      const q = await qemus();
      const of = (n: string) => q[n].filter((x) => x.guest === 'guest2');
      const pids = (n: string) => of(n).map((x) => x.pid);
      samples.push({ node1: pids('node1'), node2: pids('node2'), incoming: [...of('node1'), ...of('node2')].filter((x) => x.incoming).map((x) => x.pid) });
    };
  }

  async function setBrNetfilter(on: boolean): Promise<void> {
    for (const n of lab.plan.nodes) await runIn(n.ns, 'sysctl', ['-q', '-w', `net.bridge.bridge-nf-call-iptables=${on ? 1 : 0}`]);
  }

  /** lab check's failures; `count`: how many results it must have (the same 18 as with netns guests at home). */
  async function checkFailures(count?: number): Promise<string[]> {
    const report = await labCheck(prefix, { ...runOpts(), timeoutS: 5 });
    if (count !== undefined) expect(report.results).toHaveLength(count);
    return report.results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.detail}`);
  }

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'cgw-e2e-qemu-'));
    const t0 = Date.now();
    lab = await labStart({ prefix, guests: 'qemu', stateDir: STATE_DIR, runRoot: tmp, readyTimeoutMs: 60_000, progress: (l) => console.log(`[${prefix}] ${l}`) });
    upMs = Date.now() - t0;
    clone = path.join(tmp, 'clone');
    await gitCli(['clone', '--quiet', lab.url, clone]);
  }, 400_000);

  afterAll(async () => {
    if ((await labNamespaces(prefix)).length > 0 || existsSync(labRunDir(prefix, runOpts()))) await labDown(prefix, runOpts());
    await rm(tmp, { recursive: true, force: true });
  }, 60_000);

  it('lab up: each guest is a qemu VM in its node namespace, with the state MAC, answering', async () => {
    console.log(`[${prefix}] lab up took ${upMs} ms; VM boot (qemu start -> responder answers): ${JSON.stringify(lab.vmBootMs)}`);
    expect(Object.keys(lab.vmBootMs).sort()).toEqual(['guest1', 'guest2']);
    const running = await qemus();
    expect(running.node1.map((q) => q.guest)).toEqual(['guest1']);
    expect(running.node2.map((q) => q.guest)).toEqual(['guest2']);
    for (const g of lab.state.guests) {
      const cmd = processCmdline(running[g.node][0].pid)!.join(' ');
      expect(cmd).toContain(`mac=${g.mac}`);
      expect(cmd).toContain(`-m 256`);
      expect(cmd).toMatch(/-accel tcg|-enable-kvm/);
      // No guest namespaces: the guests are VMs.
      expect((await listNamespaces()).filter((ns) => ns.startsWith(node(g.node).guestPrefix))).toEqual([]);
      // The guest's own view: its IP on eth0 (from the kernel command line), through its serial shell.
      const vm = lab.plan.guests.find((x) => x.name === g.name)!.vm!;
      const r = await serialExec(vm.serial, 'ip -o -4 addr show eth0; cat /sys/class/net/eth0/address', 30_000);
      expect(r.output).toContain(`inet ${g.ip}/24`);
      expect(r.output).toContain(g.mac.toLowerCase());
    }
  });

  const modes: NatMode[] = ['full-nat', 'ct-sync', 'stateless-nat'];
  for (const mode of modes) {
    it(`${mode}: lab check passes with br_netfilter off and on`, async () => {
      if (mode !== lab.state.cluster.nat.mode) await waitApplied(lab, await pushMode(clone, lab, mode), home, CONVERGE_MS);
      for (const on of [false, true]) {
        await setBrNetfilter(on);
        expect(await checkFailures(18), `${mode}, br_netfilter ${on ? 'on' : 'off'}`).toEqual([]);
      }
      await setBrNetfilter(false);
      // The guest-side snippet runs inside the VMs, loaded by the real nft there (lab check did it).
      const vm = lab.plan.guests[0].vm!;
      const listed = await serialExec(vm.serial, `nft list table ip ${GUEST_TABLE}`, 30_000);
      if (mode === 'stateless-nat') expect(listed.output).toMatch(/redirect to :22/);
      else expect(listed.exitCode).not.toBe(0);
    }, 180_000);
  }

  it('a VM moved in Git stops on node2 before node1 starts it; the probes follow', async () => {
    await editYamlFile(clone, 'guests/guest2.yaml', (doc) => doc.set('node', 'node1'));
    const moved = await commitAndPush(clone, 'move guest2 to node1');
    const seen = { both: 0, onNode1: 0 };
    const watch = async () => {
      const q = await qemus();
      const on1 = q.node1.some((x) => x.guest === 'guest2');
      const on2 = q.node2.some((x) => x.guest === 'guest2');
      if (on1 && on2) seen.both++;
      if (on1) seen.onNode1++;
    };
    const tookMs = await waitApplied(lab, moved, { node1: ['guest1', 'guest2'], node2: [] }, 2 * CONVERGE_MS, watch);
    console.log(`[${prefix}] move applied ${tookMs} ms after the push`);
    expect(seen.both).toBe(0);
    const q = await qemus();
    expect(q.node1.map((x) => x.guest).sort()).toEqual(['guest1', 'guest2']);
    expect(q.node2).toEqual([]);

    // From the reports: node2 reported guest2 gone at the new revision before node1 reported it running.
    const stop = (await statusHistory(lab.repo, 'node2')).find((c) => c.status.appliedRevision === moved && !c.status.guests.some((g) => g.name === 'guest2' && g.state === 'running'));
    const start = (await statusHistory(lab.repo, 'node1')).find((c) => c.status.appliedRevision === moved && c.status.guests.some((g) => g.name === 'guest2' && g.state === 'running'));
    expect(stop, 'node2 never reported guest2 stopped').toBeDefined();
    expect(start, 'node1 never reported guest2 running').toBeDefined();
    expect(Date.parse(start!.status.time)).toBeGreaterThan(Date.parse(stop!.status.time));
    const startedAt = Date.parse(JSON.parse(await readFile(path.join(path.dirname(lab.plan.guests[0].vm!.serial), 'guest2.meta.json'), 'utf8')).startedAt);
    expect(startedAt).toBeGreaterThan(Date.parse(stop!.status.time));

    // The VM boots again on node1; then the forwards reach it there, through both nodes.
    const state = { ...lab.state, guests: lab.state.guests.map((g) => (g.name === 'guest2' ? { ...g, node: 'node1' } : g)) };
    const plan = planLab(state, { prefix, labDir: lab.dir });
    const bootMs = await waitForVmResponder(plan, plan.guests.find((g) => g.name === 'guest2')!, VM_BOOT_MS);
    console.log(`[${prefix}] guest2 answering on node1 ${bootMs} ms after its qemu started`);
    // lab check first: it loads the stateless-nat snippet into the freshly booted VM, as a guest admin would.
    expect(await checkFailures()).toEqual([]);
    for (const n of lab.plan.nodes) {
      const r = await tcpProbe(lab.plan.client.ns, n.publicIP, 2202, { timeoutS: 5 });
      expect(r.reply, `${n.name}: ${r.detail}`).toMatch(/^this is guest2 OK from \S+ via tcp\/22$/);
    }
  }, 240_000);

  it('live migration through Git: the agents migrate the running VM; a held TCP connection survives, UDP every 10 ms measures the downtime, never two running copies and never none', async () => {
    // The echo forwards (VM /init: socat echo on TCP and UDP :7), entering node2; guest2 (on node1) says migration: live.
    const echo = ['apiVersion: cgw-sync/v1', 'kind: Forwards', 'forwards:'];
    for (const protocol of ['tcp', 'udp']) echo.push(`  - name: echo-${protocol}`, `    protocol: ${protocol}`, '    port: 7007', '    target: { guest: guest2, port: 7 }');
    await writeFile(path.join(clone, 'forwards', 'e2e-echo.yaml'), `${echo.join('\n')}\n`);
    await editYamlFile(clone, 'guests/guest2.yaml', (doc) => doc.set('migration', 'live'));
    const rev = await commitAndPush(clone, 'echo forwards to guest2; guest2 migrates live');
    await waitApplied(lab, rev, { node1: ['guest1', 'guest2'], node2: [] }, CONVERGE_MS);
    const state = await stateAt(lab.repo, rev, lab.dir);
    await configureLabGuests(state, planLab(state, { prefix, labDir: lab.dir })); // stateless-nat: the tagged echo ports inside the VM
    const source = (await qemus()).node1.find((q) => q.guest === 'guest2')!;

    const client = startEchoClient(lab.plan.client.ns, node('node2').publicIP, 7007);
    try {
      await client.until((s) => s.tcpEchoes > 0 && s.udpRecv > 20, 30_000);
      const before = await client.report();
      // Every poll: guest2's qemus by PID. A destination waiting for the stream has -incoming on
      // its command line; only the source runs the guest until it hands over and exits.
      const samples: Guest2Sample[] = [];
      const watch = watchGuest2(samples);
      await editYamlFile(clone, 'guests/guest2.yaml', (doc) => doc.set('node', 'node2'));
      const t0 = Date.now();
      const moved = await commitAndPush(clone, 'move guest2 to node2, live');
      const tookMs = await waitApplied(lab, moved, { node1: ['guest1'], node2: ['guest2'] }, 2 * CONVERGE_MS + 120_000, watch);
      const after = await client.until((s) => s.udpRecv > before.udpRecv + 100 && s.tcpEchoes > before.tcpEchoes + 10, 30_000);
      const udp = udpBetween(before, after);
      const reports = { node1: (await statusHistory(lab.repo, 'node1')).find((c) => c.status.appliedRevision === moved && c.status.guests.some((g) => g.name === 'guest2' && g.migration?.handedOver)) };
      const handover = reports.node1?.status.guests.find((g) => g.name === 'guest2');
      console.log(
        `[${prefix}] live migration through Git: applied on both nodes ${tookMs} ms after the push (${Date.now() - t0} ms); ${handover?.detail}; ` +
          `UDP every 10 ms from before the push until after: ${udp.sent} sent, ${udp.lost} lost = downtime ${udp.lost * 10} ms, longest gap ${after.maxGapMs} ms; ` +
          `TCP: ${after.tcpEchoes} echoes, error ${after.tcpError ?? 'none'}`,
      );
      expect(after.tcpError).toBeNull();
      expect(udp.sent).toBeGreaterThan(100);
      expect(udp.lost * 10).toBeLessThan(1_000);
      expect(handover, 'node1 never reported the handover').toMatchObject({ state: 'migrated', migration: { to: 'node2', failures: 0, handedOver: true } });
      // Never none: some qemu of guest2 existed at every poll. Never two running: a second one was
      // only ever the waiting destination; the source's PID was gone once node2's qemu ran alone.
      expect(samples.length).toBeGreaterThan(5);
      expect(samples.filter((x) => x.node1.length + x.node2.length === 0)).toEqual([]);
      expect(samples.filter((x) => x.node1.length + x.node2.length - x.incoming.length > 1)).toEqual([]);
      const q = await qemus();
      expect(q.node1.map((x) => x.guest)).toEqual(['guest1']);
      expect(processAlive(source.pid, source.start)).toBe(false);
      const dest = q.node2.find((x) => x.guest === 'guest2')!;
      expect(processCmdline(dest.pid)).toContain('-incoming'); // migrated in, not booted afresh
      expect(samples.some((x) => x.node2.includes(dest.pid) && x.node1.includes(source.pid))).toBe(true);
      // By QMP, once the agents are done: node2's qemu runs the guest, node1 has none.
      const drivers = Object.fromEntries(await Promise.all(lab.plan.nodes.map(async (n) => [n.name, guestDriver(await loadAgentConfig(lab.agents[n.name]), resolveNode(state, n.name))] as const)));
      expect((await drivers.node2.list()).find((g) => g.name === 'guest2')).toMatchObject({ state: 'running', pid: dest.pid });
      expect((await drivers.node1.list()).map((g) => g.name)).toEqual(['guest1']);
      // Its ARP entry for the gateway named node1's MAC: node2 told it its own when it arrived.
      const announced = (await statusHistory(lab.repo, 'node2')).flatMap((c) => (c.status.notes ?? []).filter((n) => n.startsWith(`gateway ${state.cluster.gatewayIP} announced to guest guest2: `)));
      expect(announced, 'node2 never announced the gateway to guest2').not.toEqual([]);
      const vm = planLab(await stateAt(lab.repo, moved, lab.dir), { prefix, labDir: lab.dir }).guests.find((g) => g.name === 'guest2')!.vm!;
      const neigh = await serialExec(vm.serial, `ip neigh show ${state.cluster.gatewayIP} dev eth0`, 30_000);
      expect(neigh.output).toContain(`lladdr ${await linkMac({ ns: node('node2').ns, dev: node('node2').guestBridge })}`);
      // It keeps its IP and default route on node2: every probe passes, its outbound leaves through
      // node2. (lab check expects the responder; the echo forwards answer with the probe itself.)
      expect((await checkFailures()).filter((f) => !/\becho-(tcp|udp)\b/.test(f))).toEqual([]);
    } finally {
      await client.stop();
    }
  }, 400_000);

  it('a live migration the destination refuses: the guest keeps running on its source, which reports each failure; after 3 attempts both stop trying; moving it back in Git settles it', async () => {
    // guest2 runs on node2 now (it migrated in). node1 refuses every migration stream: a table of
    // this test in node1's namespace resets TCP to the migration ports (not a cgw_ table: the agent leaves it alone).
    const dest = node('node1');
    const refuse = ['inet', 'labtest_refuse'];
    const source = (await qemus()).node2.find((q) => q.guest === 'guest2')!;
    await runIn(dest.ns, 'nft', ['add', 'table', ...refuse]);
    try {
      await runIn(dest.ns, 'nft', ['add', 'chain', ...refuse, 'input', '{ type filter hook input priority 0; }']);
      await runIn(dest.ns, 'nft', ['add', 'rule', ...refuse, 'input', 'tcp', 'dport', `${MIGRATION_PORTS.first}-${MIGRATION_PORTS.last}`, 'counter', 'reject', 'with', 'tcp', 'reset']);
      const client = startEchoClient(lab.plan.client.ns, node('node2').publicIP, 7007);
      try {
        await client.until((s) => s.tcpEchoes > 0 && s.udpRecv > 20, 30_000);
        const before = await client.report();
        const samples: Guest2Sample[] = [];
        await editYamlFile(clone, 'guests/guest2.yaml', (doc) => doc.set('node', 'node1'));
        const back = await commitAndPush(clone, 'move guest2 to node1, live (node1 refuses the stream)');
        const entry = (s: NodeStatus | undefined) => (s?.appliedRevision === back ? s.guests.find((g) => g.name === 'guest2') : undefined);
        // node2 gives up after the last attempt; node1 no longer listens and says why it waits.
        const gaveUpMs = await waitForReports(
          lab,
          (r) => entry(r.node2)?.migration?.failures === MAX_MIGRATION_ATTEMPTS && entry(r.node1)?.state === 'waiting' && !entry(r.node1)?.incoming,
          `both nodes giving up guest2's live migration at ${back.slice(0, 12)}`,
          2 * CONVERGE_MS + 60_000,
          watchGuest2(samples),
        );
        const after = await client.until((s) => s.udpRecv > before.udpRecv + 100 && s.tcpEchoes > before.tcpEchoes + 10, 30_000);
        const udp = udpBetween(before, after);
        const [r1, r2] = [entry(await readNodeStatus(lab.repo, 'node1')), entry(await readNodeStatus(lab.repo, 'node2'))];
        console.log(`[${prefix}] refused live migration: both gave up ${gaveUpMs} ms after the push; node2: ${r2?.detail} (${r2?.migration?.error}); node1: ${r1?.detail}; UDP meanwhile ${udp.sent} sent, ${udp.lost} lost; TCP error ${after.tcpError ?? 'none'}`);

        // The source: still runs guest2, the same qemu, and reports the failures with qemu's reason.
        expect(r2).toMatchObject({ state: 'running', migration: { to: 'node1', failures: MAX_MIGRATION_ATTEMPTS } });
        expect(r2?.migration?.handedOver).toBeUndefined();
        expect(r2?.migration?.error).toMatch(/failed.*still runs here/);
        expect(r2?.detail).toMatch(/failed 3 times/);
        const failures = (await statusHistory(lab.repo, 'node2')).filter((c) => c.status.appliedRevision === back).map((c) => entry(c.status)?.migration?.failures);
        expect(failures).toEqual(expect.arrayContaining([1, 2, 3]));
        // The destination: three listeners in turn, one per attempt, then none.
        const attempts = (await statusHistory(lab.repo, 'node1')).filter((c) => c.status.appliedRevision === back).flatMap((c) => entry(c.status)?.incoming?.attempt ?? []);
        expect([...new Set(attempts)].sort()).toEqual([0, 1, 2]);
        expect(r1?.detail).toMatch(/failed 3 times/);
        expect((await runIn(dest.ns, 'nft', ['list', 'chain', ...refuse, 'input'])).stdout).toMatch(/counter packets [1-9]/);
        // Never moved: node2's qemu ran the guest at every poll; node1 only ever had waiting destinations.
        expect(samples.length).toBeGreaterThan(5);
        expect(samples.filter((x) => !x.node2.includes(source.pid))).toEqual([]);
        expect(samples.filter((x) => x.node1.some((pid) => !x.incoming.includes(pid)))).toEqual([]);
        expect(samples.some((x) => x.node1.length > 0)).toBe(true);
        expect((await qemus()).node1.map((x) => x.guest)).toEqual(['guest1']);
        expect(processAlive(source.pid, source.start)).toBe(true);
        expect(after.tcpError).toBeNull();
        expect(udp.lost * 10).toBeLessThan(1_000);
      } finally {
        await client.stop();
      }

      // Placed back where it runs: the departure is forgotten, nothing restarts.
      await editYamlFile(clone, 'guests/guest2.yaml', (doc) => doc.set('node', 'node2'));
      const home = await commitAndPush(clone, 'guest2 stays on node2');
      await waitApplied(lab, home, { node1: ['guest1'], node2: ['guest2'] }, CONVERGE_MS);
      const settled = (await readNodeStatus(lab.repo, 'node2'))?.guests.find((g) => g.name === 'guest2');
      expect(settled?.migration).toBeUndefined();
      expect((await qemus()).node2.find((q) => q.guest === 'guest2')?.pid).toBe(source.pid);
    } finally {
      await runIn(dest.ns, 'nft', ['delete', 'table', ...refuse]);
    }
  }, 300_000);

  it('lab down stops every qemu by PID and leaves nothing', async () => {
    const before = Object.values(await qemus()).flat();
    expect(before).toHaveLength(2);
    await labDown(prefix, runOpts());
    expect(before.filter((q) => processAlive(q.pid, q.start))).toEqual([]);
    expect(await labNamespaces(prefix)).toEqual([]);
    expect(existsSync(lab.dir)).toBe(false);
  }, 60_000);
});

interface EchoStats {
  udpSent: number;
  /** Distinct datagrams answered, and 1 + the highest number answered (later ones may still be in flight). */
  udpRecv: number;
  udpUpTo: number;
  maxGapMs: number;
  tcpEchoes: number;
  tcpError: string | null;
}

/**
 * The datagrams sent between two readings of the echo client whose answer is due (up to the
 * highest number answered by the later one), and how many of them got none: each is 10 ms the
 * service did not answer.
 */
function udpBetween(before: EchoStats, after: EchoStats): { sent: number; lost: number } {
  const sent = after.udpUpTo - before.udpUpTo;
  return { sent, lost: sent - (after.udpRecv - before.udpRecv) };
}

/**
 * A client in namespace ns that holds one TCP connection to host:port (a line every 100 ms, echoed)
 * and sends a numbered UDP datagram every 10 ms to the same port, counting the distinct numbers
 * echoed back. Each line on its stdin asks for the counters as one JSON line.
 */
function startEchoClient(ns: string, host: string, port: number) {
  const program = String.raw`
    const net = require('node:net'), dgram = require('node:dgram');
    const [host, port] = process.argv.slice(1);
    const st = { udpSent: 0, udpRecv: 0, udpUpTo: 0, maxGapMs: 0, tcpEchoes: 0, tcpError: null };
    const seen = new Set(); let last = 0;
    const u = dgram.createSocket('udp4');
    u.on('message', (m) => {
      for (const x of String(m).match(/\d+/g) || []) if (!seen.has(x)) { seen.add(x); st.udpRecv++; st.udpUpTo = Math.max(st.udpUpTo, Number(x) + 1); }
      const now = Date.now(); if (last) st.maxGapMs = Math.max(st.maxGapMs, now - last); last = now;
    });
    u.connect(Number(port), host, () => setInterval(() => u.send('x' + st.udpSent++ + ' '), 10));
    const t = net.connect(Number(port), host);
    let buf = '';
    t.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\n')) >= 0) { buf = buf.slice(i + 1); st.tcpEchoes++; } });
    t.on('error', (e) => (st.tcpError = e.message));
    t.on('close', () => (st.tcpError = st.tcpError || 'closed'));
    t.on('connect', () => setInterval(() => t.write('ping\n'), 100));
    require('node:readline').createInterface({ input: process.stdin }).on('line', () => process.stdout.write(JSON.stringify(st) + '\n'));
    process.stdin.on('end', () => process.exit(0));
  `;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', program, host, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let pending: ((s: EchoStats) => void) | undefined;
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    out += d;
    const i = out.indexOf('\n');
    if (i >= 0) {
      const line = out.slice(0, i);
      out = out.slice(i + 1);
      pending?.(JSON.parse(line) as EchoStats);
    }
  });
  const report = () =>
    new Promise<EchoStats>((resolve) => {
      pending = resolve;
      child.stdin.write('?\n');
    });
  return {
    report,
    /** Poll the counters until `ok` holds (bounded). */
    async until(ok: (s: EchoStats) => boolean, timeoutMs: number): Promise<EchoStats> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const s = await report();
        if (ok(s)) return s;
        if (Date.now() > deadline) throw new Error(`echo client: condition not reached within ${timeoutMs} ms: ${JSON.stringify(s)}`);
        await delay(200);
      }
    },
    async stop(): Promise<void> {
      child.stdin.end();
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
    },
  };
}
