// `cgw-sync verify` on hostile states: it runs as root on a pull request's state, so what the
// state names must stay inside the namespaces verify makes. Interface names of the host and
// boot paths to its secrets are contained (the run still proves the forwards); what the lab
// cannot build is refused before anything exists; Ctrl-C removes exactly what was made.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { loadState } from '../src/state/load.js';
import type { ClusterState } from '../src/state/types.js';
import { containForVerify, VERIFY_LIMITS } from '../src/verify/contain.js';
import { waitUntil } from '../src/proc/process.js';
import { EXAMPLE_DIR, scratchDir } from './helpers/hostile-state.js';
import { editedRepo, hostNetwork, namespacesWith, startVerify } from './helpers/verify-run.js';
import { startGitFixture } from './helpers/git-server.js';
import { mainTip, stateExampleFiles } from './helpers/agent-fixture.js';

let scratch: Awaited<ReturnType<typeof scratchDir>>;
let example: ClusterState;

beforeAll(async () => {
  scratch = await scratchDir(`verify-hostile-${process.pid}`);
  example = (await loadState(EXAMPLE_DIR)).state!;
});
afterAll(async () => {
  await scratch?.remove();
});

describe('verify on hostile states', () => {
  it("host interface names, boot paths to the host's secrets and a guest command: contained, the forwards still proven", async () => {
    const marker = path.join(scratch.dir, 'the-guest-command-ran');
    const repo = await editedRepo(scratch.dir, [
      // The host's own link names, on a node: they exist only inside the node's namespace.
      ['nodes/node1.yaml', 'interface: xenbr0', 'interface: eth0'],
      ['nodes/node1.yaml', 'trunks: [eth1.100, eth2.100]', 'trunks: [ifb0, eth2.100]'],
      // Boot paths to the host's disk and secrets, and a command: never read, never run.
      ['guests/guest1.yaml', 'disk: /dev/vg0/guest1', 'disk: /dev/sda'],
      ['guests/guest1.yaml', 'kernel: /var/lib/cgw-sync/images/vmlinuz', 'kernel: /etc/shadow'],
      ['guests/guest1.yaml', 'restartOnChange: false', `restartOnChange: false\nnetns:\n  command: [/bin/touch, ${marker}]`],
    ]);
    const before = await hostNetwork();
    const v = startVerify(['--rev', 'main', '--state', repo]);
    // While it runs, the node's links are in its namespace (the host's eth0 is untouched).
    await waitUntil(async () => (await namespacesWith(`${v.prefix}node1`)).length > 0 || v.child.exitCode !== null, 60_000, 100);
    const r = await v.result;
    expect(r.code, `${r.out}\n${r.err}`).toBe(0);
    expect(r.out).toMatch(/^### cgw-sync verify `[0-9a-f]{12}`: passed$/m);
    expect(r.out).toContain('> boot paths and commands of guest1, guest2 were not used: every guest is a netns guest running the lab responder');
    expect(existsSync(marker)).toBe(false);
    expect(await hostNetwork()).toEqual(before);
    expect(await namespacesWith(v.prefix)).toEqual([]);
  }, 150_000);

  it('an interface name the lab uses itself is refused before anything is made: exit 1, the reason in the Markdown', async () => {
    const repo = await editedRepo(scratch.dir, [['nodes/node1.yaml', 'interface: xenbr0', 'interface: pub0']]);
    const before = await hostNetwork();
    const v = startVerify(['--rev', 'main', '--state', repo]);
    const r = await v.result;
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^### cgw-sync verify `[0-9a-f]{12}`: NOT RUN: verify cannot run this state$/m);
    expect(r.out).toContain('- node node1: interface name pub0 is used twice (the lab itself uses pub0)');
    expect(r.err).not.toContain(`lab ${v.prefix}`); // never reached the build
    expect(await hostNetwork()).toEqual(before);
    expect(await namespacesWith(v.prefix)).toEqual([]);
  }, 60_000);

  it('the repository by URL (a real Git server): fetched into its scratch folder, refused there the same way', async () => {
    const files = await stateExampleFiles();
    const fx = await startGitFixture({ files: { ...files, 'nodes/node1.yaml': files['nodes/node1.yaml']!.replace('interface: xenbr0', 'interface: pub0') } });
    try {
      const v = startVerify(['--rev', 'main', '--state', fx.url]);
      const r = await v.result;
      expect(r.code).toBe(1);
      expect(r.out).toMatch(new RegExp(`^### cgw-sync verify \`${(await mainTip(fx)).slice(0, 12)}\`: NOT RUN: verify cannot run this state$`, 'm'));
      expect(r.out).toContain('- node node1: interface name pub0 is used twice (the lab itself uses pub0)');
      expect(await namespacesWith(v.prefix)).toEqual([]);
    } finally {
      await fx.cleanup();
    }
  }, 60_000);

  it('an unknown revision: still a report for the pull request, exit 1, nothing made', async () => {
    const repo = await editedRepo(scratch.dir, []);
    const v = startVerify(['--rev', 'no-such-branch', '--state', repo, '--json']);
    const r = await v.result;
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out)).toMatchObject({ rev: 'no-such-branch', verdict: 'error', error: `unknown revision "no-such-branch" in ${repo}`, results: [] });
    expect(r.err).toContain('cgw-sync: verify: unknown revision "no-such-branch"');
    expect(await namespacesWith(v.prefix)).toEqual([]);
  }, 60_000);

  it('more nodes than verify runs, public IPs on different segments: refused with the reasons (pure)', () => {
    const nodes = Array.from({ length: VERIFY_LIMITS.nodes + 1 }, (_, i) => ({ ...example.nodes[0]!, name: `n${i}`, uplink: { ...example.nodes[0]!.uplink, publicIP: `198.51.${i}.10` } }));
    const r = containForVerify({ ...example, nodes }, { prefix: 'cgwvtest-', brNetfilter: false });
    const ips = nodes.map((n) => n.uplink.publicIP).join(', ');
    expect(r).toEqual({
      ok: false,
      refusals: [
        `${VERIFY_LIMITS.nodes + 1} nodes: verify runs at most ${VERIFY_LIMITS.nodes} (each is a namespace with bridges, an agent's apply and probes from a client; more do not fit a CI runner)`,
        `the nodes' public IPs (${ips}) are not in one /24: verify puts them on one lab segment with a client`,
      ],
    });
  });

  it('a node named like a lab segment is refused; a contained state has no boot paths or commands left (pure)', () => {
    const client = containForVerify({ ...example, nodes: [{ ...example.nodes[0]!, name: 'client' }, example.nodes[1]!] }, { prefix: 'cgwvtest-', brNetfilter: false });
    expect(client).toEqual({ ok: false, refusals: ['node name client is reserved in the lab (pub, client, trunk)'] });
    const ok = containForVerify(example, { prefix: 'cgwvtest-', brNetfilter: false });
    if (!ok.ok) throw new Error(ok.refusals.join('; '));
    expect(ok.contained.state.guests.map((g) => [g.boot, g.netns])).toEqual(example.guests.map(() => [undefined, undefined]));
    expect(ok.contained.state.nodes.map((n) => n.hypervisor)).toEqual(example.nodes.map(() => 'netns'));
    expect(ok.contained.plan.namespaces.every((ns) => ns.startsWith('cgwvtest-'))).toBe(true);
  });

  it('SIGINT while the lab is being built: it finishes the step, removes exactly its namespaces, exit 1', async () => {
    const repo = await editedRepo(scratch.dir, []);
    const v = startVerify(['--rev', 'main', '--state', repo]);
    const building = await waitUntil(async () => (await namespacesWith(v.prefix)).length > 0 || v.child.exitCode !== null, 60_000, 20);
    expect(building && v.child.exitCode === null).toBe(true);
    v.child.kill('SIGINT');
    const r = await v.result;
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^### cgw-sync verify `[0-9a-f]{12}`: NOT FINISHED: interrupted$/m);
    expect(r.err).toContain('SIGINT: stopping after the current step, then removing the lab');
    expect(await namespacesWith(v.prefix)).toEqual([]);
  }, 120_000);
});
