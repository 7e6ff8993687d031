// An agent killed (SIGKILL) in the middle of a rollback, with real parts: a real Git server, the
// built CLI's `once` as the agent process, real nft in the node's namespace, the guest's service
// on its guest bridge. The kill lands at a known point: the node's nft is a wrapper that, once
// armed, blocks the second transaction (the first is the bad apply, the second the restore) and
// writes its PID where the test waits for it. The next start must restore the previous revision
// and keep holding the bad one; `status --all --markdown` then shows the fleet.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { NodeStatus } from '../src/agent/report.js';
import { agentPaths, readMemory } from '../src/agent/memory.js';
import { waitUntil } from '../src/proc/process.js';
import { commitFiles, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { CLI_BIN, mainTip, PROJECT_ROOT, readPublished, startTestAgent, stateExampleFiles, type TestAgent } from './helpers/agent-fixture.js';
import { checkedState, serveGuestsIn, type ServedNode } from './helpers/health-node.js';
import { cliBin } from './helpers/cli.js';

const fwdMap = (a: TestAgent) => a.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp']);

/**
 * An nft that passes everything through; while `<dir>/arm` exists it counts batches (`-f`) and
 * blocks the second one: it writes its PID to `<dir>/blocked` and sleeps (the same PID: exec).
 */
function blockingNft(dir: string): string {
  return `#!/bin/sh
d='${dir}'
if [ -e "$d/arm" ] && [ "$1" = "-f" ]; then
  n=$(( $(cat "$d/count" 2>/dev/null || echo 0) + 1 ))
  echo "$n" > "$d/count"
  if [ "$n" = 2 ]; then echo $$ > "$d/blocked.tmp" && mv "$d/blocked.tmp" "$d/blocked"; exec sleep 300; fi
fi
exec nft "$@"
`;
}

/** `cgw-sync once --json` as a child process of this test. */
function startOnce(configFile: string): { child: ChildProcess; out: () => string } {
  const child = spawn(process.execPath, [CLI_BIN, 'once', '--json', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.resume();
  return { child, out: () => out };
}

async function onceJson(configFile: string): Promise<{ code: number | null; status: NodeStatus }> {
  const run = startOnce(configFile);
  const [code] = (await once(run.child, 'exit')) as [number | null];
  return { code, status: JSON.parse(run.out()) as NodeStatus };
}

describe('an agent killed mid-rollback converges on its next start', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  let served: ServedNode;
  let wrapDir: string;
  const started: number[] = [];
  beforeAll(async () => {
    fx = await startGitFixture({ files: checkedState(await stateExampleFiles()) });
    wrapDir = await fx.tmp('nft-wrapper');
    const nft = path.join(wrapDir, 'nft');
    await writeFile(nft, blockingNft(wrapDir));
    await chmod(nft, 0o755);
    agent = await startTestAgent(fx, 'node1', { nft });
    served = await serveGuestsIn(agent.ns, ['10.5.5.251', '10.5.5.254', '10.5.5.201']);
  });
  afterAll(async () => {
    // Whatever is left of the processes this test started, by PID.
    for (const pid of started) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await served?.stop();
    await agent?.destroy();
    await fx?.cleanup();
  });

  let good: string;
  let bad: string;
  it('applies a healthy revision', async () => {
    const { code, status } = await onceJson(agent.configFile);
    expect(code).toBe(0);
    expect(status).toMatchObject({ outcome: 'applied', health: { state: 'healthy' } });
    good = await mainTip(fx);
    expect(status.appliedRevision).toBe(good);
  });

  it('is killed by SIGKILL while restoring: the bad revision is still live, the hold is on disk', async () => {
    bad = await commitFiles(fx.repo, checkedState(await stateExampleFiles(), 2222), { message: 'ssh-guest1 to a closed port' });
    await writeFile(path.join(wrapDir, 'arm'), '');
    const run = startOnce(agent.configFile);
    started.push(run.child.pid!);
    const exited = once(run.child, 'exit');
    // The restore's transaction has started (the checks failed, the rollback is decided): kill.
    const blocked = path.join(wrapDir, 'blocked');
    const reached = await waitUntil(async () => (await readFile(blocked, 'utf8').catch(() => '')).trim() !== '' || run.child.exitCode !== null, 60_000, 50);
    expect(reached).toBe(true);
    expect(run.child.exitCode, `the cycle ended before its restore: ${run.out()}`).toBeNull();
    run.child.kill('SIGKILL');
    const [, signal] = (await exited) as [number | null, string | null];
    expect(signal).toBe('SIGKILL');
    const sleeper = Number((await readFile(blocked, 'utf8')).trim());
    started.push(sleeper);
    process.kill(sleeper, 'SIGKILL');
    await rm(path.join(wrapDir, 'arm'));

    // Mid-rollback: the bad revision's ruleset is what runs, nothing was reported.
    expect(await fwdMap(agent)).toContain('2201 : 10.5.5.201 . 2222');
    const memory = await readMemory(agent.config.stateDir);
    expect(memory.applied?.revision).toBe(good);
    expect(memory.held).toMatchObject({ revision: bad, reason: 'forward ssh-guest1: ECONNREFUSED' });
    expect(memory.applying?.revision).toBe(bad);
    expect((await readPublished(fx, 'node1'))?.json.appliedRevision).toBe(good);
    expect((await readPublished(fx, 'node1'))?.json.outcome).toBe('applied');
  });

  it('the next start restores the previous revision, holds the bad one, and calls it no drift', async () => {
    const { code, status } = await onceJson(agent.configFile);
    expect(code).toBe(0);
    expect(status.appliedRevision).toBe(good);
    expect(status.held?.revision).toBe(bad);
    expect(status.source.fetched).toBe(bad);
    expect(status.drift.items).toEqual([]);
    expect(status.health?.state).toBe('healthy');
    const map = await fwdMap(agent);
    expect(map).toContain('2201 : 10.5.5.201 . 22');
    expect(map).not.toContain('2222');
    // The killed cycle's stale lock was taken over, not waited for.
    expect(JSON.stringify(status.notes ?? [])).toMatch(/lock/);
    await expect(readFile(agentPaths(agent.config.stateDir).lock, 'utf8')).rejects.toThrow(/ENOENT/);
  });

  it('a further start keeps it: converged at the previous revision, the bad one not tried', async () => {
    const { code, status } = await onceJson(agent.configFile);
    expect(code).toBe(0);
    expect(status).toMatchObject({ outcome: 'converged', appliedRevision: good, held: { revision: bad } });
    expect(status.plan?.changed).toBe(false);
    expect(Number((await readFile(path.join(wrapDir, 'count'), 'utf8')).trim())).toBe(2);
  });

  it('status --all --markdown: one row per node, the held revision, the silent node; exit 1', async () => {
    const r = await cliBin(['status', '--all', '--markdown', '--state', path.join(PROJECT_ROOT, 'state-example'), '--config', agent.configFile, '--max-age', '600']);
    expect(r.code).toBe(1);
    const lines = r.out.trim().split('\n');
    expect(lines[0]).toBe(`| node | outcome | applied revision (main \`${bad.slice(0, 12)}\`) | age of report | drift | health | waiting / halted / suspended |`);
    expect(lines[1]).toBe('|---|---|---|---|---|---|---|');
    expect(lines[2]).toMatch(new RegExp(`^\\| node1 \\| (applied|converged) \\| \`${good.slice(0, 12)}\` behind main \\| \\d+s \\| none \\| healthy \\| unverified report; holding back ${bad.slice(0, 12)}: forward ssh-guest1: ECONNREFUSED \\|$`));
    expect(lines[3]).toBe('| node2 | silent | - | - | - | - | never reported |');
    expect(lines.at(-1)).toBe('**1 node(s) need attention:** node2: never reported');
  });
});
