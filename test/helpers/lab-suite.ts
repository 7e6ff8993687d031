// The end-to-end lab suite (issue 5), shared by test/e2e-lab-brnf-off.test.ts and
// e2e-lab-brnf-on.test.ts: `lab up` through the same function the CLI uses (labStart: real
// namespaces, a real Git smart-HTTP server on 127.0.0.1, the agents as real `node
// dist/cli/bin.js run` child processes acting inside the node namespaces), then everything from
// the client's point of view: lab check, convergence from Git, drift, the negative control,
// guest migration, and `lab down` leaving nothing.
//
// Changes go in the way a person would make them: a git CLI clone over HTTP, commit, push.
// Every wait polls a condition with a deadline; every probe has a timeout of seconds.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { labCheck, labRestart, labStart, LAB_SCHEDULE, type Lab } from '../../src/lab/lab.js';
import { labDown, labNamespaces, labRunDir, waitForGuestLinks, waitForResponder } from '../../src/lab/topology.js';
import { statusHistory, type StatusCommit } from '../../src/lab/status.js';
import { readLabRecord } from '../../src/lab/processes.js';
import { httpProbe, tcpProbe, udpProbe, type ProbeResult } from '../../src/lab/probes.js';
import { listNamespaces, namespacePids, runIn, runUnchecked } from '../../src/netns/netns.js';
import { delay, processAlive, processCmdline, processStartTime, terminate, waitUntil } from '../../src/proc/process.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { DEFAULT_FULL_READ_SECONDS } from '../../src/agent/watch.js';
import { gitCli } from './git-server.js';
import { waitApplied as waitAppliedIn } from './lab-git.js';

const STATE_DIR = path.join(import.meta.dirname, '..', '..', 'state-example');
/** The agents' schedule (LAB_SCHEDULE: every 2 s) and the margin a cycle gets on a busy CI box. */
const INTERVAL_MS = 2_000;
const MARGIN_MS = 6_000;
/** Probes that must fail wait this long (seconds) before they count as failed. */
const SHORT_PROBE_S = 2;

export interface LabSuiteOptions {
  brNetfilter: boolean;
  /** Unique per test file (e2e-topology uses a, b): part of the namespace prefix. */
  tag: string;
}

