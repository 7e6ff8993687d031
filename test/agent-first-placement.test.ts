// The migration gate reads the state's Git history (real git smart-HTTP server on 127.0.0.1, node
// agents in their own namespaces, netns guests): a guest only ever placed on node1 starts on
// node1's first rollout although node2 never reported, and so does a guest new to the state; a
// guest moved from node2 waits for node2 on a node that does not remember it, and the release
// command its report gives works as printed; a hostile history (huge guests trees) caps the walk,
// the guest waits for every other node with the reason, and the next cycles read on.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeStatus } from '../src/agent/report.js';
import { NetnsDriver } from '../src/guests/netns.js';
import { addAddress, addBridge } from '../src/netns/netns.js';
import { readPublished, stateExampleFiles, startTestAgent, withNetnsGuests, type TestAgent } from './helpers/agent-fixture.js';
import { cliBin } from './helpers/cli.js';
import { commitFiles, commitHugeGuestTrees, startGitFixture, type GitFixture } from './helpers/git-server.js';

let fx: GitFixture;
let files: Record<string, string>;
const agents: TestAgent[] = [];
const drivers: NetnsDriver[] = [];

/** A node agent with guests on: its namespace gets the guest bridge the state names. */
async function nodeAgent(node: string): Promise<TestAgent> {
  const runDir = await fx.tmp(`run-${node}`);
  const a = await startTestAgent(fx, node, { guests: { enabled: true, runDir, allowCommands: true, stopTimeoutSeconds: 2 } });
  agents.push(a);
  drivers.push(new NetnsDriver({ nodeNs: a.ns.ns, prefix: `${a.ns.ns}.`, runDir: join(runDir, 'netns', a.ns.ns) }));
  await addBridge(a.ns.ns, 'guestbr0');
  await addAddress(a.ns.ns, 'guestbr0', '10.5.5.251/24');
  return a;
}

const guestState = (s: NodeStatus, guest: string) => s.guests.find((g) => g.name === guest);

/** guests/<name>.yaml placed on `node`; a new name gets its own address. */
function guestOn(name: string, node: string, ip = 201): string {
  const text = files[`guests/${name}.yaml`] ?? (files['guests/guest1.yaml'] as string).replaceAll('guest1', name).replace('10.5.5.201', `10.5.5.${ip}`).replace('05:05:c9', `05:05:${ip.toString(16)}`);
  return text.replace(/^node: .*$/m, `node: ${node}`);
}

beforeAll(async () => {
  files = withNetnsGuests(await stateExampleFiles());
  fx = await startGitFixture({ files });
});
afterAll(async () => {
  try {
    for (const d of drivers) for (const g of await d.list().catch(() => [])) await d.stop(g.name, { timeoutMs: 0 });
  } finally {
    for (const a of agents) await a.destroy();
    await fx?.cleanup();
  }
});

describe('the migration gate reads the state history', () => {
  it("a guest only ever placed on node1 starts on node1's first rollout; node2 never reported; so does a guest new to the state", async () => {
    const node1 = await nodeAgent('node1');
    const first = await node1.cycle();
    expect(first.outcome, first.errors.join('\n')).toBe('applied');
    expect(guestState(first, 'guest1')).toMatchObject({ state: 'running', detail: 'started' });
    expect(await drivers[0]?.list()).toEqual([expect.objectContaining({ name: 'guest1', state: 'running' })]);
    expect(await readPublished(fx, 'node2')).toBeUndefined();

    files = { ...files, 'guests/guest3.yaml': guestOn('guest3', 'node1', 203) };
    await commitFiles(fx.repo, files, { message: 'new guest3 on node1' });
    const second = await node1.cycle();
    expect(guestState(second, 'guest3')).toMatchObject({ state: 'running', detail: 'started' });
  });

  it('a guest moved from node2 waits for node2 on a node that does not remember it; the release command it prints works', async () => {
    files = { ...files, 'guests/guest2.yaml': guestOn('guest2', 'node1') };
    await commitFiles(fx.repo, files, { message: 'move guest2 to node1' });
    // A reinstalled node1 (no memory): only the history knows guest2 was on node2.
    const fresh = await nodeAgent('node1');
    const waiting = await fresh.cycle();
    expect(guestState(waiting, 'guest1')).toMatchObject({ state: 'running' });
    const detail = guestState(waiting, 'guest2')?.detail ?? '';
    expect(guestState(waiting, 'guest2')?.state).toBe('waiting');
    expect(detail).toContain(`waiting for node node2: it has not reported (down or silent?); \`cgw-sync guest release guest2 --from node2 --config ${fresh.configFile}\` overrides if that node is dead`);
    expect(detail).not.toMatch(/every other node/);

    const command = detail.match(/`cgw-sync ([^`]+)`/)?.[1].split(' ') ?? [];
    const released = await cliBin(command);
    expect(released.code, released.err).toBe(0);
    const started = await fresh.cycle();
    expect(guestState(started, 'guest2')).toMatchObject({ state: 'running', detail: 'started' });
  });

  it('a hostile history caps the walk: the guest waits for every other node and says why; later cycles read on', async () => {
    await commitHugeGuestTrees(fx.repo, { commits: 12, entries: 20_000, guestText: guestOn('guest1', 'node2') });
    await commitFiles(fx.repo, files, { message: 'valid again' });
    const fresh = await nodeAgent('node1');
    const t0 = Date.now();
    const capped = await fresh.cycle();
    const ms = Date.now() - t0;
    expect(guestState(capped, 'guest1')).toMatchObject({ state: 'waiting' });
    expect(guestState(capped, 'guest1')?.detail).toMatch(/waiting for node node2: it has not reported \(down or silent\?\); every other node must confirm: this node has no record of where guest1 was placed before, and the state's Git history could not tell: the history was read only in part .*; `cgw-sync guest release guest1 --from node2 --config /);
    // The budget bounds the cycle (12 x 20,000 tree entries are more than one walk reads); generous for a loaded machine.
    expect(ms).toBeLessThan(60_000);
    let s = capped;
    for (let i = 0; i < 3 && guestState(s, 'guest1')?.state !== 'running'; i++) s = await fresh.cycle();
    expect(guestState(s, 'guest1')).toMatchObject({ state: 'running', detail: 'started' });
    expect(await readPublished(fx, 'node2')).toBeUndefined();
  }, 120_000);
});
