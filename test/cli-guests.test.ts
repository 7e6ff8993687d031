// `cgw-sync apply` reconciles guests like the agent, for real: a node namespace with its guest
// bridge, netns guests started and stopped by the built CLI through --config (netns, state dir,
// guests). Without a status source, a guest arriving on a fresh node waits and the CLI says why;
// a release lets it start; moving it away stops it. Namespaces cgwt-cg-<pid>-<rand>[.<guest>].
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { stringify } from 'yaml';
import { addAddress, addBridge, deleteNamespace, listNamespaces } from '../src/netns/netns.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';
import { CLI_BIN, PROJECT_ROOT } from './helpers/agent-fixture.js';

describe('cgw-sync apply reconciles guests', () => {
  let env: NftNamespace;
  let tmp: string;
  let state: string;
  let configFile: string;
  const cli = (args: string[]) => execa(process.execPath, [CLI_BIN, ...args, '--config', configFile], { reject: false });
  const guestNamespaces = async () => (await listNamespaces()).filter((n) => n.startsWith(`${env.ns}.`)).sort();

  /** A state file rewritten in place. */
  async function edit(file: string, fn: (text: string) => string): Promise<void> {
    await writeFile(join(state, file), fn(await readFile(join(state, file), 'utf8')));
  }

  beforeAll(async () => {
    if (!existsSync(CLI_BIN)) throw new Error(`${CLI_BIN} is missing: run \`npm run build\``);
    env = await nftNamespace('cg');
    await addBridge(env.ns, 'guestbr0');
    await addAddress(env.ns, 'guestbr0', '10.5.5.251/24');
    tmp = await mkdtemp(join(tmpdir(), 'cgw-cg-'));
    state = join(tmp, 'state');
    await cp(join(PROJECT_ROOT, 'state-example'), state, { recursive: true });
    for (const n of ['node1', 'node2']) await edit(`nodes/${n}.yaml`, (t) => t.replace('hypervisor: xen', 'hypervisor: netns'));
    for (const g of ['guest1', 'guest2']) await edit(`guests/${g}.yaml`, (t) => `${t}netns:\n  command: [sleep, "600"]\n`);
    configFile = join(tmp, 'agent.yaml');
    const doc = { apiVersion: 'cgw-sync/v1', kind: 'AgentConfig', node: 'node1', source: { url: state }, stateDir: join(tmp, 'node1'), netns: env.ns, guests: { runDir: join(tmp, 'run'), stopTimeoutSeconds: 2, allowCommands: true } };
    await writeFile(configFile, stringify(doc));
  });
  afterAll(async () => {
    try {
      for (const ns of await guestNamespaces()) await deleteNamespace(ns);
    } finally {
      await env?.destroy();
      if (tmp) await rm(tmp, { recursive: true, force: true });
    }
  });

  it('a guest arriving on a fresh node waits without a status source, and the CLI says so', async () => {
    const r = await cli(['apply', '--state', state]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/not started: guest1: is not running; waits for node node2's report that it stopped guest1, and no status source is configured/);
    expect(await guestNamespaces()).toEqual([]);
    const plan = await cli(['plan', '--state', state]);
    expect(plan.stdout).toContain('… start guest1, not yet:');
  });

  it('released from node2, the guest starts; moved to node2, it is stopped', async () => {
    expect((await cli(['guest', 'release', 'guest1', '--from', 'node2'])).exitCode).toBe(0);
    const started = await cli(['apply', '--state', state]);
    expect(started.exitCode, started.stderr).toBe(0);
    expect(started.stdout).toContain('+ guest1: start');
    expect(await guestNamespaces()).toEqual([`${env.ns}.guest1`]);
    expect((await cli(['plan', '--state', state])).exitCode).toBe(0);

    await edit('guests/guest1.yaml', (t) => t.replace('node: node1', 'node: node2'));
    const stopped = await cli(['apply', '--state', state, '--json']);
    expect(stopped.exitCode, stopped.stderr).toBe(0);
    expect(JSON.parse(stopped.stdout).result.guestStops).toEqual([expect.objectContaining({ guest: 'guest1', action: 'stop', ok: true })]);
    expect(await guestNamespaces()).toEqual([]);
  });
});
