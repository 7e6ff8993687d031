// The command line itself: every command has its own --help listing exactly its options, and
// anything a command does not take is an error naming the option and the command. No root needed.
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { commands } from '../src/cli/main.js';
import { cycleLine } from '../src/cli/human.js';
import type { NodeStatus } from '../src/agent/report.js';
import { nodeStatus } from './helpers/node-status.js';
import { cliBin, cliMain } from './helpers/cli.js';

/** The long options a help text lists under "Options:". */
function listedOptions(help: string): string[] {
  const section = help.slice(help.indexOf('\nOptions:\n'), help.indexOf('\nExit codes:'));
  return [...section.matchAll(/^ {2}(?:-\w, )?--([\w-]+)/gm)].map((m) => m[1] as string).sort();
}

describe('per-command help', () => {
  it.each(commands.map((c) => [c.name, c] as const))('`%s --help`: its own usage, exactly its options, exit 0', async (name, spec) => {
    const r = await cliMain([...name.split(' '), '--help']);
    expect(r.code).toBe(0);
    expect(r.out.startsWith(`Usage: cgw-sync ${name}`)).toBe(true);
    expect(listedOptions(r.out)).toEqual([...Object.keys(spec.options), 'help'].sort());
  });

  it('the built binary: `plan --help` and `lab up --help` differ and exit 0; `cgw-sync --help` lists every command', async () => {
    const plan = await cliBin(['plan', '--help']);
    const labUp = await cliBin(['lab', 'up', '--help']);
    expect([plan.code, labUp.code]).toEqual([0, 0]);
    expect(plan.out).toContain('--all-nodes');
    expect(plan.out).not.toContain('--br-netfilter');
    expect(labUp.out).toContain('--br-netfilter');
    expect(labUp.out).not.toContain('--all-nodes');
    const all = await cliBin(['--help']);
    expect(all.code).toBe(0);
    for (const c of commands) expect(all.out).toMatch(new RegExp(`^  ${c.name}\\b`, 'm'));
  });

  it('`--plan` is `plan`, wherever it stands', async () => {
    expect((await cliMain(['--plan', '--help'])).out).toBe((await cliMain(['plan', '--help'])).out);
    expect((await cliMain(['--help', '--plan'])).out).toBe((await cliMain(['plan', '--help'])).out);
  });

  it('a group without its subcommand: `lab --help` lists up/check/restart/down (0); `lab` alone is an error (1)', async () => {
    const help = await cliMain(['lab', '--help']);
    expect(help.code).toBe(0);
    expect(listedCommands(help.out)).toEqual(['lab check', 'lab down', 'lab restart', 'lab up']);
    const bare = await cliMain(['lab']);
    expect(bare).toMatchObject({ code: 1, err: expect.stringContaining('lab needs one of: up, check, restart, down') });
  });
});

function listedCommands(text: string): string[] {
  return [...text.matchAll(/^ {2}(\S+(?: [a-z]+)?)(?= {2}| <)/gm)].map((m) => m[1] as string).sort();
}

