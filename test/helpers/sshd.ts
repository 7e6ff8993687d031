// Test fixture: a real OpenSSH server on 127.0.0.1 serving Git over ssh. Everything it uses is
// made in a temp dir: its host key, a client key pair, authorized_keys and known_hosts. It runs in
// a private mount namespace with its own tmpfs on /run (sshd needs /run/sshd), so the host's /run
// is untouched; it is started on a free port and stopped by its PID.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from '../../src/netns/netns.js';
import type { SshOptions } from '../../src/git/ssh.js';

export interface SshServer {
  port: number;
  /** The client key and the server's host key, as the agent config names them. */
  client: SshOptions;
  /** known_hosts whose entry is a different key (host key check must fail). */
  wrongKnownHosts: string;
  /** ssh:// URL of an absolute repository path on this machine (as root). */
  url(repoPath: string): string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

async function keyPair(file: string): Promise<string> {
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', path.basename(file), '-f', file]);
  return (await readFile(`${file}.pub`, 'utf8')).trim();
}

/** Resolves once the server sends its SSH banner; rejects at the deadline. */
async function waitForBanner(port: number, child: ChildProcess, deadlineMs: number): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}`);
    const banner = await new Promise<string>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      sock.setTimeout(1000);
      sock.once('data', (d) => {
        sock.destroy();
        resolve(String(d));
      });
      sock.once('error', () => resolve(''));
      sock.once('timeout', () => {
        sock.destroy();
        resolve('');
      });
    });
    if (banner.startsWith('SSH-2.0-')) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`sshd did not answer on 127.0.0.1:${port} within ${deadlineMs} ms`);
}

export async function startSshServer(): Promise<SshServer> {
  const dir = await mkdtemp(path.join(tmpdir(), `cgw-sshd-${process.pid}-`));
  const hostKey = path.join(dir, 'host_ed25519');
  const clientKey = path.join(dir, 'client_ed25519');
  const otherKey = path.join(dir, 'other_ed25519');
  const [hostPub, clientPub, otherPub] = await Promise.all([keyPair(hostKey), keyPair(clientKey), keyPair(otherKey)]);
  const port = await freePort();
  const knownHosts = path.join(dir, 'known_hosts');
  const wrongKnownHosts = path.join(dir, 'known_hosts.wrong');
  await writeFile(knownHosts, `[127.0.0.1]:${port} ${hostPub}\n`);
  await writeFile(wrongKnownHosts, `[127.0.0.1]:${port} ${otherPub}\n`);
  await writeFile(path.join(dir, 'authorized_keys'), `${clientPub}\n`);
  const config = path.join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'UsePAM no',
      // The temp dir is not root-only all the way up; the keys in it are the test's own.
      'StrictModes no',
      'AllowAgentForwarding no',
      'AllowTcpForwarding no',
      'X11Forwarding no',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  // exec chain: unshare -> sh -> sshd keep one PID, the one spawn() returns.
  const child = spawn(
    'unshare',
    ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && exec /usr/sbin/sshd -D -e -f "$0"', config],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d) => {
    stderr += String(d);
  });
  try {
    await waitForBanner(port, child, 10_000);
  } catch (e) {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw new Error(`${(e as Error).message}: ${stderr.trim()}`);
  }
  return {
    port,
    client: { identityFile: clientKey, knownHostsFile: knownHosts },
    wrongKnownHosts,
    url: (repoPath) => `ssh://root@127.0.0.1:${port}${repoPath}`,
    stop: async () => {
      if (child.exitCode === null && child.pid) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        process.kill(child.pid, 'SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
