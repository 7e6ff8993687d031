// Adversarial group "state files": hostile state directories and Git revisions, each fed to the real
// CLI (`validate --state DIR`, and `plan --all-nodes --rev` for states read from Git objects). Every
// case must end with exit 1 in under 10 s, with a short message naming file:line:column (and the
// field where there is one), and print nothing of the canary that sits in every secret a symlink
// could reach (a file and a folder outside the state, the CLI's own environment).
import { link, mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/netns/netns.js';
import { gitCli } from '../helpers/git-server.js';
import { CANARY, commitAll, makeSandbox, repeatTo, runCli, stateRepo, type CliResult, type Sandbox } from '../helpers/hostile-state.js';

const MB = 1_000_000;
const MiB = 1024 * 1024;
const FORWARDS_HEAD = 'apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n';

let sb: Sandbox;
beforeAll(async () => {
  sb = await makeSandbox('files');
});
afterAll(async () => {
  await sb?.cleanup();
});

/** The checks every hostile case shares; `expected` is one stderr/stdout line, from its start. */
function expectRefused(r: CliResult, expected: RegExp): void {
  const output = `${r.out}\n${r.err}`;
  expect(output, 'the canary leaked').not.toContain(CANARY);
  expect(r.code, output.slice(0, 2000)).toBe(1);
  expect(output).toMatch(new RegExp(`^${expected.source}`, 'm'));
  expect(r.ms).toBeLessThan(10_000);
  expect(output.length, 'a short message').toBeLessThan(20_000);
}

const write = (dir: string, rel: string, text: string | Uint8Array) => writeFile(path.join(dir, rel), text);
const edit = async (dir: string, rel: string, from: string, to: string) => {
  const text = await readFile(path.join(dir, rel), 'utf8');
  if (!text.includes(from)) throw new Error(`${rel} has no "${from}"`);
  await write(dir, rel, text.replace(from, to));
};
const relink = async (dir: string, rel: string, target: string) => {
  await rm(path.join(dir, rel), { recursive: true, force: true });
  await symlink(target, path.join(dir, rel));
};
const mkfifo = async (p: string) => void (await run('mkfifo', [p]));
const mknod = async (p: string, type: 'c' | 'b', major: number, minor: number) => void (await run('mknod', [p, type, String(major), String(minor)]));

/** A Unix socket file left behind by a server that is closed again. */
async function unixSocketFile(p: string): Promise<void> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(p, resolve));
  // Node removes the socket file on close: keep a hard link of it (an inode only, never opened).
  await link(p, `${p}.keep`);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rename(`${p}.keep`, p);
}

interface StateCase {
  name: string;
  /** Seconds of CPU to make or to refuse: run alone, not next to other cases, so its time is its own. */
  heavy?: boolean;
  /** Makes the copy of state-example in `dir` hostile; may return the path to pass as --state instead. */
  make: ((dir: string) => Promise<void>) | ((dir: string) => Promise<string>);
  expected: RegExp;
}

const LINK = 'is a symbolic link; state files and folders are read only as regular files';