describe('usage errors: exit 1, naming what is wrong', () => {
  it.each([
    [['stat', '--help'], 'unknown command "stat"'],
    [['frobnicate'], 'unknown command "frobnicate"'],
    [['lab', 'frob'], 'unknown command "lab frob" (lab has: up, check, restart, down)'],
    [['lab', 'restart', 'ssh'], 'lab restart: cannot restart "ssh" (one of: git)'],
    [['suspend', '--config', '/nonexistent.yaml'], 'suspend needs --reason'],
    [['status', '--config', '/nonexistent.yaml'], 'status needs --all'],
    [['status', '--all', '--max-age', 'soon', '--config', '/nonexistent.yaml'], '--max-age must be a number of seconds'],
    [['validate', '--bogus'], 'unknown option --bogus for `validate`'],
    [['validate', '--node', 'node1'], '`validate` does not take --node (render, plan, apply, init do)'],
    [['apply', '--rev', 'x'], '`apply` does not take --rev (plan, verify do)'],
    [['lab', 'check', '--mode', 'ct-sync'], '`lab check` does not take --mode (lab up does)'],
    [['lab', 'up', '--nodes', 'three'], '--nodes must be a whole number of nodes, not three'],
    [['lab', 'up', '--nodes', '9'], '--nodes 9: the lab runs at most 8 nodes'],
    [['once', '--state', '.'], '`once` does not take --state'],
    [['plan', '--state'], "plan: Option '--state <value>' argument missing"],
    [['plan', '--rev', 'feature'], '--rev needs --all-nodes'],
    [['validate', 'extra'], '`validate` takes no argument "extra"'],
    [['guest', 'release'], '`guest release` needs <guest>'],
    [['guest', 'release', 'guest1'], 'guest release needs --from <node>'],
    [['run', '--log', 'xml', '--config', '/nonexistent.yaml'], '--log must be human or json (got "xml")'],
  ])('%j', async (args, message) => {
    const r = await cliMain(args);
    expect(r.code).toBe(1);
    expect(r.err).toContain(message);
    expect(r.out).toBe('');
  });

  // On a host without the default config file (a test machine, a node before `cgw-sync init`).
  it.skipIf(existsSync('/etc/cgw-sync/agent.yaml'))('guest release without --config and without the default file says to name it', async () => {
    const r = await cliMain(['guest', 'release', 'guest1', '--from', 'node2']);
    expect(r.code).toBe(1);
    expect(r.err).toBe("cgw-sync: guest release acts for this node's agent, and /etc/cgw-sync/agent.yaml does not exist: name the agent's configuration with --config FILE\nsee `cgw-sync guest release --help`\n");
    const named = await cliMain(['guest', 'release', 'guest1', '--from', 'node2', '--config', '/nonexistent.yaml']);
    expect(named.err).toContain('/nonexistent.yaml: cannot read the agent configuration: no such file');
    expect(named.err).not.toMatch(/ENOENT/);
  });

  it('the error points at the help of the command it is about', async () => {
    expect((await cliMain(['validate', '--bogus'])).err).toContain('see `cgw-sync validate --help`');
    expect((await cliMain(['lab', 'up', '--json'])).err).toContain('see `cgw-sync lab up --help`');
    expect((await cliMain(['stat'])).err).toContain('see `cgw-sync --help`');
    expect((await cliMain(['status'])).err).toContain('see `cgw-sync status --help`');
  });

  it('no command at all: the overview on stderr, exit 1', async () => {
    const r = await cliMain([]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('Usage: cgw-sync <command> [options]');
  });
});

describe('the human line of a cycle', () => {
  const base: NodeStatus = nodeStatus();

  it('says why, on one line, for an error, a veto, refused revisions and drift', () => {
    const invalid = 'revision b is invalid; nothing of it was applied:\nnodes/node1.yaml:3:4: uplink: bad\nnodes/node2.yaml:5:6: uplink: bad';
    expect(cycleLine({ ...base, outcome: 'error', errors: [invalid] })).toBe(`node1: error: revision b is invalid; nothing of it was applied:; nodes/node1.yaml:3:4: uplink: bad; nodes/node2.yaml:5:6: uplink: bad (enforcing ${'a'.repeat(12)})`);
    expect(cycleLine({ ...base, outcome: 'vetoed', errors: ['pre-apply hook /h/pre-apply vetoed the apply; nothing was changed'] })).toBe('node1: vetoed: pre-apply hook /h/pre-apply vetoed the apply; nothing was changed');
    expect(cycleLine({ ...base, source: { ...base.source, state: 'refused', message: 'revision c refused (unsigned): no signature' } })).toBe(`node1: converged at ${'a'.repeat(12)}; source refused: revision c refused (unsigned): no signature`);
    const drift = { items: [{ kind: 'table-deleted' as const, table: 'netdev cgw_arp', detail: '' }], corrected: false };
    expect(cycleLine({ ...base, outcome: 'drift-reported', drift })).toBe(`node1: drift reported at ${'a'.repeat(12)}, left in place (drift: report); found drift: netdev cgw_arp table-deleted`);
    expect(cycleLine({ ...base, outcome: 'applied', drift: { ...drift, corrected: true } })).toBe(`node1: applied ${'a'.repeat(12)}; corrected drift: netdev cgw_arp table-deleted`);
    expect(cycleLine({ ...base, outcome: 'converged' }).split('\n')).toHaveLength(1);
  });
});
