// The agent as processes: the cross-process lock, kill -9 in the middle of a cycle followed by a
// clean convergence, `cgw-sync run` (schedule, stop, SIGTERM). Real git smart-HTTP server, real
// nft in one network namespace per agent; the CLI runs from dist/ (built by scripts/install.sh,
// or `npx tsc -p tsconfig.json`).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LockBusy } from '../src/agent/lock.js';
import { agentPaths } from '../src/agent/memory.js';
import { startAgent } from '../src/agent/run.js';
import { main } from '../src/cli/main.js';
import { processAlive, processStartTime, waitUntil } from '../src/proc/process.js';
import type { FileMap } from '../src/git/tree.js';
import { commitFiles, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { spawnCliJson } from './helpers/cli.js';
import { CLI_BIN, PROJECT_ROOT, capture, mainTip, readPublished, startTestAgent, stateExampleFiles, withExtraForward, type TestAgent } from './helpers/agent-fixture.js';

/** Processes a test started; killed by PID in afterEach whatever happened. */
const started = new Set<ChildProcess>();
function track(child: ChildProcess): ChildProcess {
  started.add(child);
  child.once('exit', () => started.delete(child));
  return child;
}
const strayPids = new Set<number>();
afterEach(async () => {
  for (const child of started) child.kill('SIGKILL');
  await Promise.all([...started].map((c) => once(c, 'exit')));
  for (const pid of strayPids) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
  strayPids.clear();
});

function requireBuild(): void {
  if (!existsSync(CLI_BIN)) throw new Error(`${CLI_BIN} is missing: build first (npm run build, or scripts/install.sh)`);
}

describe('agent: lock across processes', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
    agent = await startTestAgent(fx, 'node1');
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  it('a lock held by a live process makes the cycle fail with LockBusy; once it dies, the lock is taken over', async () => {
    const lockFile = agentPaths(agent.config.stateDir).lock;
    await mkdir(path.dirname(lockFile), { recursive: true });
    const holder = track(spawn('sleep', ['30'], { stdio: 'ignore' }));
    const pid = holder.pid!;
    await writeFile(lockFile, JSON.stringify({ pid, startTime: processStartTime(pid), since: new Date().toISOString() }));

    const err = await agent.cycle().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockBusy);
    expect((err as LockBusy).owner.pid).toBe(pid);
    // The CLI says so and fails; nothing was applied or published.
    const io = capture();
    expect(await main(['once', '--config', agent.configFile], io)).toBe(1);
    expect(io.errText).toContain(`another cgw-sync cycle holds ${lockFile} (pid ${pid}`);
    expect(await agent.tables()).toEqual([]);
    expect(await readPublished(fx, 'node1')).toBeUndefined();

    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const status = await agent.cycle();
    expect(status.outcome).toBe('applied');
    expect(status.notes).toContain(`took over a stale lock of pid ${pid}`);
    expect(existsSync(lockFile)).toBe(false);
  });

  it('a lock whose PID now belongs to another process (start time differs) is stale', async () => {
    const lockFile = agentPaths(agent.config.stateDir).lock;
    // This very process is alive, but it is not the process that wrote the lock.
    await writeFile(lockFile, JSON.stringify({ pid: process.pid, startTime: '1', since: '2020-01-01T00:00:00Z' }));
    const status = await agent.cycle();
    expect(status.outcome).toBe('converged');
    expect(status.notes).toContain(`took over a stale lock of pid ${process.pid}`);
  });
});

