// The running agent's no-op cycle starts no process for the node's settings or its health checks
// until a full read is due, and drift in a sysctl is still found at the next full read (every
// schedule.fullReadSeconds). Real nft and sysctl in a namespace, a real Git server; the real
// settings port and health edge are wrapped only to count the processes they start.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentPaths } from '../src/agent/memory.js';
import { startAgent } from '../src/agent/run.js';
import type { NodeStatus } from '../src/agent/report.js';
import type { AgentConfig } from '../src/agent/config.js';
import { runIn } from '../src/netns/netns.js';
import { waitUntil } from '../src/proc/process.js';
import { hostHealthEdge, type HealthEdge } from '../src/rollout/checkpoint.js';
import { SettingsHost } from '../src/settings/host.js';
import { startGitFixture, type GitFixture } from './helpers/git-server.js';
import { startTestAgent, stateExampleFiles, type TestAgent } from './helpers/agent-fixture.js';

const DEADLINE_MS = 10_000;

/** The real settings port, counting the processes it starts. */
class CountingSettings extends SettingsHost {
  processes = 0;
  protected override exec(cmd: string, args: string[]) {
    this.processes++;
    return super.exec(cmd, args);
  }
}

/** The real health edge (interface addresses, network probes), counting its calls: each is a process. */
function countingHealth(config: AgentConfig): { edge: HealthEdge; calls: () => number } {
  const real = hostHealthEdge(config);
  let calls = 0;
  return {
    edge: {
      probe: (p) => {
        calls++;
        return real.probe(p);
      },
      addresses: (dev) => {
        calls++;
        return real.addresses(dev);
      },
    },
    calls: () => calls,
  };
}

/** A running agent on node1 of state-example, whose cron never fires: cycles come from trigger() and the nft watch. */
async function runningNode(fx: GitFixture, fullReadSeconds: number) {
  const node = await startTestAgent(fx, 'node1', { schedule: { cron: '0 0 1 1 *', jitterSeconds: 0, fullReadSeconds } });
  // As the agent's own (settingsHost): sysctl and conntrackd in the node's namespace.
  const settings = new CountingSettings({ prefix: ['ip', 'netns', 'exec', node.ns.ns], netns: node.ns.ns });
  const health = countingHealth(node.config);
  const cycles: { line: Record<string, unknown>; status: NodeStatus }[] = [];
  const agent = startAgent({ config: node.config, nft: node.ns.nft, settings, health: health.edge, log: (line, status) => status && cycles.push({ line, status }) });
  return { node, agent, settings, health, cycles };
}

type RunningNode = Awaited<ReturnType<typeof runningNode>>;

/** A fixture and a running node for one describe block, up once its first cycle applied the state. */
function useRunningNode(fullReadSeconds: number, set: (n: RunningNode) => void): void {
  let fx: GitFixture | undefined;
  let n: RunningNode | undefined;
  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
    n = await runningNode(fx, fullReadSeconds);
    set(n);
    const cycles = n.cycles;
    expect(await waitUntil(() => cycles.length >= 1, DEADLINE_MS)).toBe(true);
    expect(cycles[0]!.status.outcome).toBe('applied');
  }, 60_000);
  afterAll(async () => {
    await n?.agent.stop();
    await n?.node.destroy();
    await fx?.cleanup();
  });
}

const ipForward = async (node: TestAgent) => (await runIn(node.ns.ns, 'sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim();

describe('agent: a no-op cycle starts no process for settings or health', () => {
  let r!: RunningNode;
  useRunningNode(3600, (n) => {
    r = n;
  });

  it('the first cycle read the sysctls and ran the health round; the next one does neither and reports the same health', async () => {
    // The start did both (through the counted ports), so a zero below is not a port never used.
    expect(r.settings.processes).toBeGreaterThan(0);
    expect(r.health.calls()).toBeGreaterThan(0);
    const before = { settings: r.settings.processes, health: r.health.calls() };
    await r.agent.trigger('test: nothing new');
    const last = r.cycles.at(-1)!;
    expect(last.line.trigger).toBe('test: nothing new');
    expect(last.status.outcome).toBe('converged');
    // Nothing new to say: no commit to the status branch either.
    expect(last.line.published).toBe('unchanged');
    expect({ settings: r.settings.processes, health: r.health.calls() }).toEqual(before);
    expect(last.status.health).toEqual(r.cycles[0]!.status.health);
  });

  it('a memory.json replaced by another writer is read again, not the copy the agent carries', async () => {
    await r.agent.trigger('test: carried');
    expect(r.cycles.at(-1)!.line.published).toBe('unchanged');
    // Another writer (an operator's `cgw-sync once`, a restore) puts a different memory in place.
    const file = agentPaths(r.node.config.stateDir).memory;
    const onDisk = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    await writeFile(`${file}.other`, JSON.stringify({ ...onDisk, lastReportKey: 'written by another process' }));
    await rename(`${file}.other`, file);
    await r.agent.trigger('test: replaced');
    // The file's report key differs from this cycle's report: the report goes out again.
    expect(r.cycles.at(-1)!.line.published).toBe('committed');
    expect(r.cycles.at(-1)!.status.outcome).toBe('converged');
  });
});

describe('agent: sysctl drift is found at the next full read', () => {
  const FULL_READ_SECONDS = 2;
  let r!: RunningNode;
  useRunningNode(FULL_READ_SECONDS, (n) => {
    r = n;
  });

  it('ip_forward switched off by hand is switched on again within fullReadSeconds', async () => {
    expect(await ipForward(r.node)).toBe('1');
    const seen = r.cycles.length;
    const t0 = Date.now();
    await runIn(r.node.ns.ns, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=0']);
    const corrected = await waitUntil(async () => r.cycles.length > seen && r.cycles.at(-1)!.status.outcome === 'applied' && (await ipForward(r.node)) === '1', FULL_READ_SECONDS * 1000 + DEADLINE_MS);
    const ms = Date.now() - t0;
    expect(corrected).toBe(true);
    // The full-read interval's cycle found it (plus the time that cycle takes on a loaded machine).
    expect(String(r.cycles.at(-1)!.line.trigger)).toContain('full read');
    expect(ms).toBeLessThan(FULL_READ_SECONDS * 1000 + 3_000);
  }, 30_000);
});