const symlinkCases: StateCase[] = [
  { name: 'cluster.yaml -> a secret outside', make: (d) => relink(d, 'cluster.yaml', sb.secretFile), expected: new RegExp(`cluster\\.yaml:1:1: ${LINK}`) },
  { name: 'cluster.yaml -> /proc/self/environ', make: (d) => relink(d, 'cluster.yaml', '/proc/self/environ'), expected: new RegExp(`cluster\\.yaml:1:1: ${LINK}`) },
  { name: 'nodes/node1.yaml -> a secret outside', make: (d) => relink(d, 'nodes/node1.yaml', sb.secretFile), expected: new RegExp(`nodes/node1\\.yaml:1:1: ${LINK}`) },
  { name: 'forwards/web.yaml -> a secret outside', make: (d) => relink(d, 'forwards/web.yaml', sb.secretFile), expected: new RegExp(`forwards/web\\.yaml:1:1: ${LINK}`) },
  { name: 'an added forwards file -> /proc/self/environ (once silently skipped)', make: (d) => relink(d, 'forwards/env.yaml', '/proc/self/environ'), expected: new RegExp(`forwards/env\\.yaml:1:1: ${LINK}`) },
  { name: 'forwards file -> a file inside the state (relative)', make: (d) => relink(d, 'forwards/copy.yaml', 'web.yaml'), expected: new RegExp(`forwards/copy\\.yaml:1:1: ${LINK}`) },
  { name: 'forwards file -> a file inside the state (absolute)', make: (d) => relink(d, 'forwards/abs.yaml', path.join(d, 'forwards/ssh.yaml')), expected: new RegExp(`forwards/abs\\.yaml:1:1: ${LINK}`) },
  { name: 'guests/ -> a folder outside', make: (d) => relink(d, 'guests', sb.secretDir), expected: new RegExp(`guests:1:1: ${LINK}`) },
  {
    name: 'forwards/ -> a folder inside the state',
    make: async (d) => {
      await rename(path.join(d, 'forwards'), path.join(d, 'forwards-real'));
      await symlink('forwards-real', path.join(d, 'forwards'));
    },
    expected: new RegExp(`forwards:1:1: ${LINK}`),
  },
  { name: 'a dangling link', make: (d) => relink(d, 'forwards/gone.yaml', `/nonexistent/${CANARY}`), expected: new RegExp(`forwards/gone\\.yaml:1:1: ${LINK}`) },
  { name: 'a link to itself', make: (d) => relink(d, 'forwards/loop.yaml', 'loop.yaml'), expected: new RegExp(`forwards/loop\\.yaml:1:1: ${LINK}`) },
  { name: 'a link to /dev/zero', make: (d) => relink(d, 'forwards/zero.yaml', '/dev/zero'), expected: new RegExp(`forwards/zero\\.yaml:1:1: ${LINK}`) },
  { name: 'a link to a folder, named like a file', make: (d) => relink(d, 'forwards/etc.yaml', sb.secretDir), expected: new RegExp(`forwards/etc\\.yaml:1:1: ${LINK}`) },
  {
    name: 'a link in a nested folder',
    make: async (d) => {
      await mkdir(path.join(d, 'forwards/deeper'));
      await symlink(sb.secretFile, path.join(d, 'forwards/deeper/x.yaml'));
    },
    expected: new RegExp(`forwards/deeper/x\\.yaml:1:1: ${LINK}`),
  },
  { name: 'a link outside the state folders (README.md)', make: (d) => relink(d, 'README.md', sb.secretFile), expected: new RegExp(`README\\.md:1:1: ${LINK}`) },
  { name: 'a hidden link', make: (d) => relink(d, 'forwards/.hidden.yaml', sb.secretFile), expected: new RegExp(`forwards/\\.hidden\\.yaml:1:1: ${LINK}`) },
  { name: 'a .yml link', make: (d) => relink(d, 'nodes/node3.yml', sb.secretFile), expected: new RegExp(`nodes/node3\\.yml:1:1: ${LINK}`) },
  {
    name: 'the state directory itself is a link',
    make: async (d) => {
      const alias = `${d}-alias`;
      await symlink(d, alias);
      return alias;
    },
    expected: /\.:1:1: state directory \S+ is a symbolic link/,
  },
];

