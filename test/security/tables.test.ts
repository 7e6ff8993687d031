// Adversarial group "tables": a state must never reach an nftables table cgw-sync does not own.
// Every hostile table name fails `validate` and `apply` with exit 1 and file:line:column, and the
// foreign tables of the test's namespace (ip nat, ip raw, ip filter, inet filter) stay
// byte-identical. A state that bypassed validation is still refused by the renderer, the planner
// and the batch printer; the agent's ownedTables default accepts exactly what state-example makes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadAgentConfig } from '../../src/agent/config.js';
import { DEFAULT_OWNED_TABLES, NotOwnedTable } from '../../src/nft/ownership.js';
import { Transaction } from '../../src/nft/transaction.js';
import { planNodeNft } from '../../src/reconcile/nft.js';
import { ownershipProblem } from '../../src/render/ownership.js';
import { renderNode } from '../../src/render/render.js';
import { loadState, loadStateOrThrow } from '../../src/state/load.js';
import type { ClusterState, NatMode } from '../../src/state/types.js';
import { PROJECT_ROOT, readPublished, startTestAgent, stateExampleFiles } from '../helpers/agent-fixture.js';
import { startGitFixture } from '../helpers/git-server.js';
import { cli, editedState, EXAMPLE_DIR, foreignNamespace, scratchDir, type ForeignNamespace, type StateEdit } from '../helpers/hostile-state.js';
import { stateInMode } from '../helpers/modes-lab.js';

let env: ForeignNamespace;
let scratch: Awaited<ReturnType<typeof scratchDir>>;
let foreignBefore: string;

beforeAll(async () => {
  env = await foreignNamespace('sec-tables');
  scratch = await scratchDir('sec-tables');
  foreignBefore = await env.ruleset();
});
afterAll(async () => {
  await env?.destroy();
  await scratch?.remove();
});

const NAT = 'nat: cgw_nat';
const ARP = 'arp: cgw_arp';
const nat = (to: string): StateEdit => ['cluster.yaml', NAT, `nat: ${to}`];
const arp = (to: string): StateEdit => ['cluster.yaml', ARP, `arp: ${to}`];
const raw = (to: string): StateEdit => ['cluster.yaml', ARP, `${ARP}\n  raw: ${to}`];
const ctSync: StateEdit = ['cluster.yaml', 'mode: full-nat', 'mode: ct-sync'];

interface TableCase {
  name: string;
  edits: StateEdit[];
  /** The field the diagnostic names. */
  field: 'tables.nat' | 'tables.arp' | 'tables.raw';
}

const cases: TableCase[] = [
  { name: 'foreign ip nat', edits: [nat('nat')], field: 'tables.nat' },
  { name: 'foreign ip raw (nat role)', edits: [nat('raw')], field: 'tables.nat' },
  { name: 'foreign ip raw (raw role, ct-sync)', edits: [ctSync, raw('raw')], field: 'tables.raw' },
  { name: 'foreign ip filter', edits: [nat('filter')], field: 'tables.nat' },
  { name: 'foreign inet filter through arp', edits: [arp('filter')], field: 'tables.arp' },
  { name: 'keyword map', edits: [nat('map')], field: 'tables.nat' },
  { name: 'keyword ip', edits: [nat('ip')], field: 'tables.nat' },
  { name: 'keyword flush', edits: [raw('flush')], field: 'tables.raw' },
  { name: 'raw equal to nat', edits: [ctSync, raw('cgw_nat')], field: 'tables.raw' },
  { name: 'arp equal to nat', edits: [arp('cgw_nat')], field: 'tables.arp' },
  { name: 'raw equal to arp', edits: [raw('cgw_arp')], field: 'tables.raw' },
  { name: 'very long', edits: [nat(`cgw_${'a'.repeat(60)}`)], field: 'tables.nat' },
  { name: 'unicode look-alike', edits: [nat('cgw_nаt')], field: 'tables.nat' },
  { name: 'zero-width character', edits: [nat('"cgw_\\u200bnat"')], field: 'tables.nat' },
  { name: 'the mark alone', edits: [nat('cgw_')], field: 'tables.nat' },
  { name: 'upper-case mark', edits: [nat('CGW_nat')], field: 'tables.nat' },
  { name: 'mark not at the start', edits: [nat('nat_cgw_x')], field: 'tables.nat' },
  { name: 'injection through the name', edits: [nat('"cgw_x; flush ruleset"')], field: 'tables.nat' },
  { name: 'block injection', edits: [nat('"cgw_nat { }"')], field: 'tables.nat' },
  { name: 'empty', edits: [nat('""')], field: 'tables.nat' },
  { name: 'a number', edits: [nat('42')], field: 'tables.nat' },
];

