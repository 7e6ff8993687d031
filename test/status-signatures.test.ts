// Reports others can trust, against a real Git smart-HTTP server: two agents (the real cycle on
// in-memory nft, settings and guests; a folder state) publish signed reports to status/<node>.
// A commit the test pushes onto status/node2 (unsigned, or signed with a key that is not node2's)
// is believed when the state declares no keys (the threat), and ignored by node1's migration gate
// and wave gate, with the reason, when it does; node2 finds the foreign tip, puts its own signed
// report back on top and reports the intrusion; a valid signed report is believed.
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentConfig } from '../src/agent/config.js';
import type { NodeStatus } from '../src/agent/report.js';
import { contentHash } from '../src/git/source.js';
import { loadStateOrThrow } from '../src/state/load.js';
import { readReports, statusReader, statusTrust } from '../src/agent/status-source.js';
import { fleetStatus } from '../src/rollout/commands.js';
import { gitCli, resetBranch, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { fakeCluster, fakeNode } from './helpers/fake-node.js';
import { branchTip, declareStatusKey, forgeReport, nodeKey, type NodeKey } from './helpers/status-trust.js';

let scratch: string;
let fx: GitFixture;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-trust-'));
  fx = await startGitFixture({ files: { 'README.md': 'status only\n' } });
});
afterAll(async () => {
  await fx?.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** A cluster whose reports go to status/<name>-<node> branches on the real server (one set per test). */
async function cluster(name: string, opts: { keys: boolean; waves?: boolean }) {
  const c = await fakeCluster(scratch, name);
  const keys: Record<string, NodeKey> = {};
  for (const n of ['node1', 'node2']) {
    keys[n] = await nodeKey(c.root, n);
    if (opts.keys) await declareStatusKey(c.state, n, keys[n].publicKey);
  }
  if (opts.waves) await appendFile(path.join(c.state, 'cluster.yaml'), 'rollout:\n  waves: [[node2], [node1]]\n');
  const status = (n: string): AgentConfig['status'] => ({ url: fx.url, branch: `status/${name}-{node}`, signingKey: keys[n]?.file });
  // The gateway address is on the (fake) bridge, so the built-in checks pass.
  const node = (n: string) => fakeNode(c, n, { status: status(n) }, { health: { addresses: async () => ['10.5.5.254'] } });
  const branch = (n: string) => `status/${name}-${n}`;
  return { c, keys, node, branch, revision: async () => `sha256-${await contentHash(c.state)}` };
}

/** node2's report as a forger would write it: applied, healthy, running nothing. */
function forgedReport(revision: string, like?: NodeStatus): NodeStatus {
  const time = new Date().toISOString();
  return {
    ...(like ?? { format: 'cgw-sync.status/v1', source: { url: 'x', branch: 'main', state: 'ok' }, plan: null, drift: { items: [], corrected: false }, hooks: [], timings: {} }),
    node: 'node2',
    time,
    outcome: 'converged',
    appliedRevision: revision,
    appliedAt: '2000-01-01T00:00:00.000Z',
    guests: [],
    health: { state: 'healthy', checks: 1, failing: [] },
    errors: [],
  } as NodeStatus;
}

const guest1 = (s: NodeStatus) => s.guests.find((g) => g.name === 'guest1');

describe('signed status reports (real git server)', () => {
  it('without keys a forged "node2 runs nothing" lets node1 start guest1, and the report says node2 is unverified', async () => {
    const k = await cluster('open', { keys: false });
    const node1 = k.node('node1');
    const first = await node1.cycle();
    expect(guest1(first)?.detail).toMatch(/waiting for node node2: it has not reported \(down or silent\?\)/);
    expect(first.notes).toContain('the reports of node2 are unverified: the state declares no statusKey for it (docs/status-signatures.md)');
    const fleet = await fleetStatus(node1.config, { stateDir: k.c.state, json: true, maxAgeSeconds: 3600 });
    expect(JSON.parse(fleet.text).nodes.find((r: { node: string }) => r.node === 'node1').note).toMatch(/^unverified report/);
    await forgeReport(fx, k.branch('node2'), forgedReport(await k.revision()));
    const second = await node1.cycle();
    expect(guest1(second)).toEqual({ name: 'guest1', state: 'running', detail: 'started' });
  });

  it('with keys, node1 ignores an unsigned and a wrongly signed node2 report, then believes node2\'s own; node2 restores its branch', async () => {
    const k = await cluster('gate', { keys: true });
    const node1 = k.node('node1');
    const node2 = k.node('node2');
    const mallory = await nodeKey(k.c.root, 'mallory');
    const revision = await k.revision();

    // node2 reports once (its guest2 placement is its own business), then is silent.
    const own = await node2.cycle();
    expect(own.intrusion).toBeUndefined();
    const ownTip = await branchTip(fx, k.branch('node2'));
    expect(await gitCli(['--git-dir', fx.repo, 'cat-file', '-p', ownTip])).toMatch(/^gpgsig -----BEGIN PGP SIGNATURE-----/m);

    // Forged on top of node2's report: unsigned, then signed by a key that is not node2's.
    for (const [sign, reason] of [
      [undefined, `${k.branch('node2')}: not signed, but node2's reports must be signed by its statusKey`],
      [mallory.privateKey, `${k.branch('node2')}: signature not by node2's key`],
    ] as const) {
      const forged = await forgeReport(fx, k.branch('node2'), forgedReport(revision, own), sign);
      const r = await node1.cycle();
      expect(guest1(r)?.state).toBe('waiting');
      expect(guest1(r)?.detail).toContain(`waiting for node node2: it has not reported (${reason}`);
      expect(node1.guests.history).toEqual([]);
      expect(await branchTip(fx, k.branch('node2'))).toBe(forged);
    }

    // node2's next cycle: the tip is not the commit it pushed; its signed report goes back on top.
    const forgedTip = await branchTip(fx, k.branch('node2'));
    const restored = await node2.cycle();
    expect(restored.intrusion).toMatchObject({ branch: k.branch('node2'), oid: forgedTip, expected: ownTip });
    expect(restored.intrusion?.reason).toMatch(/^signed by key [0-9a-f]+, not this node's key$/);
    expect(restored.notes?.join('\n')).toContain(`intrusion: found commit ${forgedTip.slice(0, 12)} at the tip of ${k.branch('node2')}, which this node did not make`);
    const newTip = await branchTip(fx, k.branch('node2'));
    // On top, not a force-push: the forged commits stay in the history as evidence.
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', `${newTip}^`])).toBe(forgedTip);
    expect(await gitCli(['--git-dir', fx.repo, 'log', '-1', '--format=%s', newTip])).toMatch(/restored .* over foreign commit /);

    // The valid signed report is believed: node2 does not run guest1, node1 starts it.
    const started = await node1.cycle();
    expect(guest1(started)).toEqual({ name: 'guest1', state: 'running', detail: 'started' });
    // A quiet cycle of node2 finds its own tip and reports no intrusion.
    expect((await node2.cycle()).intrusion).toBeUndefined();
  });

  it('the wave gate ignores forged "node2 applied it" reports and follows node2\'s signed one', async () => {
    const k = await cluster('waves', { keys: true, waves: true });
    const node1 = k.node('node1');
    const revision = await k.revision();
    for (const [sign, reason] of [
      [undefined, 'not signed'],
      [(await nodeKey(k.c.root, 'eve')).privateKey, "signature not by node2's key"],
    ] as const) {
      await forgeReport(fx, k.branch('node2'), forgedReport(revision), sign);
      const r = await node1.cycle();
      expect(r.outcome).toBe('error');
      expect(r.rollout?.waiting).toContain(`waiting for node node2 (wave 1) has not reported (${k.branch('node2')}: ${reason}`);
      expect(node1.nft.history).toEqual([]);
    }
    // The fleet status says the same.
    const fleet = await fleetStatus(node1.config, { stateDir: k.c.state, json: false, maxAgeSeconds: 3600 });
    expect(fleet.problems.find((p) => p.startsWith('node2:'))).toMatch(new RegExp(`^node2: ${k.branch('node2')}: signature not by node2's key \\(signed by key [0-9a-f]+\\)$`));
    expect(fleet.text).toMatch(new RegExp(`node2 .*silent .*${k.branch('node2')}: signature not by node2's key`));

    const node2 = k.node('node2');
    const genuine = await node2.cycle();
    expect(genuine.outcome).toBe('applied');
    expect(genuine.intrusion).toBeUndefined();
    const go = await node1.cycle();
    expect(go).toMatchObject({ outcome: 'applied', appliedRevision: revision });
    expect(go.rollout).toBeUndefined();
  });

  it('the reader: a key from the state, the report of another node, and strict mode', async () => {
    const k = await cluster('reader', { keys: true });
    await k.node('node1').cycle();
    const state = await loadStateOrThrow(k.c.state);
    const config = k.node('node2').config;
    // node1's genuine, signed report copied onto node2's branch: signed, but by node1's key.
    await gitCli(['--git-dir', fx.repo, 'branch', k.branch('node2'), k.branch('node1')]);
    const read = statusReader(config, statusTrust(state));
    expect((await read?.('node1'))?.status?.node).toBe('node1');
    expect(await read?.('node2')).toEqual({ status: null, refused: expect.stringMatching(new RegExp(`^${k.branch('node2')}: signature not by node2's key`)) });
    // Without node2's key it is unverified: believed only when not required, and only as node2's.
    const open = { keys: new Map([['node1', state.nodes[0]?.statusKey as string]]), required: false };
    expect(await statusReader(config, open)?.('node2')).toEqual({ status: null, refused: `${k.branch('node2')}: the report is node "node1"'s, not node2's` });
    const strict = await readReports(statusReader(config, { ...open, required: true }), ['node2']);
    expect(strict.refused.get('node2')).toBe(`${k.branch('node2')}: not believed: cluster.statusSignatures is required and the state declares no statusKey for node2`);
  });

  it("a node whose signing key is not the state's statusKey for it (or is missing) says the others ignore its reports", async () => {
    const k = await cluster('mismatch', { keys: true });
    const wrong = await nodeKey(k.c.root, 'wrong');
    const ignored = 'the other nodes ignore its reports (migration gate, waves, fleet status)';
    const n = k.node('node1');
    expect((await n.cycle()).errors).toEqual([]);
    expect((await n.cycle({ status: { ...n.config.status, signingKey: wrong.file } })).errors).toContain(`status.signingKey ${wrong.file} is key ${wrong.fingerprint}, but the state's statusKey for node1 is ${k.keys.node1?.fingerprint}: ${ignored}`);
    const { signingKey: _, ...unsigned } = n.config.status;
    expect((await n.cycle({ status: unsigned })).errors).toContain(`the state declares a statusKey for node1, and status.signingKey is not set: ${ignored}`);
  });

  it('a node finds an older commit of its own put back (a reset) and a deleted branch', async () => {
    const k = await cluster('reset', { keys: true });
    const node2 = k.node('node2');
    await node2.cycle();
    const first = await branchTip(fx, k.branch('node2'));
    await appendFile(path.join(k.c.state, 'forwards', 'extra.yaml'), 'apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n  - { name: extra, protocol: tcp, port: 2299, target: { guest: guest2, port: 22 } }\n');
    await node2.cycle();
    const second = await branchTip(fx, k.branch('node2'));
    expect(second).not.toBe(first);
    await resetBranch(fx.repo, first, k.branch('node2'));
    const r = await node2.cycle();
    expect(r.intrusion).toMatchObject({ oid: first, expected: second, reason: 'an older commit of this node was put back (the branch was reset)' });
    const restored = await branchTip(fx, k.branch('node2'));
    expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', `${restored}^`])).toBe(first);

    await gitCli(['--git-dir', fx.repo, 'update-ref', '-d', `refs/heads/${k.branch('node2')}`]);
    const gone = await node2.cycle();
    expect(gone.intrusion).toMatchObject({ expected: restored, reason: 'the branch was deleted' });
    expect(await branchTip(fx, k.branch('node2'))).not.toBe('');
  });
});