const specialCases: StateCase[] = [
  { name: 'a FIFO as a forwards file', make: (d) => mkfifo(path.join(d, 'forwards/fifo.yaml')), expected: /forwards\/fifo\.yaml:1:1: is a FIFO, socket or device/ },
  { name: 'a FIFO as cluster.yaml', make: async (d) => { await rm(path.join(d, 'cluster.yaml')); await mkfifo(path.join(d, 'cluster.yaml')); }, expected: /cluster\.yaml:1:1: is a FIFO, socket or device/ },
  { name: 'a Unix socket as a forwards file', make: (d) => unixSocketFile(path.join(d, 'forwards/sock.yaml')), expected: /forwards\/sock\.yaml:1:1: is a FIFO, socket or device/ },
  { name: 'a character device as a node file', make: (d) => mknod(path.join(d, 'nodes/null.yaml'), 'c', 1, 3), expected: /nodes\/null\.yaml:1:1: is a FIFO, socket or device/ },
  { name: 'a block device as a guest file', make: (d) => mknod(path.join(d, 'guests/disk.yaml'), 'b', 7, 0), expected: /guests\/disk\.yaml:1:1: is a FIFO, socket or device/ },
  { name: 'cluster.yaml is a directory', make: async (d) => { await rm(path.join(d, 'cluster.yaml')); await mkdir(path.join(d, 'cluster.yaml')); }, expected: /cluster\.yaml:1:1: is a directory, expected a YAML file/ },
  { name: 'a forwards file is a directory', make: async (d) => { await rm(path.join(d, 'forwards/web.yaml')); await mkdir(path.join(d, 'forwards/web.yaml')); }, expected: /forwards\/web\.yaml:1:1: is a directory, expected a YAML file/ },
  { name: 'nodes is a file', make: async (d) => { await rm(path.join(d, 'nodes'), { recursive: true }); await write(d, 'nodes', 'x'); }, expected: /nodes:1:1: is a file, expected a folder/ },
  { name: 'a hard link to a secret outside', make: (d) => link(sb.secretFile, path.join(d, 'forwards/hard.yaml')), expected: /forwards\/hard\.yaml:1:1: has 2 hard links/ },
  {
    name: 'a file name with terminal escapes and bidi controls',
    make: (d) => write(d, 'forwards/evil\x1b[2J\u202e.yaml', FORWARDS_HEAD),
    expected: /forwards\/evil\\x1b\[2J\\u202e\.yaml:1:1: file name has control/,
  },
];

const bomb = (text: string | Uint8Array) => async (d: string) => write(d, 'forwards/bomb.yaml', text);
const forwardUnit = (i: number) => `  - {name: f${i}, protocol: tcp, port: ${1 + (i % 65000)}, target: {guest: guest1, port: 22}}\n`;
function manyForwards(bytes: number): string {
  const lines = [FORWARDS_HEAD];
  for (let i = 0, n = FORWARDS_HEAD.length; n < bytes; i++) n += lines[lines.push(forwardUnit(i)) - 1].length;
  return lines.join('');
}
function billionLaughs(): string {
  let text = 'apiVersion: cgw-sync/v1\nkind: Forwards\na0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n';
  for (let i = 1; i < 10; i++) text += `a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]\n`;
  return `${text}forwards: *a9\n`;
}
const SIZE = /forwards\/bomb\.yaml:1:1: is 19\.1 MiB, more than the limit of 8 MiB per file/;

const limitCases: StateCase[] = [
  { name: '20 MB: one huge scalar', heavy: true, make: bomb(repeatTo(`${FORWARDS_HEAD}  - name: `, 'a', 20 * MB, '\n')), expected: SIZE },
  { name: '20 MB: deep nesting', heavy: true, make: bomb(repeatTo(`${FORWARDS_HEAD}  - `, '[', 20 * MB)), expected: SIZE },
  { name: '20 MB: huge flow sequence', heavy: true, make: bomb(repeatTo('apiVersion: cgw-sync/v1\nkind: Forwards\nforwards: [', '1, ', 20 * MB, '1]\n')), expected: SIZE },
  { name: '20 MB: many aliases', heavy: true, make: bomb(repeatTo(`${FORWARDS_HEAD}  - &a {name: a}\n`, '  - *a\n', 20 * MB)), expected: SIZE },
  { name: '20 MB: many small forwards', heavy: true, make: bomb(manyForwards(20 * MB)), expected: SIZE },
  { name: 'a 7 MiB scalar under the size limit is shown capped', heavy: true, make: bomb(repeatTo(`${FORWARDS_HEAD}  - name: `, 'a', 7 * MiB, '\n')), expected: /forwards\/bomb\.yaml:4:11: forwards\[0\]\.name: must be a name .*\(got "a{60}…" \(\d{7} chars\)\)/ },
  { name: 'flow nesting 3,000,000 deep under the size limit', heavy: true, make: bomb(repeatTo(`${FORWARDS_HEAD}  - `, '[', 3 * MB)), expected: /forwards\/bomb\.yaml:4:69: nesting is deeper than 64 levels/ },
  {
    name: 'block nesting 3,000 deep',
    make: bomb(FORWARDS_HEAD + Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i + 2)}- `).join('\n') + 'x\n'),
    expected: /forwards\/bomb\.yaml:\d+:\d+: nesting is deeper than 64 levels/,
  },
  { name: 'a flow sequence of millions of values', heavy: true, make: bomb(repeatTo('apiVersion: cgw-sync/v1\nkind: Forwards\nforwards: [', '1,', 7 * MiB, '1]\n')), expected: /forwards\/bomb\.yaml:3:\d+: the state holds more than 750000 YAML values/ },
  { name: 'many small forwards beyond the value budget', heavy: true, make: bomb(manyForwards(7.5 * MiB)), expected: /forwards\/bomb\.yaml:\d+:\d+: the state holds more than 750000 YAML values/ },
  { name: 'a billion laughs', make: bomb(billionLaughs()), expected: /forwards\/bomb\.yaml:4:10: too many aliases/ },
  {
    name: 'thousands of invalid forwards: the first 100 problems are listed',
    make: bomb(FORWARDS_HEAD + Array.from({ length: 1000 }, (_, i) => `  - {name: F${i}, protocol: tcp, port: ${i + 1}, target: {guest: guest1, port: 22}}\n`).join('')),
    expected: /forwards\/bomb\.yaml:1:1: 900 more problem\(s\) not shown \(only the first 100 are listed\)/,
  },
  {
    name: 'more than 16 MiB in all', heavy: true,
    make: async (d) => {
      for (const n of [1, 2, 3]) await write(d, `forwards/big${n}.yaml`, repeatTo(FORWARDS_HEAD.replace('forwards:\n', ''), `# ${'x'.repeat(1000)}\n`, 6 * MiB, 'forwards: []\n'));
    },
    expected: /forwards\/big3\.yaml:1:1: the state files exceed the limit of 16 MiB in total/,
  },
  {
    name: 'more than 10,000 files',
    heavy: true,
    make: async (d) => {
      await mkdir(path.join(d, 'docs'));
      await Promise.all(Array.from({ length: 10_001 }, (_, i) => write(d, `docs/${i}.md`, '')));
    },
    expected: /\.:1:1: the state tree has more than 10000 files and folders/,
  },
  {
    name: 'folders nested 17 deep',
    make: async (d) => void (await mkdir(path.join(d, 'forwards', ...Array(17).fill('d')), { recursive: true })),
    expected: /forwards(\/d){16}:1:1: folders nest deeper than 16 levels/,
  },
];