export function labSuite({ brNetfilter, tag }: LabSuiteOptions): void {
  describe(`lab up/check/down with agents, full-nat, br_netfilter ${brNetfilter ? 'on' : 'off'}`, () => {
    const prefix = `cgwt${process.pid}${tag}-`;
    let tmp: string;
    let lab: Lab;
    let clone: string;
    let upMs = 0;

    const node = (name: string) => lab.plan.nodes.find((n) => n.name === name)!;
    const client = () => lab.plan.client.ns;
    const runOpts = () => ({ runRoot: tmp });

    /** Write (or delete, with null) files in the clone, commit, push; the new revision. */
    async function push(message: string, files: Record<string, string | null>): Promise<string> {
      for (const [file, text] of Object.entries(files)) {
        if (text === null) await unlink(path.join(clone, file));
        else await writeFile(path.join(clone, file), text);
      }
      await gitCli(['add', '--all', '.'], clone);
      await gitCli(['-c', 'user.name=lab test', '-c', 'user.email=test@example.org', 'commit', '--quiet', '-m', message], clone);
      await gitCli(['push', '--quiet', 'origin', 'HEAD:main'], clone);
      return gitCli(['rev-parse', 'HEAD'], clone);
    }

    async function editYaml(file: string, change: (doc: ReturnType<typeof parseDocument>) => void): Promise<string> {
      const doc = parseDocument(await readFile(path.join(clone, file), 'utf8'));
      change(doc);
      return doc.toString();
    }

    /** Wait until every node applied `revision` with `placement` (helpers/lab-git.ts); the time it took. */
    const waitApplied = (revision: string, placement: Record<string, string[]>, timeoutMs: number, onPoll?: () => Promise<void>) =>
      waitAppliedIn(lab, revision, placement, timeoutMs, onPoll);

    const homePlacement = { node1: ['guest1'], node2: ['guest2'] };

    async function natTable(nodeName: string): Promise<string> {
      return (await runIn(node(nodeName).ns, 'nft', ['list', 'table', 'ip', lab.state.cluster.tables.nat])).stdout;
    }

    function failures(results: ProbeResult[]): string[] {
      return results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.detail}`);
    }

    beforeAll(async () => {
      tmp = await mkdtemp(path.join(tmpdir(), 'cgw-e2e-lab-'));
      const t0 = Date.now();
      lab = await labStart({ prefix, brNetfilter, stateDir: STATE_DIR, runRoot: tmp, readyTimeoutMs: 45_000 });
      upMs = Date.now() - t0;
      clone = path.join(tmp, 'clone');
      await gitCli(['clone', '--quiet', lab.url, clone]);
    }, 90_000);

    afterAll(async () => {
      // Safety net when a test failed before the `lab down` test ran.
      if ((await labNamespaces(prefix)).length > 0 || existsSync(labRunDir(prefix, runOpts()))) await labDown(prefix, runOpts());
      await rm(tmp, { recursive: true, force: true });
    }, 60_000);

    it('lab up: agents are real `cgw-sync run` processes, nodes as asked, and lab check passes', async () => {
      console.log(`[${prefix}] lab up took ${upMs} ms`);
      const record = (await readLabRecord(lab.dir))!;
      const agents = record.processes.filter((p) => p.name.startsWith('agent'));
      expect(agents.map((p) => p.name).sort()).toEqual(['agent node1', 'agent node2']);
      for (const a of agents) {
        expect(processAlive(a.pid, a.start)).toBe(true);
        const cmd = processCmdline(a.pid)!;
        expect(cmd.slice(1, 3)).toEqual([path.join(import.meta.dirname, '..', '..', 'dist', 'cli', 'bin.js'), 'run']);
        const config = await loadAgentConfig(cmd[4]);
        expect(config.netns).toBe(node(config.node).ns);
        expect(config.schedule).toEqual({ cron: LAB_SCHEDULE, jitterSeconds: 0, fullReadSeconds: DEFAULT_FULL_READ_SECONDS });
        expect(config.status.signingKey).toBe(path.join(path.dirname(cmd[4]), 'status.key'));
      }
      // The lab runs signed: every node has its statusKey, unsigned reports are never believed,
      // and each status branch's tip carries its node's signature.
      expect(lab.state.cluster.statusSignatures).toBe('required');
      expect(lab.state.nodes.every((n) => n.statusKey?.startsWith('-----BEGIN PGP PUBLIC KEY BLOCK-----'))).toBe(true);
      for (const n of lab.plan.nodes) expect(await gitCli(['--git-dir', lab.repo, 'cat-file', '-p', `refs/heads/status/${n.name}`])).toMatch(/^gpgsig -----BEGIN PGP SIGNATURE-----$/m);
      for (const n of lab.plan.nodes) {
        const r = await runIn(n.ns, 'sysctl', ['-n', 'net.bridge.bridge-nf-call-iptables']);
        expect(r.stdout.trim()).toBe(brNetfilter ? '1' : '0');
      }
      const report = await labCheck(prefix, runOpts());
      expect(report.revision).toBe(lab.revision);
      // 2 node lines + 2 web + 4 ssh/ntp forwards on each of 2 nodes + outbound and ARP per guest.
      // ... + 2 reply paths (one per entering node with a guest on the other node; src/lab/reply-path.ts).
      expect(report.results).toHaveLength(2 + 2 + 8 + 2 + 2 + 2);
      expect(failures(report.results)).toEqual([]);
    });

    it('a forward committed to Git is applied by both nodes within one interval, recorded, and removed again', async () => {
      const file = 'forwards/e2e-extra.yaml';
      const forward = ['apiVersion: cgw-sync/v1', 'kind: Forwards', 'forwards:', '  - name: e2e-extra', '    protocol: tcp', '    port: 8080', '    target: { guest: guest1, port: 80 }', ''].join('\n');
      for (const n of lab.plan.nodes) expect((await httpProbe(client(), n.publicIP, 8080, { timeoutS: SHORT_PROBE_S })).ok).toBe(false);

      const added = await push('add forward e2e-extra', { [file]: forward });
      const tookMs = await waitApplied(added, homePlacement, INTERVAL_MS + MARGIN_MS);
      console.log(`[${prefix}] new forward applied by both nodes ${tookMs} ms after the push`);
      for (const n of lab.plan.nodes) {
        const r = await httpProbe(client(), n.publicIP, 8080);
        expect(r.reply, r.detail).toBe(`this is guest1 OK from ${n.nodeIP} via http/80`);
        expect(await natTable(n.name)).toMatch(/\b8080 : 10\.5\.5\.201 \. 80\b/);
        const applied = (await statusHistory(lab.repo, n.name)).find((c) => c.status.appliedRevision === added && c.status.outcome === 'applied');
        expect(applied, `${n.name}: no "applied" report for ${added}`).toBeDefined();
        expect(applied!.status.plan?.tables.flatMap((t) => t.maps.flatMap((m) => m.add))).toContainEqual(expect.stringMatching(/^8080 : /));
      }

      const removed = await push('remove forward e2e-extra', { [file]: null });
      await waitApplied(removed, homePlacement, INTERVAL_MS + MARGIN_MS);
      for (const n of lab.plan.nodes) {
        const r = await httpProbe(client(), n.publicIP, 8080, { timeoutS: SHORT_PROBE_S });
        expect(r.ok, r.detail).toBe(false);
        expect(await natTable(n.name)).not.toMatch(/\b8080 :/);
      }
    });

    it('a rule deleted by hand on node1 is restored by the next cycle and reported as drift', async () => {
      const n1 = node('node1');
      const listing = (await runIn(n1.ns, 'nft', ['-a', 'list', 'chain', 'ip', lab.state.cluster.tables.nat, 'postrouting'])).stdout;
      // The forward SNAT: without it, flows entering node1 for guest2 (on node2) break.
      const line = listing.split('\n').find((l) => l.includes(`snat to ${n1.nodeIP}`))!;
      expect(line, listing).toBeDefined();
      const handle = /# handle (\d+)/.exec(line)![1];
      const before = (await statusHistory(lab.repo, 'node1')).length;
      await runIn(n1.ns, 'nft', ['delete', 'rule', 'ip', lab.state.cluster.tables.nat, 'postrouting', 'handle', handle]);
      expect(await natTable('node1')).not.toContain(`snat to ${n1.nodeIP}`);

      let drift: StatusCommit | undefined;
      const t0 = Date.now();
      while (!drift) {
        expect(Date.now() - t0, 'no drift report from node1').toBeLessThan(INTERVAL_MS + MARGIN_MS);
        await delay(100);
        drift = (await statusHistory(lab.repo, 'node1')).slice(before).find((c) => c.status.drift.items.some((d) => d.kind === 'rules-changed'));
      }
      console.log(`[${prefix}] drift corrected and reported ${Date.now() - t0} ms after the deletion`);
      expect(drift.status.drift.corrected).toBe(true);
      expect(drift.subject).toContain('drift corrected: rules-changed');
      expect(await natTable('node1')).toContain(`snat to ${n1.nodeIP}`);
      const r = await tcpProbe(client(), n1.publicIP, 2202);
      expect(r.reply, r.detail).toBe(`this is guest2 OK from ${n1.nodeIP} via tcp/22`);
    });

    it('lab restart git: back on the same port; the agents see the outage, then apply a new commit', async () => {
      const record = (await readLabRecord(lab.dir))!;
      const server = record.processes.find((p) => p.name === 'git-server')!;
      const agents = record.processes.filter((p) => p.name.startsWith('agent'));
      const stoppedAt = Date.now();
      await terminate(server.pid, server.start, 2_000);
      // Each agent logs a cycle that found the source unavailable.
      const sawOutage = async (log: string) =>
        (await readFile(log, 'utf8'))
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as { time?: string; source?: string })
          .some((l) => l.source === 'unavailable' && Date.parse(l.time ?? '') >= stoppedAt);
      const noticed = await waitUntil(async () => (await Promise.all(agents.map((a) => sawOutage(a.log)))).every(Boolean), INTERVAL_MS + MARGIN_MS, 200);
      expect(noticed, 'an agent never reported the Git outage in its log').toBe(true);

      expect(await labRestart(prefix, 'git', runOpts())).toBe(lab.url);
      const restarted = (await readLabRecord(lab.dir))!.processes.filter((p) => p.name === 'git-server');
      expect(restarted).toHaveLength(1);
      expect(restarted[0].pid).not.toBe(server.pid);
      await gitCli(['-c', 'user.name=lab test', '-c', 'user.email=test@example.org', 'commit', '--quiet', '--allow-empty', '-m', 'after the Git server restart'], clone);
      await gitCli(['push', '--quiet', 'origin', 'HEAD:main'], clone);
      const tookMs = await waitApplied(await gitCli(['rev-parse', 'HEAD'], clone), homePlacement, 2 * INTERVAL_MS + MARGIN_MS);
      console.log(`[${prefix}] after the Git server restart both nodes applied a new commit within ${tookMs} ms`);
    });

    it('negative control: without the forward SNAT only same-node flows work; reverting restores all', async () => {
      const cluster = await editYaml('cluster.yaml', (doc) => doc.setIn(['nat', 'forwardSnat'], false));
      const off = await push('negative control: nat.forwardSnat false', { 'cluster.yaml': cluster });
      await waitApplied(off, homePlacement, INTERVAL_MS + MARGIN_MS);
      const [n1, n2] = [node('node1'), node('node2')];
      const cases = [
        { via: n1, port: 2201, same: true }, // guest1 lives on node1
        { via: n2, port: 2201, same: false },
        { via: n2, port: 2202, same: true }, // guest2 lives on node2
        { via: n1, port: 2202, same: false },
      ];
      const results = await Promise.all(cases.map((c) => tcpProbe(client(), c.via.publicIP, c.port, { timeoutS: SHORT_PROBE_S })));
      for (const [i, c] of cases.entries()) expect(results[i].ok, `tcp ${c.via.name}:${c.port}: ${results[i].detail}`).toBe(c.same);
      // lab check tells the same story: exactly the cross-node forwards fail (web, ssh, ntp).
      const report = await labCheck(prefix, { ...runOpts(), timeoutS: SHORT_PROBE_S });
      const crossNode = [
        'web-node1: tcp 192.168.122.11:80 (node1) -> guest2:80',
        'web-node2: tcp 192.168.122.12:80 (node2) -> guest1:80',
        'ssh-guest1: tcp 192.168.122.12:2201 (node2) -> guest1:22',
        'ssh-guest2: tcp 192.168.122.11:2202 (node1) -> guest2:22',
        'ntp-guest1: udp 192.168.122.12:1231 (node2) -> guest1:123',
        'ntp-guest2: udp 192.168.122.11:1232 (node1) -> guest2:123',
      ];
      expect(report.results.filter((r) => !r.ok).map((r) => r.name).sort()).toEqual(crossNode.sort());

      const restored = await push('revert the negative control', { 'cluster.yaml': await editYaml('cluster.yaml', (doc) => doc.setIn(['nat', 'forwardSnat'], true)) });
      await waitApplied(restored, homePlacement, INTERVAL_MS + MARGIN_MS);
      expect(failures((await labCheck(prefix, runOpts())).results)).toEqual([]);
    });

    it('guest migration: node1 starts guest2 only after node2 reports it stopped; traffic follows', async () => {
      const [ns1, ns2] = [`${node('node1').guestPrefix}guest2`, `${node('node2').guestPrefix}guest2`];
      const moved = await push('move guest2 to node1', { 'guests/guest2.yaml': await editYaml('guests/guest2.yaml', (doc) => doc.set('node', 'node1')) });
      // During the transition guest2 must never run on both nodes at once.
      const seen = { both: 0, polls: 0, onNode1: 0 };
      const watch = async () => {
        const names = await listNamespaces();
        seen.polls++;
        if (names.includes(ns1) && names.includes(ns2)) seen.both++;
        if (names.includes(ns1)) seen.onNode1++;
      };
      const tookMs = await waitApplied(moved, { node1: ['guest1', 'guest2'], node2: [] }, 2 * INTERVAL_MS + 2 * MARGIN_MS, watch);
      console.log(`[${prefix}] migration done ${tookMs} ms after the push (${seen.polls} polls)`);
      expect(seen.both).toBe(0);
      expect(seen.onNode1).toBeGreaterThan(0);

      // From the reports: node2 said "guest2 stopped at the new revision" before node1 started it.
      const h2 = await statusHistory(lab.repo, 'node2');
      const stopReport = h2.find((c) => c.status.appliedRevision === moved && !c.status.guests.some((g) => g.name === 'guest2' && g.state === 'running'));
      expect(stopReport, 'node2 never reported guest2 stopped').toBeDefined();
      const h1 = await statusHistory(lab.repo, 'node1');
      const atMove = h1.filter((c) => c.status.appliedRevision === moved);
      const startReport = atMove.find((c) => c.status.guests.some((g) => g.name === 'guest2' && g.state === 'running'));
      expect(startReport, 'node1 never reported guest2 running').toBeDefined();
      const waits = atMove.filter((c) => c.status.guests.some((g) => g.name === 'guest2' && g.state === 'waiting'));
      console.log(`[${prefix}] node1 reported guest2 waiting ${waits.length} time(s) before starting it`);
      // The netns driver's own record of when it started guest2 on node1.
      const config = await loadAgentConfig(lab.agents.node1);
      const meta = JSON.parse(await readFile(path.join(config.guests.runDir, 'netns', node('node1').ns, 'guest2.meta.json'), 'utf8')) as { startedAt: string };
      expect(Date.parse(meta.startedAt)).toBeGreaterThan(Date.parse(stopReport!.status.time));
      expect(Date.parse(startReport!.status.time)).toBeGreaterThan(Date.parse(stopReport!.status.time));

      // The agent reports guest2 running once it is started; probes wait until it can answer.
      await waitForGuestLinks(lab.plan, { ...lab.plan.guests.find((g) => g.name === 'guest2')!, node: 'node1', ns: ns1 });
      await waitForResponder(ns1, 'guest2 on node1');
      // Forwards follow the guest: tcp/2202 answers from guest2, now on node1, via both nodes.
      for (const n of lab.plan.nodes) {
        const r = await tcpProbe(client(), n.publicIP, 2202);
        expect(r.reply, `${n.name}: ${r.detail}`).toBe(`this is guest2 OK from ${n.nodeIP} via tcp/22`);
      }
      const u = await udpProbe(client(), node('node2').publicIP, 1232);
      expect(u.reply, u.detail).toBe(`this is guest2 OK from ${node('node2').nodeIP} via udp/123`);
      // And lab check, with expectations from the new state (guest2's namespace, ARP, outbound).
      const report = await labCheck(prefix, runOpts());
      expect(failures(report.results)).toEqual([]);
      expect(report.results.map((r) => r.name)).toContain('outbound: guest2 (on node1) -> client 192.168.122.100:22');
    }, 60_000);

    it('lab down removes every namespace, process and the runtime directory', async () => {
      const record = (await readLabRecord(lab.dir))!;
      const procs = record.processes.map((p) => ({ pid: p.pid, start: p.start as string | undefined }));
      for (const ns of await labNamespaces(prefix)) {
        for (const pid of await namespacePids(ns)) procs.push({ pid, start: processStartTime(pid) });
      }
      // git server + 2 agents + the client's and the 2 guests' responders.
      expect(procs.length).toBeGreaterThanOrEqual(6);
      const removed = await labDown(prefix, runOpts());
      expect(removed).toContain(`${prefix}node1.guest2`);
      expect(await labNamespaces(prefix)).toEqual([]);
      expect(procs.filter((p) => processAlive(p.pid, p.start))).toEqual([]);
      expect(existsSync(lab.dir)).toBe(false);
    }, 60_000);
  });
}

/**
 * `lab down` after a crash: the real CLI's `lab up` is killed (SIGKILL) once its agents run, a
 * second `lab up` refuses to build over the remains, and `lab down` removes all of it: the
 * recorded processes, the namespaces and the runtime directory (the CLI's default place).
 */
export function labCrashSuite(tag: string): void {
  describe('lab down after `lab up` was killed', () => {
    const prefix = `cgwt${process.pid}${tag}-`;
    const cli = path.join(import.meta.dirname, '..', '..', 'dist', 'cli', 'bin.js');
    const dir = labRunDir(prefix);

    afterAll(async () => {
      if ((await labNamespaces(prefix)).length > 0 || existsSync(dir)) await labDown(prefix);
    }, 60_000);

    it('removes exactly what the killed `lab up` made', async () => {
      const up = spawn(process.execPath, [cli, 'lab', 'up', '--prefix', prefix], { stdio: 'ignore' });
      const exited = new Promise<number | null>((resolve) => up.on('exit', (code) => resolve(code)));
      // Kill it once both agents are recorded (and so are running), before it reports success.
      const agentsUp = async () => ((await readLabRecord(dir).catch(() => undefined))?.processes ?? []).filter((p) => p.name.startsWith('agent')).length === 2;
      const t0 = Date.now();
      while (!(await agentsUp())) {
        expect(Date.now() - t0, '`lab up` never started its agents').toBeLessThan(30_000);
        await delay(50);
      }
      up.kill('SIGKILL');
      expect(await exited).toBe(null);
      const record = (await readLabRecord(dir))!;
      expect(record.processes.filter((p) => processAlive(p.pid, p.start)).map((p) => p.name).sort()).toEqual(['agent node1', 'agent node2', 'git-server']);

      // A second `lab up` refuses and says what to do.
      const again = await runUnchecked(process.execPath, [cli, 'lab', 'up', '--prefix', prefix]);
      expect(again.exitCode).toBe(1);
      expect(again.stderr).toContain(`lab ${prefix} already exists`);
      expect(again.stderr).toContain(`cgw-sync lab down --prefix ${prefix}`);

      // `lab restart git` from the CLI: the same URL, a new recorded process that `down` stops too.
      const restart = await runUnchecked(process.execPath, [cli, 'lab', 'restart', 'git', '--prefix', prefix]);
      expect(restart.exitCode, restart.stderr).toBe(0);
      expect(restart.stdout).toContain(`the Git server listens again at ${record.url}`);
      const after = (await readLabRecord(dir))!;

      const procs = [...record.processes, ...after.processes].map((p) => ({ pid: p.pid, start: p.start as string | undefined }));
      for (const ns of await labNamespaces(prefix)) {
        for (const pid of await namespacePids(ns)) procs.push({ pid, start: processStartTime(pid) });
      }
      const down = await runUnchecked(process.execPath, [cli, 'lab', 'down', '--prefix', prefix]);
      expect(down.exitCode, down.stderr).toBe(0);
      expect(down.stdout).toContain(`lab ${prefix} removed: ${prefix}client`);
      expect(await labNamespaces(prefix)).toEqual([]);
      expect(procs.filter((p) => processAlive(p.pid, p.start))).toEqual([]);
      expect(existsSync(dir)).toBe(false);
    }, 60_000);
  });
}