// The cases only read the namespace, so they run side by side; `validate` is the same loader
// in-process (its exit code is checked once below), `apply` is the built CLI in the namespace.
describe.concurrent('hostile table names', () => {
  it.each(cases)('$name: validate and apply exit 1 with file:line:column; foreign tables untouched', async ({ edits, field }) => {
    const dir = await editedState(scratch.dir, edits);
    const { diagnostics } = await loadState(dir);
    expect(diagnostics.map((d) => `${d.file}:${d.field}`)).toContain(`cluster.yaml:${field}`);
    expect(diagnostics.every((d) => d.line > 0 && d.column > 0)).toBe(true);
    const apply = await cli(['apply', '--state', dir, '--node', 'node1'], env.ns);
    expect(apply.code).toBe(1);
    expect(apply.err).toMatch(new RegExp(`^cluster\\.yaml:\\d+:\\d+: ${field.replace('.', '\\.')}: `, 'm'));
    expect(await env.ruleset()).toBe(foreignBefore);
  });

  it('validate exits 1 and names the place', async () => {
    const r = await cli(['validate', '--state', await editedState(scratch.dir, [nat('nat')])]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^cluster\.yaml:\d+:\d+: tables\.nat: .*'cgw_'/m);
  });
});

/** state-example as loaded, with the table names replaced as if validation had been skipped. */
async function bypassed(tables: Partial<ClusterState['cluster']['tables']>, mode: NatMode = 'full-nat'): Promise<ClusterState> {
  const s = await stateInMode(mode);
  return { ...s, cluster: { ...s.cluster, tables: { ...s.cluster.tables, ...tables } } };
}

describe('a state that bypassed validation', () => {
  const bypasses: Array<{ name: string; tables: Partial<ClusterState['cluster']['tables']>; mode?: NatMode; message: RegExp }> = [
    { name: 'nat: nat', tables: { nat: 'nat' }, message: /"nat" does not start with "cgw_"/ },
    { name: 'raw: raw (ct-sync)', tables: { raw: 'raw' }, mode: 'ct-sync', message: /"raw" does not start with "cgw_"/ },
    { name: 'arp: filter', tables: { arp: 'filter' }, message: /"filter" does not start with "cgw_"/ },
    { name: 'raw == nat (stateless-nat)', tables: { raw: 'cgw_nat' }, mode: 'stateless-nat', message: /two roles the same table ip cgw_nat/ },
    { name: 'keyword after the mark cannot exist, injection can', tables: { nat: 'cgw_x; flush ruleset' }, message: /not a usable nft table name/ },
  ];

  it.each(bypasses)('$name: render, plan and the agent refuse; nothing is listed or written', async ({ tables, mode, message }) => {
    const state = await bypassed(tables, mode);
    expect(() => renderNode(state, 'node1')).toThrow(NotOwnedTable);
    await expect(planNodeNft(state, 'node1', env.nft)).rejects.toThrow(message);
    const problem = ownershipProblem(state, { ownedTables: [...DEFAULT_OWNED_TABLES] });
    expect(problem).toMatch(message);
    expect(await env.ruleset()).toBe(foreignBefore);
  });

  it('the batch printer itself refuses any table without the mark', () => {
    for (const name of ['nat', 'raw', 'filter']) {
      const tx = new Transaction().add({ op: 'delete-table', table: { family: 'ip', name } });
      expect(() => tx.toText()).toThrow(/does not start with "cgw_"/);
    }
  });

  it('the agent names the table and the config key when the allow-list does not cover it', async () => {
    const state = await bypassed({ nat: 'cgw_other' });
    const problem = ownershipProblem(state, { ownedTables: [...DEFAULT_OWNED_TABLES] });
    expect(problem).toContain('ip cgw_other');
    expect(problem).toContain('agent config ownedTables');
  });
});