const utf16 = (text: string, bom: boolean) => Buffer.concat([Buffer.from(bom ? [0xff, 0xfe] : []), Buffer.from(text, 'utf16le')]);
const nodeValue = (from: string, to: string) => (d: string) => edit(d, 'nodes/node1.yaml', from, to);

const encodingCases: StateCase[] = [
  { name: 'UTF-16 with a byte order mark', make: bomb(utf16(`${FORWARDS_HEAD}  - name: x\n`, true)), expected: /forwards\/bomb\.yaml:1:1: is UTF-16 or UTF-32/ },
  { name: 'UTF-16 without a byte order mark', make: bomb(utf16(`${FORWARDS_HEAD}  - name: x\n`, false)), expected: /forwards\/bomb\.yaml:1:2: contains the control character \\x00/ },
  { name: 'a NUL byte', make: bomb(`${FORWARDS_HEAD}  - name: a\0b\n`), expected: /forwards\/bomb\.yaml:4:12: contains the control character \\x00/ },
  { name: 'invalid UTF-8', make: bomb(Buffer.concat([Buffer.from(`${FORWARDS_HEAD}  - name: `), Buffer.from([0xc3, 0x28, 0x0a])])), expected: /forwards\/bomb\.yaml:4:11: is not valid UTF-8/ },
  { name: 'a raw terminal escape in a value', make: nodeValue('interface: xenbr0', 'interface: xen\x1b[31mbr0'), expected: /nodes\/node1\.yaml:\d+:\d+: contains the control character \\x1b/ },
  { name: 'a zero-width space in a name', make: (d) => edit(d, 'guests/guest1.yaml', 'name: guest1', 'name: "guest\\u200b1"'), expected: /guests\/guest1\.yaml:\d+:\d+: name: must be a name .*\(got "guest\\u200b1"\)/ },
  { name: 'a bidi override in an interface name', make: nodeValue('interface: xenbr0', 'interface: "xen\\u202ebr0"'), expected: /nodes\/node1\.yaml:\d+:\d+: uplink\.interface: must be a Linux interface name.*\(got "xen\\u202ebr0"\)/ },
  { name: 'a Cyrillic look-alike in an enum value', make: nodeValue('hypervisor: xen', 'hypervisor: x\u0435n'), expected: /nodes\/node1\.yaml:\d+:\d+: hypervisor: must be one of .*\(got "x\\u0435n"\)/ },
  { name: 'a Cyrillic look-alike in a key', make: nodeValue('hypervisor: xen', 'hyperv\u0456sor: xen'), expected: /nodes\/node1\.yaml:\d+:\d+: \["hyperv\\u0456sor"\]: unknown property "hyperv\\u0456sor"/ },
  { name: '.inf as a port', make: (d) => edit(d, 'forwards/web.yaml', 'port: 80\n    nodes: [node1]', 'port: .inf\n    nodes: [node1]'), expected: /forwards\/web\.yaml:\d+:\d+: forwards\[0\]\.port: must be an integer \(got \.inf\)/ },
  { name: '.nan as a port', make: (d) => edit(d, 'forwards/web.yaml', 'port: 80\n    nodes: [node1]', 'port: .nan\n    nodes: [node1]'), expected: /forwards\/web\.yaml:\d+:\d+: forwards\[0\]\.port: must be an integer \(got \.nan\)/ },
  { name: '-.inf as a memory size', make: (d) => edit(d, 'guests/guest1.yaml', 'memoryMiB: 1024', 'memoryMiB: -.inf'), expected: /guests\/guest1\.yaml:\d+:\d+: resources\.memoryMiB: must be an integer \(got -\.inf\)/ },
  {
    name: 'a 2 MiB explicit key is shown capped',
    make: async (d) => write(d, 'nodes/node1.yaml', `${await readFile(path.join(d, 'nodes/node1.yaml'), 'utf8')}? ${'k'.repeat(2 * MiB)}\n: 1\n`),
    expected: /nodes\/node1\.yaml:\d+:3: \["k{60}…" \(2097152 chars\)\]: unknown property "k{60}…" \(2097152 chars\); allowed:/,
  },
  { name: 'an escaped terminal sequence in the kind', make: (d) => edit(d, 'forwards/web.yaml', 'kind: Forwards', 'kind: "\\e[2J\\e[H"'), expected: /forwards\/web\.yaml:\d+:\d+: kind: unknown kind "\\x1b\[2J\\x1b\[H"/ },
];