describe('agent: lock under contention', () => {
  let dir: string;
  beforeAll(async () => {
    requireBuild();
    dir = await mkdtemp(path.join(tmpdir(), 'cgw-lock-race-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('processes racing for a free or a stale lock: exactly one wins each round', async () => {
    // Each contender spins until the same instant and tries the lock, then leaves a marker. The
    // winner holds the lock until all have tried (bounded): a contender that starts late on a
    // loaded machine still meets the held lock, instead of winning a second time after a release.
    const contender = path.join(dir, 'contender.mjs');
    await writeFile(
      contender,
      `import { acquireLock } from ${JSON.stringify(path.join(PROJECT_ROOT, 'dist/agent/lock.js'))};\n` +
        `import { readdirSync, writeFileSync } from 'node:fs';\nimport { basename, dirname } from 'node:path';\n` +
        `const [file, at, n] = process.argv.slice(2);\nwhile (Date.now() < Number(at)) {}\n` +
        `const tried = () => readdirSync(dirname(file)).filter((f) => f.startsWith(basename(file) + '.tried.')).length;\n` +
        `let lock;\ntry { lock = await acquireLock(file); console.log('won'); }\n` +
        `catch (e) { console.log(e.name === 'LockBusy' ? 'busy' : 'error ' + e.message); }\n` +
        `writeFileSync(file + '.tried.' + process.pid, '');\n` +
        `for (const end = Date.now() + 15000; lock && tried() < Number(n) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));\n` +
        `await lock?.release();\n`,
    );
    const dead = spawn('true');
    await once(dead, 'exit');
    for (let round = 0; round < 6; round++) {
      const file = path.join(dir, `lock-${round}`);
      // Odd rounds start from a stale lock (its owner has exited), even rounds from none.
      if (round % 2) await writeFile(file, JSON.stringify({ pid: dead.pid, startTime: '1', since: '2020-01-01T00:00:00Z' }));
      const at = String(Date.now() + 400);
      const results = await Promise.all(Array.from({ length: 4 }, () => execa(process.execPath, [contender, file, at, '4'], { timeout: 20_000 })));
      const outcomes = results.map((r) => r.stdout.trim()).sort();
      expect(outcomes, `round ${round}`).toEqual(['busy', 'busy', 'busy', 'won']);
      expect(existsSync(file)).toBe(false);
    }
  });
});

describe('agent: kill -9 during an apply', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  let files: FileMap;
  let hooksDir: string;
  beforeAll(async () => {
    requireBuild();
    files = await stateExampleFiles();
    fx = await startGitFixture({ files });
    hooksDir = path.join(await fx.tmp('kill9'), 'hooks');
    await mkdir(hooksDir);
    agent = await startTestAgent(fx, 'node1', { hooksDir });
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  /**
   * Install a `phase` hook that, the first time only, writes its PID to a marker and hangs; start
   * `cgw-sync once` as a child process, wait for the marker, then kill -9 the agent and the hook.
   * Returns the killed agent's PID.
   */
  async function killDuringHook(phase: 'pre-apply' | 'post-apply'): Promise<number> {
    const marker = path.join(path.dirname(hooksDir), `${phase}.pid`);
    await writeFile(path.join(hooksDir, phase), `#!/bin/sh\n[ -e ${marker} ] && exit 0\necho $$ > ${marker}.tmp && mv ${marker}.tmp ${marker}\nexec sleep 30\n`);
    await chmod(path.join(hooksDir, phase), 0o755);
    // TMPDIR inside the fixture: the killed agent cannot remove its hook's temporary plan file.
    const tmp = await fx.tmp('tmpdir');
    const victim = track(spawn(process.execPath, [CLI_BIN, 'once', '--config', agent.configFile], { stdio: 'ignore', env: { ...process.env, TMPDIR: tmp } }));
    const exited = once(victim, 'exit');
    // Waiting for an external event: the hook announcing itself.
    expect(await waitUntil(() => existsSync(marker), 20_000)).toBe(true);
    const hookPid = Number((await readFile(marker, 'utf8')).trim());
    strayPids.add(hookPid);
    expect(JSON.parse(await readFile(agentPaths(agent.config.stateDir).lock, 'utf8')).pid).toBe(victim.pid);
    victim.kill('SIGKILL');
    expect(await exited).toEqual([null, 'SIGKILL']);
    process.kill(hookPid, 'SIGKILL');
    expect(await waitUntil(() => !processAlive(hookPid), 5_000)).toBe(true);
    return victim.pid!;
  }

  /** A fresh `cgw-sync once` process; returns its log line. */
  async function onceCli(): Promise<Record<string, unknown>> {
    const r = await execa(process.execPath, [CLI_BIN, 'once', '--config', agent.configFile, '--log', 'json'], { reject: false, timeout: 30_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  }

  it('killed before the nft transaction: a fresh `once` takes the stale lock over and converges', async () => {
    const lockFile = agentPaths(agent.config.stateDir).lock;
    const victim = await killDuringHook('pre-apply');
    // Killed before the nft transaction: nothing applied, the lock left behind.
    expect(await agent.tables()).toEqual([]);
    expect(existsSync(lockFile)).toBe(true);

    expect(await onceCli()).toMatchObject({ node: 'node1', outcome: 'applied', revision: await mainTip(fx), published: 'committed' });
    expect(await agent.tables()).toEqual(['ip cgw_nat', 'netdev cgw_arp']);
    expect(await agent.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp'])).toContain('2201 : 10.5.5.201 . 22');
    expect(existsSync(lockFile)).toBe(false);
    const published = await readPublished(fx, 'node1');
    expect(published?.json.notes).toContain(`took over a stale lock of pid ${victim}`);

    // And the next cycle finds nothing to do.
    expect((await agent.cycle()).outcome).toBe('converged');
  });

  it('killed after the nft transaction: the next cycle converges and does not call its own change drift', async () => {
    const next = await commitFiles(fx.repo, withExtraForward(files, 'extra', 2299));
    const victim = await killDuringHook('post-apply');
    // The transaction went through; the agent died before recording it.
    expect(await agent.ns.raw(['list', 'map', 'ip', 'cgw_nat', 'fwd_tcp'])).toContain('2299 : 10.5.5.201 . 22');

    expect(await onceCli()).toMatchObject({ outcome: 'converged', revision: next, drift: [], published: 'committed' });
    const published = await readPublished(fx, 'node1');
    expect(published?.json).toMatchObject({ outcome: 'converged', appliedRevision: next, drift: { items: [] } });
    expect(published?.json.notes).toContain(`took over a stale lock of pid ${victim}`);
    // Hand-made drift is still found afterwards: the interrupted apply left no trace.
    await agent.ns.raw(['delete', 'element', 'ip', 'cgw_nat', 'fwd_tcp', '{ 2299 }']);
    const status = await agent.cycle();
    expect(status.drift).toMatchObject({ corrected: true, items: [expect.objectContaining({ kind: 'elements-changed' })] });
  });
});

describe('agent: cgw-sync run', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  beforeAll(async () => {
    requireBuild();
    fx = await startGitFixture({ files: await stateExampleFiles() });
    // Every second, no jitter: the schedule is visible within a test.
    agent = await startTestAgent(fx, 'node1', { schedule: { cron: '* * * * * *', jitterSeconds: 0 } });
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  it('cycles at start and on schedule; stop() ends it cleanly between cycles', async () => {
    const logs: Record<string, unknown>[] = [];
    const running = startAgent({ config: agent.config, nft: agent.ns.nft, log: (l) => logs.push(l) });
    const cycles = () => logs.filter((l) => l.outcome === 'applied' || l.outcome === 'converged');
    try {
      expect(await waitUntil(() => cycles().length >= 2, 15_000)).toBe(true);
    } finally {
      await running.stop();
    }
    await running.done;
    expect(cycles()[0]).toMatchObject({ outcome: 'applied' }); // at start
    expect(cycles()[1]).toMatchObject({ outcome: 'converged', published: 'unchanged' }); // scheduled
    expect(logs.at(-1)).toMatchObject({ outcome: 'stopped', cycles: running.cycles() });
    expect(logs.filter((l) => l.outcome === 'error' || l.outcome === 'skipped')).toEqual([]);
    // Stopped means stopped: no cycle after stop(), although the schedule says every second.
    const count = running.cycles();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(running.cycles()).toBe(count);
  });

  it('the CLI process stops on SIGTERM with exit 0 and a final log line', async () => {
    const { child, lines, stderr, exited } = spawnCliJson(['run', '--config', agent.configFile, '--log', 'json']);
    track(child);
    expect(await waitUntil(() => lines.some((l) => l.outcome === 'converged'), 15_000), stderr()).toBe(true);
    child.kill('SIGTERM');
    expect(await exited).toEqual([0, null]);
    expect(lines.at(-1)).toMatchObject({ node: 'node1', outcome: 'stopped' });
    expect(stderr()).toBe('');
  });
});
