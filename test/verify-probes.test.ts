// `cgw-sync verify --rev` with real parts: the built CLI as root builds the revision's lab in
// namespaces named after its PID, applies each node through the agent's path, probes with the
// lab's probes and removes everything. state-example passes; a revision that points a forward
// at a port the guest does not serve fails, names the failing probes and exits 1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadState } from '../src/state/load.js';
import { entersNode } from '../src/render/node-view.js';
import type { ClusterState } from '../src/state/types.js';
import { EXAMPLE_DIR, scratchDir } from './helpers/hostile-state.js';
import { gitCli } from './helpers/git-server.js';
import { editedRepo, namespacesWith, startVerify } from './helpers/verify-run.js';

let scratch: Awaited<ReturnType<typeof scratchDir>>;
let example: ClusterState;

beforeAll(async () => {
  scratch = await scratchDir(`verify-${process.pid}`);
  example = (await loadState(EXAMPLE_DIR)).state!;
});
afterAll(async () => {
  await scratch?.remove();
});

/** The table rows of the Markdown report: [mark, probe, answer]. */
function rows(markdown: string): string[][] {
  return markdown
    .split('\n')
    .filter((l) => /^\| (✅|❌) \|/.test(l))
    .map((l) => l.slice(2, -2).split(' | '));
}

describe('verify --rev', () => {
  it('state-example passes: every forward on every node it enters, outbound, ARP; Markdown for the pull request', async () => {
    const repo = await editedRepo(scratch.dir, []);
    const oid = await gitCli(['rev-parse', 'HEAD'], repo);
    const v = startVerify(['--rev', 'main', '--state', repo]);
    const r = await v.result;
    expect(r.code, r.err).toBe(0);
    const table = rows(r.out);
    expect(r.out.split('\n')[0]).toBe(`### cgw-sync verify \`${oid.slice(0, 12)}\`: passed`);
    expect(r.out).toMatch(new RegExp(`^2 node\\(s\\) \\(node1, node2\\), 2 guest\\(s\\), ${example.forwards.length} forward\\(s\\), NAT mode full-nat, br_netfilter off: \\*\\*${table.length} passed, 0 failed\\*\\* on the real kernel in [\\d.]+ s\\.$`, 'm'));
    expect(table.every(([mark]) => mark === '✅')).toBe(true);
    // Every forward, on every node it enters, answered by its target guest through that node.
    for (const node of example.nodes) {
      const publicIP = node.uplink.publicIP;
      for (const f of example.forwards.filter((f) => entersNode(f, node.name))) {
        const row = table.find(([, probe]) => probe === `${f.name}: ${f.protocol} ${publicIP}:${f.port} (${node.name}) -> ${f.target.guest}:${f.target.port}`);
        expect(row?.[2], `${f.name} on ${node.name}`).toMatch(new RegExp(`^this is ${f.target.guest} OK from `));
      }
      expect(table.some(([, p]) => p === `apply on ${node.name}: ruleset and node settings of ${oid.slice(0, 12)}`)).toBe(true);
    }
    for (const g of example.guests) {
      expect(table.some(([, p]) => p.startsWith(`outbound: ${g.name} (on ${g.node})`))).toBe(true);
      expect(table.some(([, p]) => p === `arp ${example.cluster.gatewayIP} from ${g.name}: only ${g.node} answers`)).toBe(true);
    }
    expect(r.out).not.toContain('Failing probes');
    expect(await namespacesWith(v.prefix)).toEqual([]);
  }, 150_000);

  it('a forward to a closed guest port fails: exit 1, the failing probes named, the rest still proven', async () => {
    const repo = await editedRepo(scratch.dir, [['forwards/ssh.yaml', 'target: { guest: guest1, port: 22 }', 'target: { guest: guest1, port: 2222 }']], 'ssh-guest1 to a closed port');
    const v = startVerify(['--rev', 'main', '--state', repo]);
    const r = await v.result;
    expect(r.code, r.err).toBe(1);
    expect(r.out.split('\n')[0]).toMatch(/^### cgw-sync verify `[0-9a-f]{12}`: FAILED$/);
    const failing = r.out.slice(r.out.indexOf('**Failing probes:**')).split('\n').filter((l) => l.startsWith('- ❌ '));
    const entering = example.nodes.filter((n) => example.forwards.some((f) => f.name === 'ssh-guest1' && entersNode(f, n.name)));
    // The forward on every node it enters, and (through it) its cross-node reply path: nothing else.
    for (const n of entering) expect(failing.filter((l) => l.startsWith(`- ❌ ssh-guest1: tcp ${n.uplink.publicIP}:2201 (${n.name}) -> guest1:2222: `))).toHaveLength(1);
    expect(failing.filter((l) => !l.startsWith('- ❌ ssh-guest1: ')).every((l) => l.startsWith('- ❌ reply path: ssh-guest1 '))).toBe(true);
    const table = rows(r.out);
    expect(table.filter(([mark]) => mark === '❌')).toHaveLength(failing.length);
    expect(r.out).toContain(`**${table.length - failing.length} passed, ${failing.length} failed**`);
    expect(await namespacesWith(v.prefix)).toEqual([]);
  }, 150_000);
});