const yamlCases: StateCase[] = [
  { name: 'duplicate keys', make: nodeValue('hypervisor: xen', 'hypervisor: xen\nhypervisor: qemu'), expected: /nodes\/node1\.yaml:\d+:\d+: YAML syntax: Map keys must be unique/ },
  { name: 'a !!js/function tag', make: nodeValue('hypervisor: xen', 'hypervisor: !!js/function "function () { return 1 }"'), expected: /nodes\/node1\.yaml:\d+:\d+: YAML: Unresolved tag: tag:yaml\.org,2002:js\/function; state files hold plain data/ },
  { name: 'a custom tag', make: nodeValue('hypervisor: xen', 'hypervisor: !secret xen'), expected: /nodes\/node1\.yaml:\d+:\d+: YAML: Unresolved tag: !secret; state files hold plain data/ },
  { name: 'a !!binary tag', make: nodeValue('hypervisor: xen', 'hypervisor: !!binary eGVu'), expected: /nodes\/node1\.yaml:\d+:\d+: YAML tag !!binary is not allowed; state files hold plain data/ },
  {
    name: 'a merge key',
    make: (d) => write(d, 'forwards/merge.yaml', `${FORWARDS_HEAD}  - &base {name: m1, protocol: tcp, port: 3001, target: {guest: guest1, port: 22}}\n  - <<: *base\n    name: m2\n`),
    expected: /forwards\/merge\.yaml:5:5: forwards\[1\]\["<<"\]: unknown property "<<"/,
  },
  { name: 'two documents in one file', make: (d) => edit(d, 'forwards/web.yaml', 'apiVersion:', '---\napiVersion: cgw-sync/v1\nkind: Forwards\nforwards: []\n---\napiVersion:'), expected: /forwards\/web\.yaml:\d+:\d+: YAML syntax: a state file holds exactly one document/ },
  { name: 'an unresolved alias', make: nodeValue('hypervisor: xen', 'hypervisor: *nowhere'), expected: /nodes\/node1\.yaml:\d+:\d+: YAML: Unresolved alias/ },
  { name: 'a key with a zero-width space', make: (d) => edit(d, 'forwards/web.yaml', 'port: 80\n    nodes: [node1]', '"port\\u200b": 80\n    nodes: [node1]'), expected: /forwards\/web\.yaml:\d+:\d+: forwards\[0\]\["port\\u200b"\]: unknown property "port\\u200b"/ },
];