describe('the ownedTables default', () => {
  it.each(['full-nat', 'ct-sync', 'stateless-nat'] as const)('accepts every table state-example creates in %s, and nothing else', async (mode) => {
    const state = await stateInMode(mode);
    const rendered = state.nodes.flatMap((n) => renderNode(state, n.name).tables.map((t) => `${t.family} ${t.name}`));
    expect(rendered.length).toBeGreaterThan(0);
    for (const t of rendered) expect(DEFAULT_OWNED_TABLES).toContain(t);
    expect(ownershipProblem(state, { ownedTables: [...DEFAULT_OWNED_TABLES] })).toBeUndefined();
  });

  it('is on when the config does not mention it, and systemd/agent.example.yaml accepts the bundled state-example', async () => {
    // The token and key files it names exist on a node, not here.
    const example = await loadAgentConfig(join(PROJECT_ROOT, 'systemd/agent.example.yaml'), { checkFiles: false });
    const state = await loadStateOrThrow(EXAMPLE_DIR);
    expect(ownershipProblem(state, example)).toBeUndefined();
    for (const mode of ['ct-sync', 'stateless-nat'] as const) expect(ownershipProblem(await stateInMode(mode), example)).toBeUndefined();
    const minimal = join(scratch.dir, 'agent.yaml');
    await writeFile(minimal, 'apiVersion: cgw-sync/v1\nkind: AgentConfig\nsource: { url: https://git.example.org/s.git }\n');
    expect((await loadAgentConfig(minimal)).ownedTables).toEqual(DEFAULT_OWNED_TABLES);
  });
});

describe('the agent with the default ownedTables', () => {
  it('refuses a valid state naming a table outside the allow-list, names the table and the key, writes nothing', async () => {
    const files = await stateExampleFiles();
    files['cluster.yaml'] = files['cluster.yaml']!.replace('nat: cgw_nat', 'nat: cgw_other');
    const fx = await startGitFixture({ files });
    const agent = await startTestAgent(fx, 'node1');
    try {
      expect(agent.config.ownedTables).toEqual(DEFAULT_OWNED_TABLES);
      const status = await agent.cycle();
      expect(status.source.state).toBe('not-owned');
      expect(status.source.message).toMatch(/ip cgw_other.*agent config ownedTables/);
      expect(status.appliedRevision).toBeUndefined();
      expect(await agent.tables()).toEqual([]);
      expect((await readPublished(fx, 'node1'))?.json.source.state).toBe('not-owned');
    } finally {
      await agent.destroy();
      await fx.cleanup();
    }
  });
});

describe('the bundled state next to foreign tables', () => {
  it('apply converges, plan is then empty, and every foreign table is byte-identical', async () => {
    const before = await env.foreign();
    const apply = await cli(['apply', '--state', EXAMPLE_DIR, '--node', 'node1'], env.ns);
    expect(apply).toMatchObject({ code: 0 });
    expect((await cli(['plan', '--state', EXAMPLE_DIR, '--node', 'node1'], env.ns)).code).toBe(0);
    expect(await env.foreign()).toEqual(before);
    expect(await env.ruleset()).toContain('table ip cgw_nat');
  });
});
