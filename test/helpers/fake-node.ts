// One node of the agent on fakes: the real cycle (runOnce) against FakeNft, FakeSettings and
// FakeGuests, a folder source and a status folder shared by the nodes of a copied state-example/.
import { cp, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AgentConfig } from '../../src/agent/config.js';
import { runOnce, type CycleDeps } from '../../src/agent/cycle.js';
import { defaultAgentConfig } from '../../src/agent/node.js';
import type { NodeStatus } from '../../src/agent/report.js';
import { folderSource } from '../../src/agent/source.js';
import { FakeFabric, FakeGuests } from '../../src/guests/fake.js';
import { FakeNft } from '../../src/nft/fake.js';
import { FakeSettings } from '../../src/settings/fake.js';
import { PROJECT_ROOT } from './agent-fixture.js';

/** A copy of state-example/ with netns nodes and guests (the fake driver's kind), and a status folder for the nodes' reports. */
export async function fakeCluster(scratch: string, name: string) {
  const dir = path.join(scratch, name);
  const state = path.join(dir, 'state');
  await cp(path.join(PROJECT_ROOT, 'state-example'), state, { recursive: true });
  const edit = async (file: string, fn: (t: string) => string) => writeFile(path.join(state, file), fn(await readFile(path.join(state, file), 'utf8')));
  for (const n of ['node1', 'node2']) await edit(`nodes/${n}.yaml`, (t) => t.replace('hypervisor: xen', 'hypervisor: netns'));
  for (const g of ['guest1', 'guest2']) await edit(`guests/${g}.yaml`, (t) => `${t}netns:\n  command: [sleep, "600"]\n`);
  return { state, status: path.join(dir, 'status', '{node}'), root: dir, fabric: new FakeFabric() };
}

/**
 * The same with qemu nodes (the fake driver stands in for qemu; its guests boot nothing), and
 * guest2 (on node2) with `migration: live`: the fakes of one cluster share a migration fabric.
 */
export async function fakeLiveCluster(scratch: string, name: string) {
  const c = await fakeCluster(scratch, name);
  const edit = async (file: string, fn: (t: string) => string) => writeFile(path.join(c.state, file), fn(await readFile(path.join(c.state, file), 'utf8')));
  for (const n of ['node1', 'node2']) await edit(`nodes/${n}.yaml`, (t) => t.replace('hypervisor: netns', 'hypervisor: qemu'));
  for (const g of ['guest1', 'guest2']) await edit(`guests/${g}.yaml`, (t) => t.replace(/^boot:\n( {2}.*\n)+/m, '').replace(/^netns:\n( {2}.*\n)+/m, ''));
  await edit('guests/guest2.yaml', (t) => `${t}migration: live\n`);
  return c;
}

/** Place a guest of a fake cluster on another node (a Git commit, for a folder source). */
export async function placeGuest(c: { state: string }, guest: string, node: string): Promise<void> {
  const file = path.join(c.state, 'guests', `${guest}.yaml`);
  await writeFile(file, (await readFile(file, 'utf8')).replace(/^node: .*$/m, `node: ${node}`));
}

export interface FakeNode {
  config: AgentConfig;
  nft: FakeNft;
  settings: FakeSettings;
  guests: FakeGuests;
  cycle(change?: Partial<AgentConfig>): Promise<NodeStatus>;
  published(): Promise<NodeStatus | undefined>;
}

/** `deps`: more of the cycle's dependencies (e.g. a fake health edge). */
export function fakeNode(c: Awaited<ReturnType<typeof fakeCluster>>, node: string, change: Partial<AgentConfig> = {}, deps: Partial<CycleDeps> = {}): FakeNode {
  const base = defaultAgentConfig(node);
  const config: AgentConfig = { ...base, stateDir: path.join(c.root, node), status: { branch: 'status/{node}', dir: c.status }, guests: { ...base.guests, allowCommands: true }, ...change };
  const nft = new FakeNft();
  const settings = new FakeSettings();
  const guests = new FakeGuests(c.fabric);
  const source = folderSource(c.state);
  return {
    config,
    nft,
    settings,
    guests,
    cycle: (more = {}) => runOnce({ ...deps, config: { ...config, ...more }, nft, settings, source, guestDriver: () => guests }),
    published: async () => {
      const text = await readFile(path.join(c.status.replace('{node}', node), 'status.json'), 'utf8').catch(() => undefined);
      return text ? (JSON.parse(text) as NodeStatus) : undefined;
    },
  };
}
