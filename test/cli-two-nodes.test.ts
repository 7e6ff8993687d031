// Two nodes as two namespaces on one host, in ct-sync, each applied with the built
// `cgw-sync apply` run through `ip netns exec` with its own --state-dir: each keeps its own
// conntrackd (cgw-sync stops only a conntrackd it started in that node's namespace), and `plan`
// exits 0 on both afterwards. Namespaces cgwt-two<n>-<pid>-<rand>, removed in afterAll.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { addAddress, addBridge, runIn } from '../src/netns/netns.js';
import { processAlive, terminate } from '../src/proc/process.js';
import { conntrackdPaths, settingsDir } from '../src/settings/model.js';
import type { ConntrackdProcess } from '../src/settings/plan.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';
import { CLI_BIN, PROJECT_ROOT } from './helpers/agent-fixture.js';

const NODES = [
  { name: 'node1', ip: '10.5.5.251/24' },
  { name: 'node2', ip: '10.5.5.252/24' },
];

describe('two nodes on one host, ct-sync, `cgw-sync apply` each', () => {
  const envs: NftNamespace[] = [];
  let tmp: string;
  let state: string;
  const stateDir = (node: string) => join(tmp, node);
  const record = async (node: string) => JSON.parse(await readFile(conntrackdPaths(settingsDir(stateDir(node))).record, 'utf8')) as ConntrackdProcess;
  const cli = (i: number, args: string[]) => execa('ip', ['netns', 'exec', envs[i]!.ns, process.execPath, CLI_BIN, ...args, '--state', state, '--node', NODES[i]!.name, '--state-dir', stateDir(NODES[i]!.name)], { reject: false });

  beforeAll(async () => {
    if (!existsSync(CLI_BIN)) throw new Error(`${CLI_BIN} is missing: run \`npm run build\``);
    tmp = await mkdtemp(join(tmpdir(), 'cgw-two-'));
    state = join(tmp, 'state');
    await cp(join(PROJECT_ROOT, 'state-example'), state, { recursive: true });
    const cluster = join(state, 'cluster.yaml');
    await writeFile(cluster, (await readFile(cluster, 'utf8')).replace('mode: full-nat', 'mode: ct-sync'));
    for (const [i, n] of NODES.entries()) {
      envs.push(await nftNamespace(`two${i + 1}`));
      await addBridge(envs[i]!.ns, 'guestbr0');
      await addAddress(envs[i]!.ns, 'guestbr0', n.ip);
    }
  });
  afterAll(async () => {
    for (const n of NODES) {
      const rec = await record(n.name).catch(() => undefined);
      if (rec && processAlive(rec.pid, rec.startTime)) await terminate(rec.pid, rec.startTime, 3000);
    }
    for (const e of envs) await e.destroy();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('both keep their own conntrackd, and plan exits 0 on both afterwards', async () => {
    for (const i of [0, 1]) {
      const r = await cli(i, ['apply']);
      expect(r.exitCode, `${NODES[i]!.name}: ${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout).toContain('+ conntrackd: start (not running)');
    }
    const recs = [await record('node1'), await record('node2')];
    for (const [i, rec] of recs.entries()) {
      expect(processAlive(rec.pid, rec.startTime), `${NODES[i]!.name}'s conntrackd`).toBe(true);
      const theirs = (await runIn(envs[i]!.ns, 'readlink', [`/proc/${rec.pid}/ns/net`])).stdout.trim();
      expect(theirs).toBe((await runIn(envs[i]!.ns, 'readlink', ['/proc/self/ns/net'])).stdout.trim());
    }
    // Applying node1 again (nothing to do) and node2 again leaves both processes as they were.
    for (const i of [0, 1]) expect((await cli(i, ['apply'])).exitCode).toBe(0);
    for (const [i, rec] of recs.entries()) expect(processAlive(rec.pid, rec.startTime), `${NODES[i]!.name}'s conntrackd after the re-apply`).toBe(true);
    for (const i of [0, 1]) {
      const plan = await cli(i, ['plan']);
      expect(plan.exitCode, plan.stdout).toBe(0);
      expect(plan.stdout).toContain('settings: no changes');
    }
  });

  it("a record naming another node's conntrackd is not ours: never stopped, a new one is started", async () => {
    const node2 = await record('node2');
    // node1's record now names node2's process (as a shared state dir would have): node1's plan
    // does not see it as its own conntrackd, and its apply leaves node2's alone.
    const file = conntrackdPaths(settingsDir(stateDir('node1'))).record;
    const own = await record('node1');
    await writeFile(file, `${JSON.stringify(node2)}\n`);
    const plan = await cli(0, ['plan']);
    expect(plan.exitCode).toBe(2);
    expect(plan.stdout).toContain('+ conntrackd: start (not running)');
    // node1's own conntrackd still holds its lock file: stop it the way an operator would, by PID.
    await terminate(own.pid, own.startTime, 3000);
    const r = await cli(0, ['apply']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(processAlive(node2.pid, node2.startTime)).toBe(true);
    expect((await record('node1')).pid).not.toBe(node2.pid);
  });
});
