// The CLI and the agent are one reconciler: the same state gives the same plan document from
// `cgw-sync plan --json --config` as the agent's pre-apply hook receives, and a hand-run
// `cgw-sync apply` waits for the node lock an agent cycle holds (or fails clearly). Real nft in
// a namespace this file creates (cgwt-cliag-<pid>-<rand>); the built CLI.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { stringify } from 'yaml';
import { loadAgentConfig, type AgentConfig } from '../src/agent/config.js';
import { runOnce } from '../src/agent/cycle.js';
import { acquireLock } from '../src/agent/lock.js';
import { agentPaths } from '../src/agent/memory.js';
import { formatPlanText, planJson, type NodePlan } from '../src/plan/plan.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';
import { CLI_BIN, PROJECT_ROOT } from './helpers/agent-fixture.js';

describe('CLI and agent: one plan, one lock', () => {
  let env: NftNamespace;
  let tmp: string;
  let state: string;
  let configFile: string;
  let config: AgentConfig;
  const seen = () => join(tmp, 'seen-plan.json');
  const cli = (args: string[]) => execa(process.execPath, [CLI_BIN, ...args, '--config', configFile, '--state', state], { reject: false });

  beforeAll(async () => {
    if (!existsSync(CLI_BIN)) throw new Error(`${CLI_BIN} is missing: run \`npm run build\``);
    env = await nftNamespace('cliag');
    tmp = await mkdtemp(join(tmpdir(), 'cgw-cliag-'));
    state = join(tmp, 'state');
    await cp(join(PROJECT_ROOT, 'state-example'), state, { recursive: true });
    const hooks = join(tmp, 'hooks');
    await mkdir(hooks);
    // Records the plan it is given and vetoes, so the agent's cycle changes nothing.
    await writeFile(join(hooks, 'pre-apply'), `#!/bin/sh\ncat > ${seen()}\nexit 1\n`);
    await chmod(join(hooks, 'pre-apply'), 0o755);
    configFile = join(tmp, 'agent.yaml');
    const doc = { apiVersion: 'cgw-sync/v1', kind: 'AgentConfig', node: 'node1', source: { url: state }, stateDir: join(tmp, 'node'), netns: env.ns, hooksDir: hooks, guests: { enabled: false } };
    await writeFile(configFile, stringify(doc));
    config = await loadAgentConfig(configFile);
  });
  afterAll(async () => {
    await env?.destroy();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('the same state gives the same plan, text and JSON, from `plan` and in the agent (its hook, its NodePlan)', async () => {
    const plans: NodePlan[] = [];
    const status = await runOnce({ config, nft: env.nft, onPlan: (p) => plans.push(p) });
    expect(status.outcome).toBe('vetoed');
    expect(plans).toHaveLength(1);
    const agentPlan = JSON.parse(await readFile(seen(), 'utf8'));
    expect(agentPlan).toEqual(planJson(plans[0]!));
    const r = await cli(['plan', '--json']);
    expect(r.exitCode, r.stderr).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual(agentPlan);
    expect(agentPlan).toMatchObject({ node: 'node1', revision: status.source.fetched, changed: true, settings: { changed: true } });
    const text = await cli(['plan']);
    // execa strips the final newline of stdout.
    expect(text.stdout).toBe(formatPlanText(plans[0]!).trimEnd());
    expect(text.stdout).toContain(`cgw-sync plan for node node1 at revision ${status.source.fetched}`);
  });

  it('apply waits for the lock an agent cycle holds, then applies; with a short wait it fails clearly', async () => {
    const lock = await acquireLock(agentPaths(config.stateDir).lock);
    let released = false;
    try {
      const short = await cli(['apply', '--no-hooks', '--lock-wait', '0']);
      expect(short.exitCode).toBe(1);
      expect(short.stderr).toMatch(/another cgw-sync cycle holds .*agent\.lock \(pid \d+, .*waited 0 s, giving up \(nothing was changed\)/);
      expect(await env.raw(['list', 'tables'])).toBe('');

      const waiting = execa(process.execPath, [CLI_BIN, 'apply', '--no-hooks', '--lock-wait', '30', '--config', configFile, '--state', state], { reject: false });
      // The event: the CLI says it is waiting for the lock.
      await new Promise<void>((resolve, reject) => {
        let buf = '';
        waiting.stderr?.on('data', (d: Buffer) => {
          buf += d.toString();
          if (buf.includes('waiting up to 30 s for the node lock')) resolve();
        });
        void waiting.then(() => reject(new Error(`apply ended without waiting: ${buf}`)));
      });
      expect(await env.raw(['list', 'tables'])).toBe('');
      await lock.release();
      released = true;
      const r = await waiting;
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(await env.raw(['list', 'tables'])).toContain('table ip cgw_nat');
      expect((await cli(['plan'])).exitCode).toBe(0);
    } finally {
      if (!released) await lock.release();
    }
  });
});
