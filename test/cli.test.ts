// The built `cgw-sync` binary as a user runs it, aimed at a namespace this file creates (the CLI
// has no namespace option of its own: `ip netns exec` is how an operator would do the same).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';

const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'dist', 'cli', 'bin.js');
const EXAMPLE = join(ROOT, 'state-example');

let env: NftNamespace;
let tmp: string;

async function cli(args: string[]) {
  const r = await execa('ip', ['netns', 'exec', env.ns, process.execPath, BIN, ...args], { reject: false });
  return { code: r.exitCode, out: String(r.stdout), err: String(r.stderr) };
}

beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` (scripts/test.sh does)`);
  env = await nftNamespace('cli');
  tmp = await mkdtemp(join(tmpdir(), 'cgw-cli-'));
});
afterAll(async () => {
  await env?.destroy();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('cgw-sync CLI', () => {
  it('validate: 0 for the example, 1 with file:line:column and field for a broken copy', async () => {
    expect(await cli(['validate', '--state', EXAMPLE])).toMatchObject({ code: 0, out: expect.stringContaining('valid (2 nodes, 2 guests, 6 forwards)') });
    const bad = join(tmp, 'bad');
    await cp(EXAMPLE, bad, { recursive: true });
    const node1 = await readFile(join(EXAMPLE, 'nodes', 'node1.yaml'), 'utf8');
    expect(node1).toContain('interface: xenbr0');
    await writeFile(join(bad, 'nodes', 'node1.yaml'), node1.replace('interface: xenbr0', 'interface: "eth0; flush ruleset"'));
    const r = await cli(['validate', '--state', bad]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^nodes\/node1\.yaml:\d+:\d+: uplink\.interface: must be a Linux interface name/m);
    expect(r.err).toContain('nothing was changed');
  });

  it('plan exits 2 with pending changes, apply converges, plan then exits 0; --json is a plan document', async () => {
    // A state dir of its own (lock, memory): the default one is shared with every other run on the host.
    const node = ['--state', EXAMPLE, '--node', 'node1', '--state-dir', join(tmp, 'state-dir')];
    const plan = await cli(['plan', ...node]);
    expect(plan.code, plan.err).toBe(2);
    expect(plan.out).toContain('+ table ip cgw_nat will be created');
    const json = await cli(['--plan', '--json', ...node]);
    expect(json.code, json.err).toBe(2);
    const doc = JSON.parse(json.out);
    expect(doc).toMatchObject({ format: 'cgw-sync.plan/v1', node: 'node1', changed: true });
    expect(doc.nft.batch).toContain('add element ip cgw_nat fwd_tcp { 80 : 10.5.5.202 . 80');

    const apply = await cli(['apply', ...node]);
    expect(apply.code, apply.err).toBe(0);
    expect(apply.out).toContain('the node has converged');
    const again = await cli(['plan', ...node]);
    expect(again.code, `${again.err}${again.out}`).toBe(0);
    expect(again.out).toContain('nftables: no changes');
    expect(await env.raw(['list', 'table', 'ip', 'cgw_nat'])).toContain('snat to 10.5.5.251');
  });

  it('exit 1 and a clear message for an unknown node, an unknown command and a missing nft', async () => {
    expect(await cli(['plan', '--state', EXAMPLE, '--node', 'node9'])).toMatchObject({ code: 1, err: expect.stringContaining('node "node9" is not in the state') });
    expect(await cli(['frobnicate'])).toMatchObject({ code: 1, err: expect.stringContaining('unknown command "frobnicate"') });
    expect(await cli(['plan', '--state', EXAMPLE, '--node', 'node1', '--nft', '/nonexistent/nft'])).toMatchObject({ code: 1, err: expect.stringContaining('nft binary not found') });
  });
});
