// The state repository over SSH: a real sshd on 127.0.0.1 (own host key, a client key the test
// makes), the system git as transport, and the same source checks as over HTTP: a signed revision
// is fetched, verified, applied in a namespace, and the report is pushed to status/<node> over ssh.
// A wrong host key or a missing ssh section is an error, never a silent fallback.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchSource, SourceUnavailable } from '../src/git/source.js';
import { isRemoteUrl, isSshUrl, sshCommand } from '../src/git/ssh.js';
import { mainTip, readPublished, startTestAgent, stateExampleFiles } from './helpers/agent-fixture.js';
import { commitFiles, generateKey, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { startSshServer, type SshServer } from './helpers/sshd.js';

describe('ssh URLs', () => {
  it('recognises ssh:// and scp-like URLs, and nothing else', () => {
    for (const u of ['ssh://git@example.org/infra/state.git', 'ssh://example.org:2222/x', 'git@example.org:infra/state.git']) expect(isSshUrl(u), u).toBe(true);
    for (const u of ['https://example.org/x.git', '/srv/state', 'state', './a:b', 'C:/x', 'file:///srv/state']) expect(isSshUrl(u), u).toBe(false);
    expect(isRemoteUrl('https://example.org/x.git')).toBe(true);
  });

  it('builds an ssh command that checks host keys, never prompts, and uses only the configured key', () => {
    const cmd = sshCommand({ identityFile: "/etc/cgw-sync/ssh/it's key", knownHostsFile: '/etc/cgw-sync/ssh/known_hosts' }, 30);
    expect(cmd).toContain(`-i '/etc/cgw-sync/ssh/it'\\''s key'`);
    for (const o of ['StrictHostKeyChecking=yes', 'BatchMode=yes', 'ForwardAgent=no', 'IdentitiesOnly=yes', 'IdentityAgent=none', "UserKnownHostsFile='/etc/cgw-sync/ssh/known_hosts'"]) {
      expect(cmd).toContain(`-o ${o}`);
    }
  });
});

describe('state repository over ssh (real sshd on 127.0.0.1)', () => {
  let sshd: SshServer;
  let fx: GitFixture;
  let signed: string;
  let keyFile: string;

  beforeAll(async () => {
    sshd = await startSshServer();
    fx = await startGitFixture({ files: await stateExampleFiles() });
    const key = await generateKey('Ssh Admin');
    signed = await commitFiles(fx.repo, await stateExampleFiles(), { sign: key.privateKey, message: 'signed over ssh' });
    keyFile = path.join(fx.root, 'admins.asc');
    await writeFile(keyFile, key.publicKey);
  });
  afterAll(async () => {
    await fx?.cleanup();
    await sshd?.stop();
  });

  it('fetches, verifies, applies and publishes the status branch over ssh', async () => {
    const agent = await startTestAgent(fx, 'node1', {
      source: { url: sshd.url(fx.repo), ssh: sshd.client, trustedKeys: [keyFile] },
    });
    try {
      const status = await agent.cycle();
      expect(status.errors).toEqual([]);
      expect(status.outcome).toBe('applied');
      expect(status.appliedRevision).toBe(signed);
      expect(await agent.tables()).toEqual(['ip cgw_nat', 'netdev cgw_arp']);
      const published = await readPublished(fx, 'node1');
      expect(published?.json.appliedRevision).toBe(signed);
      // The next cycle fetches again over ssh, finds nothing new and keeps the branch as it is.
      const again = await agent.cycle();
      expect(again.outcome).toBe('converged');
      expect((await readPublished(fx, 'node1'))?.commits).toBe(published?.commits);
    } finally {
      await agent.destroy();
    }
  });

  it('refuses an unsigned tip over ssh exactly as over http', async () => {
    const cacheDir = await fx.tmp('cache');
    const unsigned = await commitFiles(fx.repo, await stateExampleFiles(), { message: 'unsigned', branch: 'unsigned', parent: signed });
    const key = await generateKey('Other');
    const r = await fetchSource({ url: sshd.url(fx.repo), branch: 'unsigned', cacheDir, ssh: sshd.client, trustedKeys: [key.publicKey] });
    expect(r.accepted).toBe(false);
    expect(r.revision).toBe(unsigned);
    expect(r.accepted ? undefined : r.refusal).toBe('unsigned');
  });

  it('fails on a host key that is not the known one, and without an ssh section', async () => {
    const cacheDir = await fx.tmp('cache');
    const wrong = fetchSource({ url: sshd.url(fx.repo), cacheDir, ssh: { ...sshd.client, knownHostsFile: sshd.wrongKnownHosts } });
    await expect(wrong).rejects.toThrow(SourceUnavailable);
    await expect(wrong).rejects.toThrow(/Host key verification failed/);
    await expect(fetchSource({ url: sshd.url(fx.repo), cacheDir })).rejects.toThrow(/source\.ssh\.identityFile/);
    expect(await mainTip(fx)).toBe(signed);
  });
});
