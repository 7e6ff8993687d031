// `cgw-sync init` and `cgw-sync check-config` with real files: the written config loads, fits the
// state and names no file that does not exist; check-config finds every problem with its line.
// Also the review's default base in a CI-style clone (only origin/main).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadAgentConfig } from '../src/agent/config.js';
import { gitCli, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { PROJECT_ROOT, stateExampleFiles } from './helpers/agent-fixture.js';
import { cliBin, cliMain } from './helpers/cli.js';

const EXAMPLE = path.join(PROJECT_ROOT, 'state-example');
let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'cgw-init-'));
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('cgw-sync init', () => {
  it('writes a config the loader accepts, tables from the state, folders created, no missing files named', async () => {
    const file = path.join(tmp, 'etc', 'agent.yaml');
    const stateDir = path.join(tmp, 'var', 'cgw-sync');
    const r = await cliBin(['init', '--source', 'https://git.example.org/cgw-state.git', '--node', 'node2', '--state', EXAMPLE, '--config', file, '--state-dir', stateDir]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`${file}: no problems (node node2, state ${EXAMPLE})`);
    const config = await loadAgentConfig(file);
    expect(config).toMatchObject({ node: 'node2', stateDir, hooksDir: path.join(tmp, 'etc', 'hooks'), ownedTables: ['ip cgw_nat', 'netdev cgw_arp', 'ip cgw_raw', 'bridge cgw_sync'] });
    expect(config.source).toMatchObject({ url: 'https://git.example.org/cgw-state.git', trustedKeys: [] });
    expect(config.source.tokenFile).toBeUndefined();
    // state-example's guests boot from an LVM volume and an image folder: both allowed, block devices too.
    expect(config.guests).toMatchObject({ imageDirs: ['/dev/vg0', '/var/lib/cgw-sync/images'], allowBlockDevices: true });
    expect((await stat(stateDir)).isDirectory()).toBe(true);
    expect((await stat(config.hooksDir as string)).isDirectory()).toBe(true);
    expect((await stat(file)).mode & 0o077).toBe(0);
    // Token, keys and the Git permissions are explained, not configured.
    const text = await readFile(file, 'utf8');
    expect(text).toMatch(/^ {2}# tokenFile: /m);
    expect(text).toMatch(/^ {2}# trustedKeys:/m);
    expect(text).toContain('push access to status/*');
  });

  it('--signing-key creates the node key (0600, public key beside it), names it, and keeps an existing one', async () => {
    const file = path.join(tmp, 'sk', 'agent.yaml');
    const key = path.join(tmp, 'sk', 'keys', 'node1.key');
    const r = await cliBin(['init', '--source', 'https://git.example.org/s.git', '--node', 'node1', '--config', file, '--state-dir', path.join(tmp, 'sk', 'var'), '--signing-key', key]);
    expect(r.code, r.err).toBe(0);
    expect((await loadAgentConfig(file)).status.signingKey).toBe(key);
    expect((await stat(key)).mode & 0o777).toBe(0o600);
    const pub = await readFile(`${key}.pub.asc`, 'utf8');
    expect(pub).toMatch(/^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
    // What to put in the state, ready to paste, and the private key nowhere in the output.
    expect(r.out).toContain(`add its public key (${key}.pub.asc) to nodes/node1.yaml:\nstatusKey: |\n  -----BEGIN PGP PUBLIC KEY BLOCK-----`);
    expect(r.out).not.toContain('PRIVATE KEY');
    const before = await readFile(key, 'utf8');
    const again = await cliBin(['init', '--source', 'https://git.example.org/s.git', '--node', 'node1', '--config', file, '--state-dir', path.join(tmp, 'sk', 'var'), '--signing-key', key, '--force']);
    expect(again.out).toContain(`kept the existing signing key ${key}`);
    expect(await readFile(key, 'utf8')).toBe(before);
  });

  it('refuses to overwrite without --force, and overwrites with it', async () => {
    const file = path.join(tmp, 'twice.yaml');
    const args = ['init', '--source', path.join(tmp, 'repo'), '--node', 'node1', '--config', file, '--state-dir', path.join(tmp, 'twice-state')];
    await writeFile(file, 'keep me\n');
    const refused = await cliMain(args);
    expect(refused).toMatchObject({ code: 1, err: expect.stringContaining(`${file} exists; nothing was written (--force overwrites it)`) });
    expect(await readFile(file, 'utf8')).toBe('keep me\n');
    const forced = await cliMain([...args, '--force']);
    // The local source folder does not exist (yet): written, and check-config says so.
    expect(forced.code).toBe(1);
    expect(forced.err).toMatch(new RegExp(`^${file}:\\d+:\\d+: source\\.url: ${path.join(tmp, 'repo')} does not exist$`, 'm'));
    expect((await loadAgentConfig(file)).node).toBe('node1');
  });

  it('an ssh source: the deploy key and known_hosts are named, and check-config says they are missing', async () => {
    const file = path.join(tmp, 'ssh.yaml');
    const r = await cliMain(['init', '--source', 'ssh://git@git.example.org/cgw-state.git', '--node', 'node1', '--config', file, '--state-dir', path.join(tmp, 'ssh-state')]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(new RegExp(`^${file}:\\d+:\\d+: source\\.ssh\\.identityFile: .*/etc/cgw-sync/ssh/id_ed25519`, 'm'));
    expect((await loadAgentConfig(file, { checkFiles: false })).source.ssh).toEqual({ identityFile: '/etc/cgw-sync/ssh/id_ed25519', knownHostsFile: '/etc/cgw-sync/ssh/known_hosts' });
  });

  it('a node the state does not have: nothing written', async () => {
    const file = path.join(tmp, 'node9.yaml');
    const r = await cliMain(['init', '--source', 'https://x.example/s.git', '--node', 'node9', '--state', EXAMPLE, '--config', file]);
    expect(r).toMatchObject({ code: 1, err: expect.stringContaining('node "node9" is not in the state (nodes: node1, node2)') });
    expect(existsSync(file)).toBe(false);
  });
});

describe('cgw-sync check-config', () => {
  it('the shipped example passes against state-example', async () => {
    const r = await cliBin(['check-config', '--config', path.join(PROJECT_ROOT, 'systemd', 'agent.example.yaml'), '--state', EXAMPLE]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
  });

  it('reports every problem with line:column and field, in file order', async () => {
    const file = path.join(tmp, 'bad.yaml');
    await writeFile(path.join(tmp, 'not-a-key.asc'), 'hello\n');
    const lines = [
      'apiVersion: cgw-sync/v1',
      'kind: AgentConfig',
      'node: node3',
      'source:',
      '  url: https://git.example.org/s.git',
      '  tokenFile: missing-token',
      '  trustedKeys: [not-a-key.asc]',
      'ownedTables: [ip cgw_nat]',
      'hooksDir: no-hooks-here',
      'stateDir: bad.yaml/state',
      'nft: /nonexistent/nft',
      `netns: cgwt${process.pid}-nosuchns`,
    ];
    await writeFile(file, `${lines.join('\n')}\n`);
    const r = await cliMain(['check-config', '--config', file, '--state', EXAMPLE]);
    expect(r.code).toBe(1);
    const at = (field: string) => `${file}:${lines.findIndex((l) => l.trimStart().startsWith(`${field.split('.').at(-1)?.replace(/\[\d+\]$/, '')}:`)) + 1}:`;
    expect(r.err.split('\n').slice(0, -2)).toEqual([
      expect.stringMatching(new RegExp(`^${at('node')}\\d+: node: node "node3" is not in the state \\(nodes: node1, node2\\)$`)),
      expect.stringMatching(new RegExp(`^${at('source.tokenFile')}\\d+: source.tokenFile: cannot read token file ${tmp}/missing-token`)),
      expect.stringMatching(new RegExp(`^${at('source.trustedKeys')}\\d+: source.trustedKeys\\[0\\]: trusted key file ${tmp}/not-a-key.asc is not an armored OpenPGP public key`)),
      expect.stringMatching(new RegExp(`^${at('ownedTables')}\\d+: ownedTables: the state names tables this node does not let cgw-sync own: netdev cgw_arp, ip cgw_raw`)),
      expect.stringMatching(new RegExp(`^${at('hooksDir')}\\d+: hooksDir: ${tmp}/no-hooks-here does not exist$`)),
      expect.stringMatching(new RegExp(`^${at('stateDir')}\\d+: stateDir: ${tmp}/bad.yaml/state does not exist and cannot be created: ${tmp}/bad.yaml is not a folder$`)),
      expect.stringMatching(new RegExp(`^${at('nft')}\\d+: nft: /nonexistent/nft is not an executable file$`)),
      expect.stringMatching(new RegExp(`^${at('netns')}\\d+: netns: network namespace cgwt${process.pid}-nosuchns does not exist`)),
    ]);
    expect(r.err).toContain(`cgw-sync: ${file}: 8 problem(s)`);
  });

  it('schema and field problems (a cron that does not parse) first, with line:column, before anything else is looked at', async () => {
    const file = path.join(tmp, 'schema.yaml');
    await writeFile(file, 'apiVersion: cgw-sync/v1\nkind: AgentConfig\nsource:\n  url: x\ndrift: sometimes\n');
    const r = await cliMain(['check-config', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(new RegExp(`^${file}:5:8: drift: `, 'm'));
    await writeFile(file, 'apiVersion: cgw-sync/v1\nkind: AgentConfig\nsource:\n  url: https://git.example.org/s.git\nschedule:\n  cron: "61 * * * *"\n');
    const cron = await cliMain(['check-config', '--config', file]);
    expect(cron.code).toBe(1);
    expect(cron.err).toMatch(new RegExp(`^${file}:6:9: schedule\\.cron: .*61`, 'm'));
  });
});

describe('check-config: listener, webhook and metrics', () => {
  it('the keys init explains load once uncommented; a foreign address and a textfile folder that cannot be made are named', async () => {
    const file = path.join(tmp, 'listen', 'agent.yaml');
    const stateDir = path.join(tmp, 'listen', 'state');
    const r = await cliMain(['init', '--source', 'https://git.example.org/s.git', '--node', 'node1', '--config', file, '--state-dir', stateDir]);
    expect(r.code, r.err).toBe(0);
    const secret = path.join(tmp, 'listen', 'webhook-secret');
    await writeFile(secret, 'a'.repeat(64), { mode: 0o600 });
    // Uncomment the block as an operator would, pointing at files of this test.
    const text = (await readFile(file, 'utf8'))
      .replace(/^# (listen:|webhook:|metrics:| {2}(address|port|secretFile|path|textfile): )/gm, '$1')
      .replace('/etc/cgw-sync/webhook-secret', secret)
      .replace('/var/lib/prometheus/node-exporter/cgw-sync.prom', path.join(tmp, 'listen', 'metrics', 'cgw-sync.prom'));
    await writeFile(file, text);
    const config = await loadAgentConfig(file);
    expect(config).toMatchObject({ listen: { address: '127.0.0.1', port: 9380 }, webhook: { secretFile: secret, path: '/hooks/push' }, metrics: { endpoint: true } });
    expect((await cliMain(['check-config', '--config', file])).code).toBe(0);

    const bad = text.replace('address: 127.0.0.1', 'address: 192.0.2.123').replace(path.join(tmp, 'listen', 'metrics'), path.join(file, 'metrics'));
    await writeFile(file, bad);
    const checked = await cliMain(['check-config', '--config', file]);
    expect(checked.code).toBe(1);
    const line = (key: string) => bad.split('\n').findIndex((l) => l.trimStart().startsWith(key)) + 1;
    expect(checked.err).toMatch(new RegExp(`^${file}:${line('address:')}:\\d+: listen\\.address: 192\\.0\\.2\\.123 is not an address of this machine`, 'm'));
    expect(checked.err).toMatch(new RegExp(`^${file}:${line('textfile:')}:\\d+: metrics\\.textfile: .* does not exist and cannot be created`, 'm'));
  });
});

describe('plan --all-nodes in a CI clone', () => {
  let fx: GitFixture;
  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
  });
  afterAll(async () => fx?.cleanup());

  it('without --base: main when it exists, else origin/main; neither is a clear error', async () => {
    const files = await stateExampleFiles();
    const work = path.join(tmp, 'work');
    await gitCli(['clone', '--quiet', fx.url, work]);
    await writeFile(path.join(work, 'forwards', 'web.yaml'), (files['forwards/web.yaml'] as string).replace('port: 80', 'port: 8080'));
    await gitCli(['-C', work, '-c', 'user.name=t', '-c', 'user.email=t@example.org', 'commit', '--quiet', '-am', 'web on 8080']);
    await gitCli(['-C', work, 'push', '--quiet', 'origin', 'HEAD:refs/heads/feature']);
    // As a CI job checks out a pull request: only the feature branch is local.
    const ci = path.join(tmp, 'ci');
    await gitCli(['clone', '--quiet', '--branch', 'feature', fx.url, ci]);
    expect(await gitCli(['-C', ci, 'branch', '--format=%(refname)'])).toBe('refs/heads/feature');
    const r = await cliMain(['plan', '--all-nodes', '--rev', 'feature', '--state', ci]);
    expect(r.err).toBe('');
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/^## cgw-sync plan: `feature` \([0-9a-f]{12}\) against `origin\/main` \([0-9a-f]{12}\)/);
    expect(r.out).toContain('8080');

    const lonely = path.join(tmp, 'lonely');
    await gitCli(['clone', '--quiet', '--single-branch', '--branch', 'feature', fx.url, lonely]);
    const none = await cliMain(['plan', '--all-nodes', '--rev', 'feature', '--state', lonely]);
    expect(none).toMatchObject({ code: 1, err: expect.stringContaining('neither main nor origin/main exists') });
  });
});
