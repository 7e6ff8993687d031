// Adversarial group "status keys": the node public keys in the state (statusKey) and the node's
// own signing key in its agent configuration (status.signingKey). The state is untrusted: a huge,
// garbage, doubled, shared, expired or private key is refused by `cgw-sync validate` (the real
// CLI from dist/) with file:line:column: statusKey, exit 1, and a private key pasted into the state
// never comes out again, neither in the CLI's output nor in the report a node publishes.
import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as openpgp from 'openpgp';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentConfigError, loadAgentConfig } from '../../src/agent/config.js';
import { STATUS_KEY_MAX_CHARS } from '../../src/state/status-keys.js';
import { cli, editedState, scratchDir } from '../helpers/hostile-state.js';
import { fakeCluster, fakeNode } from '../helpers/fake-node.js';
import { nodeKey, statusKeyYaml, type NodeKey } from '../helpers/status-trust.js';

let scratch: Awaited<ReturnType<typeof scratchDir>>;
let k1: NodeKey;
let k2: NodeKey;
beforeAll(async () => {
  scratch = await scratchDir('status-keys');
  [k1, k2] = await Promise.all([nodeKey(scratch.dir, 'node1'), nodeKey(scratch.dir, 'node2')]);
});
afterAll(async () => scratch?.remove());

/** The base64 body lines of an armored block: what must never be echoed. */
const keyMaterial = (armored: string) => armored.split('\n').filter((l) => /^[A-Za-z0-9+/=]{40,}$/.test(l));

const NODE1_END = 'hypervisor: xen\n';
/** state-example with `text` appended to nodes/<node>.yaml (and node2's valid key, unless told). */
async function stateWith(node1: string, node2 = statusKeyYaml(k2.publicKey), cluster = '') {
  const edits: [string, string, string][] = [['nodes/node1.yaml', NODE1_END, `${NODE1_END}${node1}`]];
  if (node2) edits.push(['nodes/node2.yaml', NODE1_END, `${NODE1_END}${node2}`]);
  if (cluster) edits.push(['cluster.yaml', 'name: ', `${cluster}name: `]);
  return editedState(scratch.dir, edits);
}

async function validate(dir: string) {
  const r = await cli(['validate', '--state', dir]);
  return { ...r, output: `${r.out}\n${r.err}` };
}

/** Line of `statusKey:` in the node file, for the file:line:column check. */
async function keyLine(dir: string, node: string): Promise<number> {
  const lines = (await readFile(path.join(dir, 'nodes', `${node}.yaml`), 'utf8')).split('\n');
  return lines.findIndex((l) => l.startsWith('statusKey:')) + 1;
}

describe('hostile status keys in the state', () => {
  it('accepts one valid public key per node', async () => {
    const r = await validate(await stateWith(statusKeyYaml(k1.publicKey)));
    expect(r.code, r.output).toBe(0);
  });

  const cases: { name: string; key: () => Promise<string> | string; message: RegExp; node?: string }[] = [
    { name: 'a huge key', key: () => `-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n${'QUFB'.repeat(STATUS_KEY_MAX_CHARS / 4)}\n-----END PGP PUBLIC KEY BLOCK-----`, message: /statusKey: is \d+ characters long; an armored public key is far shorter \(limit 16384\)$/ },
    { name: 'garbage in armor', key: () => '-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----', message: /statusKey: is not an armored OpenPGP public key \(.+\)$/ },
    { name: 'no armor at all', key: () => 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI node1', message: /statusKey: must be an armored OpenPGP public key starting with -----BEGIN PGP PUBLIC KEY BLOCK-----$/ },
    { name: 'two keys in one block', key: () => joinedKeys(), message: /statusKey: holds 2 keys; give exactly one public key per node$/ },
    { name: 'two armored blocks (openpgp would read the first only)', key: () => `${k1.publicKey}\n${k2.publicKey}`, message: /statusKey: holds 2 armored blocks; give exactly one public key per node$/ },
    { name: "node2's key again", key: () => k2.publicKey, node: 'node2', message: /statusKey: is the same key as node node1's; each node needs its own key$/ },
    { name: 'an expired key', key: expiredKey, message: /statusKey: cannot sign: .* \(expired or revoked\?\)$/ },
  ];
  for (const c of cases) {
    it(`refuses ${c.name} with file:line:column: statusKey`, async () => {
      const dir = await stateWith(statusKeyYaml(await c.key()));
      const r = await validate(dir);
      expect(r.code, r.output).toBe(1);
      const node = c.node ?? 'node1';
      const hit = r.output.split('\n').find((l) => l.includes('statusKey:'));
      expect(hit, r.output).toMatch(new RegExp(`nodes/${node}\\.yaml:${await keyLine(dir, node)}:\\d+: `));
      expect(hit).toMatch(c.message);
      expect(r.output.length, 'a short message').toBeLessThan(4000);
    });
  }

  it('refuses a private key pasted as the public one, and never shows it', async () => {
    const dir = await stateWith(statusKeyYaml(k1.privateKey));
    const r = await validate(dir);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(new RegExp(`nodes/node1\\.yaml:${await keyLine(dir, 'node1')}:\\d+: statusKey: is a private key: the state may only hold the public key`));
    expect(keyMaterial(k1.privateKey).length).toBeGreaterThan(3);
    for (const line of keyMaterial(k1.privateKey)) expect(r.output).not.toContain(line.slice(0, 24));
  });

  it('a private key in the state reaches no report: the node refuses the revision and publishes only the position', async () => {
    const c = await fakeCluster(scratch.dir, 'leak');
    await writeFile(path.join(c.state, 'nodes', 'node1.yaml'), `${await readFile(path.join(c.state, 'nodes', 'node1.yaml'), 'utf8')}${statusKeyYaml(k1.privateKey)}`);
    const n = fakeNode(c, 'node1');
    const status = await n.cycle();
    expect(status.source.state).toBe('invalid');
    expect(status.source.message).toMatch(/nodes\/node1\.yaml:\d+:\d+: statusKey: is a private key/);
    const published = await readFile(path.join(c.status.replace('{node}', 'node1'), 'status.json'), 'utf8');
    const report = await readFile(path.join(c.status.replace('{node}', 'node1'), 'REPORT.md'), 'utf8');
    for (const line of keyMaterial(k1.privateKey)) {
      expect(published).not.toContain(line.slice(0, 24));
      expect(report).not.toContain(line.slice(0, 24));
    }
    expect(n.nft.history).toEqual([]);
  });

  it('statusSignatures: required needs a statusKey on every node', async () => {
    const dir = await stateWith(statusKeyYaml(k1.publicKey), '', 'statusSignatures: required\n');
    const r = await validate(dir);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/^nodes\/node2\.yaml:\d+:\d+: name: node node2 has no statusKey, and cluster\.yaml:\d+:\d+ requires signed reports of every node$/m);
    expect(r.output).not.toMatch(/nodes\/node1\.yaml/);
  });

  it('refuses a statusKey that is not text, and an unknown statusSignatures', async () => {
    const dir = await stateWith('statusKey: { armored: x }\n', statusKeyYaml(k2.publicKey), 'statusSignatures: sometimes\n');
    const r = await validate(dir);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/^nodes\/node1\.yaml:\d+:\d+: statusKey: must be a string \(got a mapping\)$/m);
    expect(r.output).toMatch(/^cluster\.yaml:\d+:\d+: statusSignatures: must be one of optional, required \(got "sometimes"\)$/m);
  });
});

