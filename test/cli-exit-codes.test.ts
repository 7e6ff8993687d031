// The README's exit-code table is what the program does: every cell of the table is produced
// here by the built binary against real parts (nft in namespaces this file creates, the real Git
// smart-HTTP server on 127.0.0.1, a real lab), and each command's --help shows the same meanings.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { commands } from '../src/cli/main.js';
import { labDown } from '../src/lab/topology.js';
import { run } from '../src/netns/netns.js';
import { gitCli, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { CLI_BIN, PROJECT_ROOT, startTestAgent, stateExampleFiles, type TestAgent } from './helpers/agent-fixture.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';
import { cliBin, type CliResult } from './helpers/cli.js';
import { editedRepo } from './helpers/verify-run.js';
import { inBatches } from './helpers/hostile-state.js';

const EXAMPLE = path.join(PROJECT_ROOT, 'state-example');
const LAB_PREFIX = `cgwt${process.pid}ec-`;

/** The README's exit-code table: command -> code -> meaning. */
async function readmeExitCodes(): Promise<Map<string, Record<number, string>>> {
  const readme = await readFile(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
  const table = readme.slice(readme.indexOf('### Exit codes'));
  const rows = [...table.matchAll(/^\| `([^`]+)` \|(.*)\|$/gm)].map((m) => {
    const cells = (m[2] as string).split(' | ').map((c) => c.trim());
    return [m[1] as string, Object.fromEntries(cells.flatMap((c, code) => (c ? [[code, c]] : [])))] as const;
  });
  return new Map(rows);
}

let tmp: string;
let fx: GitFixture;
let denied: GitFixture;
const agents: TestAgent[] = [];
const namespaces: NftNamespace[] = [];

async function freshNs(tag: string): Promise<NftNamespace> {
  const ns = await nftNamespace(tag);
  namespaces.push(ns);
  return ns;
}

async function agent(f: GitFixture, extra: Record<string, unknown>, node = 'node1'): Promise<TestAgent> {
  const a = await startTestAgent(f, node, extra);
  agents.push(a);
  return a;
}

const onceCli = (a: TestAgent) => cliBin(['once', '--config', a.configFile]);

/** An agent config for plan/apply by hand with a pre-apply hook that vetoes. */
async function vetoConfig(ns: string): Promise<string> {
  const hooks = path.join(tmp, 'veto-hooks');
  await mkdir(hooks, { recursive: true });
  await writeFile(path.join(hooks, 'pre-apply'), '#!/bin/sh\necho "not today" >&2\nexit 1\n');
  await chmod(path.join(hooks, 'pre-apply'), 0o755);
  const file = path.join(tmp, 'veto.yaml');
  await writeFile(file, stringify({ apiVersion: 'cgw-sync/v1', kind: 'AgentConfig', node: 'node1', source: { url: EXAMPLE }, stateDir: path.join(tmp, 'veto-state'), netns: ns, hooksDir: hooks, guests: { enabled: false } }));
  return file;
}

/** A node's own agent config for suspend/resume: only its state dir is used. */
async function suspendConfig(): Promise<{ file: string; stateDir: string }> {
  const stateDir = path.join(tmp, 'suspend-state');
  await mkdir(stateDir, { recursive: true });
  const file = path.join(tmp, 'suspend.yaml');
  await writeFile(file, stringify({ apiVersion: 'cgw-sync/v1', kind: 'AgentConfig', node: 'node1', source: { url: EXAMPLE }, stateDir }));
  return { file, stateDir };
}

/** `run` until its first cycle line, then SIGTERM: the exit code and every line it printed. */
async function runUntilFirstCycle(configFile: string): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI_BIN, 'run', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = once(child, 'exit');
  await new Promise<void>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (/^node1: /m.test(out)) resolve();
    });
    child.once('exit', () => resolve());
  });
  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  return { code: code ?? -1, out, err };
}

/** Every cell of the table, as the real program produces it. Run in the table's order. */
const CASES: Record<string, () => Promise<CliResult>> = {
  'validate 0': () => cliBin(['validate', '--state', EXAMPLE]),
  'validate 1': async () => {
    const bad = path.join(tmp, 'bad-state');
    await cp(EXAMPLE, bad, { recursive: true });
    await writeFile(path.join(bad, 'forwards', 'web.yaml'), 'apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n  - { name: x, port: 1\n');
    return cliBin(['validate', '--state', bad]);
  },
  'render 0': () => cliBin(['render', '--state', EXAMPLE, '--node', 'node1']),
  'render 1': () => cliBin(['render', '--state', EXAMPLE, '--node', 'node9']),
  'plan 0': async () => {
    const ns = await freshNs('ecp0');
    expect((await cliBin(['apply', '--state', EXAMPLE, '--node', 'node1', '--state-dir', path.join(tmp, 'p0')], { ns: ns.ns })).code).toBe(0);
    return cliBin(['plan', '--state', EXAMPLE, '--node', 'node1', '--state-dir', path.join(tmp, 'p0')], { ns: ns.ns });
  },
  'plan 1': () => cliBin(['plan', '--state', EXAMPLE, '--node', 'node9']),
  'plan 2': async () => cliBin(['plan', '--state', EXAMPLE, '--node', 'node1', '--state-dir', path.join(tmp, 'p2')], { ns: (await freshNs('ecp2')).ns }),
  'verify 0': async () => {
    const repo = await editedRepo(tmp, []);
    const r = await cliBin(['verify', '--rev', 'main', '--state', repo], { timeoutMs: 180_000 });
    expect(r.out).toMatch(/^### cgw-sync verify `[0-9a-f]{12}`: passed$/m);
    return r;
  },
  'verify 1': async () => {
    // Refused before anything is built: node1's uplink takes the name of the lab's own port.
    const repo = await editedRepo(tmp, [['nodes/node1.yaml', 'interface: xenbr0', 'interface: pub0']]);
    const r = await cliBin(['verify', '--rev', 'main', '--state', repo]);
    expect(r.out).toContain('NOT RUN: verify cannot run this state');
    return r;
  },
  'apply 0': async () => {
    const ns = await freshNs('eca0');
    const r = await cliBin(['apply', '--state', EXAMPLE, '--node', 'node1', '--state-dir', path.join(tmp, 'a0')], { ns: ns.ns });
    expect(await ns.raw(['list', 'tables'])).toContain('table ip cgw_nat');
    return r;
  },
  'apply 1': async () => {
    const ns = await freshNs('eca1');
    const r = await cliBin(['apply', '--state', EXAMPLE, '--config', await vetoConfig(ns.ns)]);
    expect(r.err).toContain('vetoed the apply; nothing was changed');
    expect(await ns.raw(['list', 'tables'])).toBe('');
    return r;
  },
  'once 0': async () => {
    const a = await agent(fx, { drift: 'report', status: { branch: 'status/{node}-report' } });
    const r = await onceCli(a);
    expect(r.out).toMatch(/^node1: applied [0-9a-f]{12}$/m);
    return r;
  },
  'once 1': async () => {
    // Three ways: the state is not this node's to apply, a refused push (HTTP 403), a status
    // remote nobody answers. The last two applied the tables: still an error, the node cannot report.
    const notOwned = await onceCli(await agent(fx, { ownedTables: ['ip cgw_nat'], status: { branch: 'status/{node}-owned' } }));
    expect(notOwned).toMatchObject({ code: 1, out: 'node1: error: the state names tables this node does not let cgw-sync own: netdev cgw_arp, ip cgw_raw, bridge cgw_sync (agent config ownedTables: ip cgw_nat)' }); // execa drops the final newline
    const refusedAgent = await agent(denied, {});
    const refused = await onceCli(refusedAgent);
    expect(refused.out).toMatch(/^node1: error: the report could not be published: .*HTTP 403.* \(enforcing [0-9a-f]{12}\)$/m);
    expect(await refusedAgent.tables()).toContain('ip cgw_nat');
    expect(refused.code).toBe(1);
    const closed = await onceCli(await agent(fx, { status: { url: 'http://127.0.0.1:9/state.git', branch: 'status/{node}-closed' } }));
    expect(closed.out).toMatch(/^node1: error: the report could not be published: .*ECONNREFUSED/m);
    return closed;
  },
  'once 2': async () => {
    const a = agents[0] as TestAgent; // 'once 0' applied with drift: report
    await a.ns.raw(['delete', 'table', 'netdev', 'cgw_arp']);
    const r = await onceCli(a);
    expect(r.out).toMatch(/^node1: drift reported at [0-9a-f]{12}, left in place \(drift: report\); found drift: netdev cgw_arp table-deleted$/m);
    expect(await a.tables()).not.toContain('netdev cgw_arp');
    return r;
  },
  'run 0': async () => {
    const r = await runUntilFirstCycle((agents[0] as TestAgent).configFile);
    expect(r.out.trim().split('\n').at(-1)).toMatch(/^node1: stopped after 1 cycle\(s\)$/);
    return r;
  },
  'run 1': async () => {
    const file = path.join(tmp, 'invalid-agent.yaml');
    await writeFile(file, 'apiVersion: cgw-sync/v1\nkind: AgentConfig\nsource: {}\n');
    const r = await cliBin(['run', '--config', file]);
    expect(r.err).toMatch(/\/invalid-agent\.yaml:3:\d+: source\.url: missing required property "url"$/m);
    return r;
  },
  'guest release 0': () => cliBin(['guest', 'release', 'guest2', '--from', 'node2', '--config', (agents[0] as TestAgent).configFile]),
  'guest release 1': () => cliBin(['guest', 'release', 'guest2', '--from', 'node2', '--config', path.join(tmp, 'no-such-agent.yaml')]),
  'suspend 0': async () => {
    const { file, stateDir } = await suspendConfig();
    const r = await cliBin(['suspend', '--reason', 'disk swap', '--config', file]);
    expect(JSON.parse(await readFile(path.join(stateDir, 'suspend.json'), 'utf8'))).toMatchObject({ reason: 'disk swap' });
    return r;
  },
  'suspend 1': async () => {
    // A reason with a control character is refused; nothing is written.
    const { file, stateDir } = await suspendConfig();
    await rm(path.join(stateDir, 'suspend.json'), { force: true });
    const r = await cliBin(['suspend', '--reason', 'a\u001b[2Jb', '--config', file]);
    expect(r.err).toContain('--reason must be 1-200 printable ASCII characters');
    await expect(readFile(path.join(stateDir, 'suspend.json'), 'utf8')).rejects.toThrow(/ENOENT/);
    return r;
  },
  'resume 0': async () => {
    const { file, stateDir } = await suspendConfig();
    expect((await cliBin(['suspend', '--reason', 'disk swap', '--config', file])).code).toBe(0);
    const r = await cliBin(['resume', '--config', file]);
    expect(r.out).toContain('node node1 resumed');
    await expect(readFile(path.join(stateDir, 'suspend.json'), 'utf8')).rejects.toThrow(/ENOENT/);
    return r;
  },
  'resume 1': () => cliBin(['resume', '--config', path.join(tmp, 'no-such-agent.yaml')]),
  'status 0': async () => {
    // node1 reported (once 0..2, drift reported is no problem); node2 reports to the same branches.
    const node2 = await agent(fx, { drift: 'report', status: { branch: 'status/{node}-report' } }, 'node2');
    expect((await onceCli(node2)).code).toBe(0);
    const r = await cliBin(['status', '--all', '--state', EXAMPLE, '--config', (agents[0] as TestAgent).configFile]);
    expect(r.out).toMatch(/^node1\s+\S+\s+drift-reported\s/m);
    expect(r.out).toMatch(/^node2\s+\S+\s+applied\s/m);
    return r;
  },
  'status 1': async () => {
    // The not-owned agent's branches: node1 reported an error, node2 never reported.
    const r = await cliBin(['status', '--all', '--state', EXAMPLE, '--config', (agents[1] as TestAgent).configFile]);
    expect(r.err).toMatch(/node1: error; node2: never reported/);
    return r;
  },
  'init 0': () => cliBin(['init', '--source', fx.url, '--node', 'node1', '--state', EXAMPLE, '--config', path.join(tmp, 'init', 'agent.yaml'), '--state-dir', path.join(tmp, 'init', 'state')]),
  'init 1': () => cliBin(['init', '--source', fx.url, '--node', 'node1', '--config', path.join(tmp, 'init', 'agent.yaml')]),
  'check-config 0': () => cliBin(['check-config', '--config', path.join(PROJECT_ROOT, 'systemd', 'agent.example.yaml'), '--state', EXAMPLE]),
  'check-config 1': () => cliBin(['check-config', '--config', (agents[1] as TestAgent).configFile, '--state', EXAMPLE]),
  'lab up 0': () => cliBin(['lab', 'up', '--prefix', LAB_PREFIX], { timeoutMs: 180_000 }),
  'lab up 1': async () => {
    const r = await cliBin(['lab', 'up', '--prefix', LAB_PREFIX]);
    expect(r.err).toContain(`lab ${LAB_PREFIX} already exists`);
    return r;
  },
  'lab check 0': async () => {
    // Probes have short timeouts; on a machine under heavy load one can miss. The exit code is
    // what is tested here: checked again until it passes, within a bounded time.
    const deadline = Date.now() + 120_000;
    let r = await cliBin(['lab', 'check', '--prefix', LAB_PREFIX], { timeoutMs: 180_000 });
    while (r.code !== 0 && Date.now() < deadline) r = await cliBin(['lab', 'check', '--prefix', LAB_PREFIX], { timeoutMs: 180_000 });
    expect(r.out).toMatch(/^\d+ passed, 0 failed$/m);
    // Then the fleet, as `status --all` shows it: both nodes enforce main's tip.
    const fleet = r.out.slice(r.out.indexOf('fleet (status/* branches):')).split('\n');
    expect(fleet[1]).toMatch(/^NODE\s+REVISION\s+OUTCOME\s+HEALTH\s+AGE\s+MAIN\s+DRIFT\s+NOTE$/);
    expect(fleet[2]).toMatch(/^node1\s+[0-9a-f]{12}\s+(applied|converged)\s+\S+\s+\d+[sm]\s+main\s/);
    expect(fleet[3]).toMatch(/^node2\s+[0-9a-f]{12}\s+(applied|converged)\s+\S+\s+\d+[sm]\s+main\s/);
    return r;
  },
  'lab restart 0': async () => {
    const r = await cliBin(['lab', 'restart', 'git', '--prefix', LAB_PREFIX], { timeoutMs: 120_000 });
    const url = /listens again at (\S+)$/m.exec(r.out)?.[1];
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
    // The restarted server answers the agents' URL.
    expect(await gitCli(['ls-remote', url as string, 'main'])).toMatch(/^[0-9a-f]{40}\trefs\/heads\/main$/m);
    return r;
  },
  'lab restart 1': () => cliBin(['lab', 'restart', 'git', '--prefix', `cgwt${process.pid}none-`]),
  'lab check 1': () => cliBin(['lab', 'check', '--prefix', `cgwt${process.pid}none-`]),
  'lab down 0': async () => {
    const r = await cliBin(['lab', 'down', '--prefix', LAB_PREFIX], { timeoutMs: 120_000 });
    expect((await run('ip', ['netns', 'list'])).stdout).not.toContain(LAB_PREFIX);
    return r;
  },
  // Not root: `lab down` refuses before touching anything.
  'lab down 1': () => cliBin(['lab', 'down', '--prefix', LAB_PREFIX], { uid: 65534 }),
};

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'cgw-exit-'));
  const files = await stateExampleFiles();
  fx = await startGitFixture({ files });
  // A repository that takes fetches but refuses pushes: git http-backend answers 403.
  denied = await startGitFixture({ files });
  await gitCli(['--git-dir', denied.repo, 'config', 'http.receivepack', 'false']);
});
afterAll(async () => {
  await labDown(LAB_PREFIX).catch(() => []);
  for (const a of agents) await a.destroy();
  for (const ns of namespaces) await ns.destroy();
  await fx?.cleanup();
  await denied?.cleanup();
  if (tmp) await rm(tmp, { recursive: true, force: true });
}, 120_000);

describe('exit codes: the README table, cell by cell', () => {
  it('the README has one row per command, with the meanings its --help shows', async () => {
    const table = await readmeExitCodes();
    expect([...table.keys()].sort()).toEqual(commands.map((c) => c.name).sort());
    for (const c of commands) expect(table.get(c.name), c.name).toEqual(c.exits);
    // One process per command's --help, two at a time (CI has 2 cores; each start takes seconds under load).
    await inBatches([...commands], 2, async (c) => {
      const help = await cliBin([...c.name.split(' '), '--help']);
      expect(help.out).toContain(`Exit codes: ${Object.entries(c.exits).map(([code, m]) => `${code} ${m}`).join('; ')}`);
    });
    // Every cell has a case below.
    expect(Object.keys(CASES).sort()).toEqual(commands.flatMap((c) => Object.keys(c.exits).map((code) => `${c.name} ${code}`)).sort());
  }, 120_000);

  const cells = commands.flatMap((c) => Object.entries(c.exits).map(([code, meaning]) => [c.name, Number(code), meaning] as const));
  it.each(cells)('%s exits %i: %s', async (name, code) => {
    const r = await (CASES[`${name} ${code}`] as () => Promise<CliResult>)();
    expect(r.code, `${r.out}\n${r.err}`).toBe(code);
  }, 240_000);
});
