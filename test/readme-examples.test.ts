// The README's examples are the program's output: each code block after a marker
//   <!-- example: NAME -->
// is produced here from state-example/ and compared with the README, so the docs cannot drift.
// After changing the program on purpose: UPDATE_README=1 npx vitest run test/readme-examples.test.ts
// rewrites the blocks (then review the diff). Revisions (content hashes) are normalised.
import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runUnchecked } from '../src/netns/netns.js';
import { CLI_BIN, PROJECT_ROOT, withExtraForward } from './helpers/agent-fixture.js';
import { writeTree } from './helpers/git-server.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';

const README = path.join(PROJECT_ROOT, 'README.md');
const blockPattern = (name: string) => new RegExp(`(<!-- example: ${name} -->\\n\`\`\`[a-z]*\\n)([\\s\\S]*?)(\`\`\`)`);

/** The code block after the marker, or undefined when the README lacks it. */
function readmeBlock(readme: string, name: string): string | undefined {
  return readme.match(blockPattern(name))?.[2];
}

function normalise(text: string): string {
  return text.replace(/sha256-[0-9a-f]{64}/g, 'sha256-…').replace(/\b[0-9a-f]{40}\b/g, '<commit>');
}

let work: string;
let ns: NftNamespace;
const produced = new Map<string, string>();

/** Run the CLI from `cwd` (so paths in its output are the ones the README shows). */
async function cgw(args: string[], cwd: string, inNamespace = false) {
  const [cmd, argv] = inNamespace ? ['ip', ['netns', 'exec', ns.ns, process.execPath, CLI_BIN, ...args]] : [process.execPath, [CLI_BIN, ...args]];
  const r = await runUnchecked(cmd as string, argv as string[], { cwd });
  return { ...r, all: normalise(`${r.stdout}${r.stderr}`) };
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), `cgw-readme-${process.pid}-`));
  await cp(path.join(PROJECT_ROOT, 'state-example'), path.join(work, 'state-example'), { recursive: true });
  ns = await nftNamespace('readme');
});

afterAll(async () => {
  if (process.env.UPDATE_README && produced.size) {
    let readme = await readFile(README, 'utf8');
    for (const [name, text] of produced) readme = readme.replace(blockPattern(name), (_m, open: string, _old: string, close: string) => `${open}${text}${close}`);
    await writeFile(README, readme);
  }
  await ns?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

async function expectBlock(name: string, output: string): Promise<void> {
  const text = output.endsWith('\n') ? output : `${output}\n`;
  produced.set(name, text);
  if (process.env.UPDATE_README) return;
  expect(readmeBlock(await readFile(README, 'utf8'), name), `README block "${name}"`).toBe(text);
}

describe('README examples', () => {
  it('validate: the errors of a broken state, compiler style', async () => {
    const state = path.join(work, 'my-state');
    await cp(path.join(work, 'state-example'), state, { recursive: true });
    const node = path.join(state, 'nodes/node1.yaml');
    await writeFile(node, (await readFile(node, 'utf8')).replace('interface: xenbr0', 'interface: "eth0; flush ruleset"'));
    const web = path.join(state, 'forwards/web.yaml');
    await writeFile(web, (await readFile(web, 'utf8')).replace('target: { guest: guest1, port: 80 }', 'target: { guest: guest9, port: 80 }'));
    const r = await cgw(['validate', '--state', 'my-state'], work);
    expect(r.exitCode).toBe(1);
    await expectBlock('validate-errors', `$ cgw-sync validate --state my-state\n${r.all}`);
  });

  it("render: node1's ruleset from state-example", async () => {
    const r = await cgw(['render', '--state', 'state-example', '--node', 'node1'], work);
    expect(r.exitCode).toBe(0);
    await expectBlock('render-node1', r.all);
  });

  it('plan: one more forward on a node that runs state-example is one map element', async () => {
    const applied = await cgw(['apply', '--state', 'state-example', '--node', 'node1', '--no-hooks'], work, true);
    expect(applied.exitCode, applied.all).toBe(0);
    await writeTree(path.join(work, 'state-example'), withExtraForward({}, 'extra', 2299));
    const r = await cgw(['plan', '--state', 'state-example', '--node', 'node1'], work, true);
    expect(r.exitCode).toBe(2);
    // The nftables part: what follows (settings, guests) depends on the host's hypervisor tools.
    const nftPart = r.all.slice(0, r.all.indexOf('\n\n', r.all.indexOf('\nPlan: ')) + 1);
    expect(nftPart).toMatch(/^Plan: /m);
    await expectBlock('plan-extra-forward', `$ cgw-sync plan --state state-example --node node1\n${nftPart}`);
  });

  it("state-example's $schema modelines name the schema of each file's kind, where it exists", async () => {
    const root = path.join(PROJECT_ROOT, 'state-example');
    const files = (await readdir(root, { recursive: true })).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThan(3);
    for (const f of files) {
      const text = await readFile(path.join(root, f), 'utf8');
      const target = text.match(/^# yaml-language-server: \$schema=(\S+)$/m)?.[1];
      expect(target, f).toBeDefined();
      const schemaFile = path.resolve(path.dirname(path.join(root, f)), target as string);
      expect((await stat(schemaFile)).isFile(), `${f}: ${target}`).toBe(true);
      const kind = text.match(/^kind: (\w+)$/m)?.[1];
      const schema = JSON.parse(await readFile(schemaFile, 'utf8')) as { properties?: { kind?: { const?: string } } };
      expect(schema.properties?.kind?.const, `${f}: ${target}`).toBe(kind);
    }
  });
});