/** Two armored public keys in one block (what `gpg --export` of two keys gives). */
async function joinedKeys(): Promise<string> {
  const keys = await Promise.all([k1, k2].map((k) => openpgp.readKey({ armoredKey: k.publicKey })));
  const bytes = new Uint8Array([...keys.flatMap((k) => [...k.write()])]);
  return openpgp.armor(openpgp.enums.armor.publicKey, bytes);
}

async function expiredKey(): Promise<string> {
  const day = 24 * 3600;
  const { publicKey } = await openpgp.generateKey({ userIDs: [{ name: 'old' }], date: new Date(Date.now() - 10 * day * 1000), keyExpirationTime: day, format: 'armored' });
  return publicKey;
}

describe("the node's own signing key (status.signingKey)", () => {
  async function configWith(signingKey: string): Promise<string> {
    const file = path.join(scratch.dir, `agent-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, stringify({ apiVersion: 'cgw-sync/v1', kind: 'AgentConfig', node: 'node1', source: { url: scratch.dir }, stateDir: path.join(scratch.dir, 'st'), status: { signingKey } }));
    return file;
  }
  async function problem(signingKey: string): Promise<string> {
    const e = await loadAgentConfig(await configWith(signingKey)).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(AgentConfigError);
    return (e as AgentConfigError).message;
  }

  it('accepts a 0600 unprotected private key', async () => {
    expect((await loadAgentConfig(await configWith(k1.file))).status.signingKey).toBe(k1.file);
  });

  it('refuses a missing, world-readable, public or passphrase-protected key, at the field', async () => {
    expect(await problem(path.join(scratch.dir, 'none.key'))).toMatch(/:\d+:\d+: status\.signingKey: cannot read the status signing key .*none\.key: no such file \(create it with `cgw-sync init --signing-key /);
    const open = path.join(scratch.dir, 'open.key');
    await writeFile(open, k1.privateKey);
    await chmod(open, 0o644);
    expect(await problem(open)).toMatch(/status\.signingKey: .*open\.key is accessible by other users \(mode 644\); anyone who can read it can forge this node's reports: make it 0600/);
    const pub = path.join(scratch.dir, 'pub.key');
    await writeFile(pub, k1.publicKey, { mode: 0o600 });
    expect(await problem(pub)).toMatch(/status\.signingKey: status signing key .*pub\.key: not an armored OpenPGP private key/);
    const locked = path.join(scratch.dir, 'locked.key');
    const { privateKey } = await openpgp.generateKey({ userIDs: [{ name: 'locked' }], passphrase: 'secret', format: 'armored' });
    await writeFile(locked, privateKey, { mode: 0o600 });
    expect(await problem(locked)).toMatch(/status\.signingKey: .*the private key is protected by a passphrase/);
  });
});
