// The rollout commands through the built CLI: `suspend --reason` / `resume` on a node's state dir
// (the agent's next cycle applies nothing, then converges), and `status --all` reading every
// node's report from the status folder: one line per node, exit 1 while a node is silent.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_BIN } from './helpers/agent-fixture.js';
import { fakeCluster, fakeNode } from './helpers/fake-node.js';

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-rollout-cli-'));
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const cli = (args: string[]) => execa(process.execPath, [CLI_BIN, ...args], { reject: false });
const noProbes = { health: { probe: async () => ({ ok: true, detail: 'connected' }), addresses: async () => ['10.5.5.254'] } };

describe('rollout commands', () => {
  it('suspend, resume and the fleet status', async () => {
    const c = await fakeCluster(scratch, 'cli');
    const node1 = fakeNode(c, 'node1', {}, noProbes);
    const node2 = fakeNode(c, 'node2', {}, noProbes);
    const config = path.join(c.root, 'agent-node1.yaml');
    await writeFile(config, JSON.stringify({ apiVersion: 'cgw-sync/v1', kind: 'AgentConfig', node: 'node1', source: { url: c.state }, stateDir: node1.config.stateDir, status: { dir: c.status } }));

    expect(await node1.cycle()).toMatchObject({ outcome: 'applied' });
    const silent = await cli(['status', '--all', '--state', c.state, '--config', config]);
    expect(silent.exitCode).toBe(1);
    const lines = silent.stdout.split('\n');
    expect(lines[0]).toMatch(/^NODE\s+REVISION\s+OUTCOME\s+HEALTH\s+AGE\s+MAIN\s+DRIFT\s+NOTE$/);
    // A folder source has no branch tip to compare with: MAIN is '?'.
    expect(lines[1]).toMatch(/^node1\s+sha256-[0-9a-f]{5}\S*\s+applied\s+healthy\s+\d+s\s+\?\s+none\s+unverified report$/);
    expect(lines[2]).toMatch(/^node2\s+-\s+silent\s+-\s+-\s+-\s+-\s+never reported$/);
    expect(silent.stderr).toContain('node2: never reported');

    const suspended = await cli(['suspend', '--reason', 'disk swap', '--config', config]);
    expect(suspended.exitCode).toBe(0);
    expect(JSON.parse(await readFile(path.join(node1.config.stateDir, 'suspend.json'), 'utf8'))).toMatchObject({ reason: 'disk swap' });
    const ssh = path.join(c.state, 'forwards', 'ssh.yaml');
    await writeFile(ssh, (await readFile(ssh, 'utf8')).replace('port: 2201', 'port: 2299'));
    expect(await node1.cycle()).toMatchObject({ outcome: 'suspended', suspended: { reason: 'disk swap' } });
    expect(await node2.cycle()).toMatchObject({ outcome: 'applied' });

    const json = await cli(['status', '--all', '--state', c.state, '--config', config, '--json']);
    expect(json.exitCode).toBe(0);
    const doc = JSON.parse(json.stdout);
    expect(doc.problems).toEqual([]);
    expect(doc.nodes.map((r: { node: string; outcome: string }) => [r.node, r.outcome])).toEqual([['node1', 'suspended'], ['node2', 'applied']]);
    // No statusKey in this state: every report is marked unverified (docs/status-signatures.md).
    expect(doc.nodes[0].note).toMatch(/^unverified report; suspended by \S+: disk swap$/);

    expect((await cli(['resume', '--config', config])).stdout).toContain('node node1 resumed');
    expect(await node1.cycle()).toMatchObject({ outcome: 'applied' });
    expect((await cli(['suspend', '--config', config])).exitCode).toBe(1);
  });
});
