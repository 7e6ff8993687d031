// `cgw-sync status --all --state <URL or clone>` on a workstation (no agent configuration), against
// a real Git smart-HTTP server that demands a token: the state at main declares three nodes and
// their statusKeys; node1 publishes a signed report through the agent's own publishing code, a
// forged report (signed by node1's key) sits on status/node2, node3 is silent. The binary reads
// it over http(s) (into a temporary folder it removes) and from a local clone's origin/status/*.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeStatus } from '../src/agent/report.js';
import { statusFiles, commitMessage } from '../src/agent/report.js';
import { readSigningKey } from '../src/git/signature.js';
import { publishStatus } from '../src/git/status-branch.js';
import type { FleetRow } from '../src/rollout/fleet.js';
import { mainTip, stateExampleFiles } from './helpers/agent-fixture.js';
import { cliBin } from './helpers/cli.js';
import { commitFiles, gitCli, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { nodeStatus } from './helpers/node-status.js';
import { forgeReport, nodeKey, statusKeyYaml, type NodeKey } from './helpers/status-trust.js';

const TOKEN = `fleet-token-${process.pid}-0123456789`;
const NODES = ['node1', 'node2', 'node3'];

let scratch: string;
let fx: GitFixture;
let main: string;
const keys: Record<string, NodeKey> = {};

/** node3: a copy of node2 with its own addresses. */
function node3Yaml(node2: string): string {
  return node2.replace('name: node2', 'name: node3').replaceAll('192.168.122.12', '192.168.122.13').replaceAll('10.5.5.252', '10.5.5.253');
}

beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-fleet-test-'));
  const files = await stateExampleFiles();
  files['nodes/node3.yaml'] = node3Yaml(files['nodes/node2.yaml'] as string);
  for (const n of NODES) {
    keys[n] = await nodeKey(scratch, n);
    files[`nodes/${n}.yaml`] += statusKeyYaml(keys[n].publicKey);
  }
  fx = await startGitFixture({ files, token: TOKEN });
  main = await mainTip(fx);
});
afterAll(async () => {
  await fx?.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** `node`'s report, signed with its own key and pushed the way its agent publishes it. */
async function publish(node: string, over: Partial<NodeStatus>): Promise<void> {
  const status = nodeStatus({ node, time: new Date().toISOString(), appliedRevision: main, ...over });
  const signingKey = await readSigningKey(keys[node]!.privateKey);
  await publishStatus({ url: fx.url, node, workDir: path.join(scratch, `publish-${node}`), credentials: { tokenEnv: 'CGW_FLEET_TEST_TOKEN' }, signingKey }, statusFiles(status), commitMessage(status));
}

/** The binary as on a workstation: no agent configuration, its own (watched) TMPDIR, the token in the environment. */
async function status(args: string[], env: Record<string, string> = {}) {
  const tmp = await mkdtemp(path.join(scratch, 'tmp-'));
  const r = await cliBin(['status', '--all', ...args], { env: { TMPDIR: tmp, CGW_FLEET_TEST_TOKEN: TOKEN, ...env } });
  return { ...r, leftInTmp: await readdir(tmp) };
}

const rowsOf = (out: string) => new Map((JSON.parse(out).nodes as FleetRow[]).map((r) => [r.node, r]));

describe('status --all --state <URL or clone> without an agent configuration', () => {
  beforeAll(async () => {
    process.env.CGW_FLEET_TEST_TOKEN = TOKEN;
    await publish('node1', {});
    // Someone with push access, holding node1's key but not node2's.
    await forgeReport(fx, 'status/node2', nodeStatus({ node: 'node2', time: new Date().toISOString(), appliedRevision: main }), keys.node1!.privateKey);
  });

  it('over http(s): believes node1, refuses the forged node2 report, node3 is silent; exit 1; no temporary folder left', async () => {
    const r = await status(['--state', fx.url, '--token-env', 'CGW_FLEET_TEST_TOKEN', '--json']);
    expect(r.code, r.err).toBe(1);
    expect(r.leftInTmp).toEqual([]);
    const json = JSON.parse(r.out);
    expect(json.main).toBe(main);
    const rows = rowsOf(r.out);
    expect(rows.get('node1')).toMatchObject({ outcome: 'converged', revision: main.slice(0, 12), main: 'main', note: '' });
    expect(rows.get('node2')).toMatchObject({ outcome: 'silent', ageSeconds: null });
    expect(rows.get('node2')?.note).toMatch(/^status\/node2: signature not by node2's key \(signed by key /);
    expect(rows.get('node3')).toMatchObject({ outcome: 'silent', note: 'never reported' });
    expect(json.problems).toEqual([expect.stringMatching(/^node2: status\/node2: signature not by node2's key/), 'node3: never reported']);
    expect(r.out + r.err).not.toContain(TOKEN);
  });

  it('a wrong password in the URL: a clear error that does not show it, and no temporary folder left', async () => {
    const wrong = 'not-the-token-but-secret';
    const r = await status(['--state', fx.url.replace('http://', `http://ops:${wrong}@`)], {});
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/HTTP 401/);
    expect(r.err).not.toContain(wrong);
    expect(r.leftInTmp).toEqual([]);
  });

  it('from a local clone (origin/status/*): the same rows as a Markdown table; after node2 and node3 report, exit 0; --max-age makes an old report silent', async () => {
    const clone = path.join(scratch, 'clone');
    await gitCli(['clone', '--quiet', fx.repo, clone]);
    const md = await status(['--state', clone, '--markdown']);
    expect(md.code, md.err).toBe(1);
    expect(md.out).toContain(`| node | outcome | applied revision (main \`${main.slice(0, 12)}\`) |`);
    expect(md.out).toMatch(new RegExp(`^\\| node1 \\| converged \\| \`${main.slice(0, 12)}\` main \\|`, 'm'));
    expect(md.out).toMatch(/^\| node2 \| silent \| - \| - \| - \| - \| status\/node2: signature not by node2's key/m);
    expect(md.out).toMatch(/^\| node3 \| silent \| - \| - \| - \| - \| never reported \|$/m);
    expect(md.out).toContain('**2 node(s) need attention:**');

    await publish('node2', {});
    await publish('node3', { time: new Date(Date.now() - 600_000).toISOString() });
    // The clone sees them once it fetches, as an operator's would.
    const stale = await status(['--state', clone, '--json']);
    expect(rowsOf(stale.out).get('node3')?.outcome).toBe('silent');
    await gitCli(['fetch', '--quiet', 'origin'], clone);
    const fresh = await status(['--state', clone]);
    expect(fresh.code, fresh.out + fresh.err).toBe(0);
    expect(fresh.out.split('\n').filter((l) => /^node\d /.test(l)).map((l) => l.split(/\s+/).slice(0, 3).join(' '))).toEqual(NODES.map((n) => `${n} ${main.slice(0, 12)} converged`));
    const old = await status(['--state', clone, '--max-age', '300']);
    expect(old.code).toBe(1);
    expect(old.err).toMatch(/1 node\(s\) need attention: node3: silent for 10m/);
  });

  it('a rolled-back node makes it exit 1; options of the agent form and the repository form do not mix', async () => {
    await publish('node2', { outcome: 'rolled-back', rollback: { revision: main, restored: main, failing: [{ name: 'web', ok: false, detail: 'port closed' }], checkedMs: 1000, ok: true, errors: [] } });
    const r = await status(['--state', fx.url, '--token-env', 'CGW_FLEET_TEST_TOKEN', '--json']);
    expect(r.code, r.err).toBe(1);
    expect(rowsOf(r.out).get('node2')).toMatchObject({ outcome: 'rolled-back', note: `rolled back ${main.slice(0, 12)}: web` });
    const mixed = await status(['--state', fx.url, '--config', '/nonexistent.yaml', '--branch', 'main']);
    expect(mixed.code).toBe(1);
    expect(mixed.err).toMatch(/--branch reads a state repository: give it as --state URL\|CLONE, without --config/);
    const ssh = await status(['--state', 'git@example.org:state.git']);
    expect(ssh.err).toMatch(/status --all reads http\(s\) URLs or a local clone/);
    const noBranch = await status(['--state', fx.url, '--token-env', 'CGW_FLEET_TEST_TOKEN', '--branch', 'nosuch']);
    expect(noBranch.err).toContain(`${fx.url} has no branch nosuch`);
    expect(noBranch.leftInTmp).toEqual([]);
    const notClone = await status(['--state', scratch]);
    expect(notClone.err).toMatch(/is not a Git clone/);
  });

  it('--branch and --path: the state in a folder of another branch names the nodes; main is that branch\'s tip', async () => {
    const files = await stateExampleFiles();
    // A one-node cluster with one guest and no forwards.
    const kept = ['cluster.yaml', 'nodes/node1.yaml', 'guests/guest1.yaml'];
    const nested = Object.fromEntries(Object.entries(files).filter(([f]) => kept.includes(f)).map(([f, text]) => [`deploy/state/${f}`, f === 'nodes/node1.yaml' ? text + statusKeyYaml(keys.node1!.publicKey) : text]));
    const tip = await commitFiles(fx.repo, nested, { branch: 'deploy', parent: null, message: 'state in a folder' });
    const r = await status(['--state', fx.url, '--token-env', 'CGW_FLEET_TEST_TOKEN', '--branch', 'deploy', '--path', 'deploy/state', '--json']);
    expect(r.code, r.err).toBe(0);
    const json = JSON.parse(r.out);
    expect(json.main).toBe(tip);
    expect(json.nodes).toEqual([expect.objectContaining({ node: 'node1', outcome: 'converged', main: 'behind main', note: '' })]);
    const wrongPath = await status(['--state', fx.url, '--token-env', 'CGW_FLEET_TEST_TOKEN', '--branch', 'deploy']);
    expect(wrongPath.code).toBe(1);
    expect(wrongPath.err).toMatch(/cannot read the nodes from .* at deploy \([0-9a-f]{12}\), folder \.:\ncluster\.yaml:1:1: missing/);
  });
});
