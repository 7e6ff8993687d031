// The lab Git server's push webhooks: a real `git push` over smart HTTP to the server of
// src/git/http-server.ts makes it send a Gitea-shaped, signed push event to a real webhook
// listener (src/listen/server.ts) on 127.0.0.1; only loopback receivers are accepted.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBareRepo } from '../src/git/bare-repo.js';
import { startGitHttpServer, type GitHttpServer } from '../src/git/http-server.js';
import { changedBranches, checkWebhookUrl } from '../src/git/push-webhook.js';
import { startListener, type Listener } from '../src/listen/server.js';
import { waitUntil } from '../src/proc/process.js';
import { gitCli, writeTree } from './helpers/git-server.js';

const SECRET = `lab-${process.pid}-0123456789abcdef`;

describe('lab Git server: push webhooks', () => {
  let root: string;
  let server: GitHttpServer;
  let listener: Listener;
  let work: string;
  const pushes: string[] = [];
  const counted: string[] = [];

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'cgw-pushhook-'));
    const projectRoot = path.join(root, 'srv');
    await mkdir(projectRoot);
    const seed = path.join(root, 'seed');
    await writeTree(seed, { README: 'seed\n' });
    await createBareRepo(projectRoot, 'state.git', { seedDir: seed, message: 'seed' });
    listener = await startListener({
      address: '127.0.0.1',
      port: 0,
      webhook: { path: '/hooks/push', secret: Buffer.from(SECRET), filter: { branch: 'main' }, onPush: (p) => pushes.push(p) },
      count: (forge, result) => counted.push(`${forge} ${result}`),
      log: () => {},
    });
    server = await startGitHttpServer({ projectRoot, webhooks: [{ url: `${listener.url}/hooks/push`, secret: SECRET }] });
    work = path.join(root, 'work');
    await gitCli(['clone', '--quiet', server.repoUrl('state.git'), work]);
  });

  afterAll(async () => {
    await server?.stop();
    await listener?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  const commitAndPush = async (refspec: string) => {
    await gitCli(['-C', work, '-c', 'user.name=t', '-c', 'user.email=t@example.org', 'commit', '--quiet', '--allow-empty', '-m', `to ${refspec}`]);
    await gitCli(['-C', work, 'push', '--quiet', 'origin', refspec]);
    return gitCli(['-C', work, 'rev-parse', 'HEAD']);
  };

  it('a push to main is announced, signed, with its new tip; the receiver verifies and takes it', async () => {
    const tip = await commitAndPush('HEAD:refs/heads/main');
    expect(await waitUntil(() => pushes.length > 0, 10_000)).toBe(true);
    expect(pushes).toEqual([`gitea push to "main" at ${tip.slice(0, 12)}`]);
    expect(counted).toEqual(['gitea triggered']);
  });

  it('a push to another branch is announced too, and the receiver ignores it', async () => {
    await commitAndPush('HEAD:refs/heads/status/node1');
    expect(await waitUntil(() => counted.includes('gitea ignored'), 10_000)).toBe(true);
    expect(pushes).toHaveLength(1);
  });

  it('receivers off loopback are refused when the server starts', async () => {
    for (const url of ['http://192.0.2.1:9380/hooks/push', 'https://127.0.0.1/hooks/push', 'http://localhost.example.org/x', 'not a url']) {
      await expect(startGitHttpServer({ projectRoot: root, webhooks: [{ url, secret: SECRET }] })).rejects.toThrow(/webhook URL/);
    }
    expect(() => checkWebhookUrl('http://[::1]:9/x')).not.toThrow();
  });

  it('what moved: created, moved and deleted branches', () => {
    const a = 'a'.repeat(40);
    const b = 'b'.repeat(40);
    expect(changedBranches(new Map([['refs/heads/main', a], ['refs/heads/old', a]]), new Map([['refs/heads/main', b], ['refs/heads/new', a]]))).toEqual([
      { ref: 'refs/heads/main', before: a, after: b },
      { ref: 'refs/heads/new', before: '0'.repeat(40), after: a },
      { ref: 'refs/heads/old', before: a, after: '0'.repeat(40) },
    ]);
  });
});