describe('hostile state directories: validate', () => {
  const cases = [...symlinkCases, ...specialCases, ...limitCases, ...encodingCases, ...yamlCases];
  const validateCase = async ({ name, make, expected }: StateCase) => {
    const dir = await sb.state(name.replace(/[^a-z0-9]+/gi, '-'));
    const stateArg = (await make(dir)) ?? dir;
    expectRefused(await runCli(['validate', '--state', stateArg]), expected);
  };
  it.concurrent.each(cases.filter((c) => !c.heavy))('$name', validateCase);
  it.each(cases.filter((c) => c.heavy))('$name', validateCase);

  it('accepts a UTF-8 byte order mark (positive control for the encoding checks)', async () => {
    const dir = await sb.state('utf8-bom');
    const text = await readFile(path.join(dir, 'cluster.yaml'), 'utf8');
    await write(dir, 'cluster.yaml', `\ufeff${text}`);
    const r = await runCli(['validate', '--state', dir]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('valid (2 nodes, 2 guests, 6 forwards)');
  });
});

interface RevisionCase {
  name: string;
  /** Makes the work tree of the repository in `repo` hostile (committed on branch "pr" afterwards). */
  make: (repo: string) => Promise<void>;
  /** Extra CLI arguments, e.g. --path for a state in a subfolder. */
  args?: string[];
  expected: RegExp;
}

const GIT_LINK = 'is a symbolic link in Git \\(mode 120000\\)';
const revisionCases: RevisionCase[] = [
  { name: 'cluster.yaml -> a secret outside', make: (r) => relink(r, 'cluster.yaml', sb.secretFile), expected: new RegExp(`cluster\\.yaml:1:1: ${GIT_LINK}`) },
  { name: 'a forwards file -> /proc/self/environ', make: (r) => relink(r, 'forwards/env.yaml', '/proc/self/environ'), expected: new RegExp(`forwards/env\\.yaml:1:1: ${GIT_LINK}`) },
  { name: 'guests/ -> a folder outside', make: (r) => relink(r, 'guests', sb.secretDir), expected: new RegExp(`guests:1:1: ${GIT_LINK}`) },
  { name: 'a forwards file -> a file inside', make: (r) => relink(r, 'forwards/copy.yaml', 'web.yaml'), expected: new RegExp(`forwards/copy\\.yaml:1:1: ${GIT_LINK}`) },
  {
    name: 'a submodule (gitlink)',
    make: async (r) => {
      // A nested repository: `git add` records it as a gitlink.
      const sub = path.join(r, 'forwards/sub');
      await mkdir(sub);
      await write(sub, 'x.yaml', FORWARDS_HEAD);
      await gitCli(['init', '-q', '-b', 'main'], sub);
      await commitAll(sub, 'nested');
    },
    expected: /forwards\/sub:1:1: is a submodule in Git \(mode 160000\)/,
  },
  {
    name: 'a link in a state kept in a subfolder (--path)',
    make: async (r) => {
      await mkdir(path.join(r, 'state'));
      for (const entry of ['cluster.yaml', 'nodes', 'guests', 'forwards']) await rename(path.join(r, entry), path.join(r, 'state', entry));
      await symlink(sb.secretFile, path.join(r, 'state/forwards/x.yaml'));
    },
    args: ['--path', 'state'],
    expected: new RegExp(`state/forwards/x\\.yaml:1:1: ${GIT_LINK}`),
  },
  { name: 'block nesting 3,000 deep in a blob', make: (r) => write(r, 'forwards/deep.yaml', FORWARDS_HEAD + Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i + 2)}- `).join('\n') + 'x\n'), expected: /forwards\/deep\.yaml:\d+:\d+: nesting is deeper than 64 levels/ },
  { name: 'a 20 MB blob', make: (r) => write(r, 'forwards/bomb.yaml', repeatTo(`${FORWARDS_HEAD}  - name: `, 'a', 20 * MB, '\n')), expected: SIZE },
];

describe('hostile Git revisions: plan --all-nodes --rev', () => {
  it.concurrent.each(revisionCases)('$name', async ({ name, make, args, expected }) => {
    const repo = path.join(sb.root, `repo-${name.replace(/[^a-z0-9]+/gi, '-')}`);
    await stateRepo(repo);
    await gitCli(['checkout', '-q', '-b', 'pr'], repo);
    await make(repo);
    await commitAll(repo, 'hostile change');
    const r = await runCli(['plan', '--all-nodes', '--rev', 'pr', '--state', repo, ...(args ?? [])]);
    expectRefused(r, expected);
    expect(r.out).toContain('**Invalid state');
  });
});
