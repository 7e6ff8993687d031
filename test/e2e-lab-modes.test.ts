// The lab in the other NAT modes (issue 6), end to end with the real agents: `lab up --mode
// ct-sync` (labStart, as the CLI), `lab check` passes; then mode changes committed to the lab's
// Git repository (ct-sync -> stateless-nat -> full-nat -> ct-sync) converge both nodes without
// restarting the lab, conntrackd is started and stopped by the agents' settings phase, and `lab
// check` passes after each with the mode's expectations (src/lab/check.ts forwardSourceSeen).
// br_netfilter on. Prefix cgwt<pid>lm-; `lab down` in afterAll. Needs root and a built dist/.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import type { NatMode } from '../src/state/types.js';
import { labCheck, labStart, type Lab } from '../src/lab/lab.js';
import { labDown, labNamespaces, labRunDir } from '../src/lab/topology.js';
import { nodeSettled, readNodeStatus } from '../src/lab/status.js';
import { namespacePids } from '../src/netns/netns.js';
import { delay, processCmdline } from '../src/proc/process.js';
import { gitCli } from './helpers/git-server.js';
import { STATE_DIR } from './helpers/modes-lab.js';

const CONVERGE_MS = 30_000;

describe('lab in every NAT mode, switched through Git', () => {
  const prefix = `cgwt${process.pid}lm-`;
  let tmp: string;
  let lab: Lab;
  let clone: string;
  const placement = { node1: ['guest1'], node2: ['guest2'] };

  async function setMode(mode: NatMode): Promise<string> {
    const file = path.join(clone, 'cluster.yaml');
    const doc = parseDocument(await readFile(file, 'utf8'));
    doc.setIn(['nat', 'mode'], mode);
    await writeFile(file, doc.toString());
    // stateless-nat needs a natTag per node (validation refuses the commit otherwise); harmless in the others.
    for (const [i, n] of lab.plan.nodes.entries()) {
      const nodeFile = path.join(clone, 'nodes', `${n.name}.yaml`);
      const nd = parseDocument(await readFile(nodeFile, 'utf8'));
      if (!nd.has('natTag')) nd.set('natTag', i + 1);
      await writeFile(nodeFile, nd.toString());
    }
    await gitCli(['-c', 'user.name=lab test', '-c', 'user.email=test@example.org', 'commit', '--quiet', '-am', `nat.mode ${mode}`], clone);
    await gitCli(['push', '--quiet', 'origin', 'HEAD:main'], clone);
    const revision = await gitCli(['rev-parse', 'HEAD'], clone);
    const t0 = Date.now();
    for (;;) {
      const settled = await Promise.all(lab.plan.nodes.map(async (n) => nodeSettled(await readNodeStatus(lab.repo, n.name), revision, placement[n.name as 'node1'])));
      if (settled.every(Boolean)) return revision;
      if (Date.now() - t0 > CONVERGE_MS) throw new Error(`nodes did not apply ${mode} (${revision.slice(0, 12)}) within ${CONVERGE_MS} ms`);
      await delay(100);
    }
  }

  /** conntrackd processes in each node namespace. */
  async function conntrackds(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const n of lab.plan.nodes) {
      const pids = await namespacePids(n.ns);
      // Daemons only: each agent cycle also runs `conntrackd -C <conf> -s` (its health query) in
      // the namespace, which a loaded machine keeps alive long enough to be counted.
      const daemon = (cmd: string[] | undefined) => !!cmd?.[0]?.endsWith('conntrackd') && !cmd.includes('-s');
      out[n.name] = pids.filter((p) => daemon(processCmdline(p))).length;
    }
    return out;
  }

  async function checkPasses(expectFrom: (node: string) => string, answeredThrough: string): Promise<void> {
    const report = await labCheck(prefix, { runRoot: tmp, timeoutS: 5 });
    const failed = report.results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.detail}`);
    expect(failed).toEqual([]);
    // The source the guest saw, per mode: the web forwards cross nodes.
    const web1 = report.results.find((r) => r.name.startsWith('web-node1'))!;
    expect(web1.detail).toBe(`this is guest2 OK from ${expectFrom('node1')} via http/80`);
    // ... and which node's uplink sent the reply (the first data segment's Ethernet source at the client).
    const paths = report.results.filter((r) => r.name.startsWith('reply path: ')).map((r) => r.name);
    expect(paths).toHaveLength(2);
    expect(paths.find((n) => n.includes('entering node1'))).toMatch(new RegExp(`answered through ${answeredThrough}$`));
  }

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'cgw-e2e-modes-'));
    lab = await labStart({ prefix, brNetfilter: true, mode: 'ct-sync', stateDir: STATE_DIR, runRoot: tmp, readyTimeoutMs: 45_000 });
    clone = path.join(tmp, 'clone');
    await gitCli(['clone', '--quiet', lab.url, clone]);
  }, 90_000);

  afterAll(async () => {
    if ((await labNamespaces(prefix)).length > 0 || existsSync(labRunDir(prefix, { runRoot: tmp }))) await labDown(prefix, { runRoot: tmp });
    expect(await labNamespaces(prefix)).toEqual([]);
    await rm(tmp, { recursive: true, force: true });
  }, 60_000);

  const client = () => lab.plan.client.ip;
  const nodeIP = (name: string) => lab.plan.nodes.find((n) => n.name === name)!.nodeIP;

  it('lab up --mode ct-sync: the agents run conntrackd on both nodes and lab check passes', async () => {
    expect(lab.state.cluster.nat.mode).toBe('ct-sync');
    expect(await conntrackds()).toEqual({ node1: 1, node2: 1 });
    await checkPasses(client, 'node2');
  }, 60_000);

  it('ct-sync -> stateless-nat through Git: conntrackd stopped, lab check passes with the client address', async () => {
    await setMode('stateless-nat');
    expect(await conntrackds()).toEqual({ node1: 0, node2: 0 });
    await checkPasses(client, 'node2');
  }, 60_000);

  it('-> full-nat: the guest sees the entering node again', async () => {
    await setMode('full-nat');
    await checkPasses(nodeIP, 'node1');
  }, 60_000);

  it('-> ct-sync again: conntrackd started by the agents, lab check passes', async () => {
    await setMode('ct-sync');
    expect(await conntrackds()).toEqual({ node1: 1, node2: 1 });
    await checkPasses(client, 'node2');
  }, 60_000);
});
