// A report commit goes to the server in one request (a POST to receive-pack carrying the old tip
// it builds on; no ref advertisement first), and what lands there is the same commit as before:
// its files, parent, author and message, checked with the plain git CLI (and `git fsck`). The
// server's report-status is read strictly.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishStatus, receivePackRefusal } from '../src/git/status-branch.js';
import { countingProxy, type CountingProxy } from './helpers/counting-proxy.js';
import { gitCli, startGitFixture, type GitFixture } from './helpers/git-server.js';

const pkt = (text: string) => `${(Buffer.byteLength(text) + 4).toString(16).padStart(4, '0')}${text}`;
const REF = 'refs/heads/status/n1';

describe('report-status of receive-pack', () => {
  it('tells an updated ref from a refused one, an unpack failure and a malformed answer', () => {
    expect(receivePackRefusal(Buffer.from(`${pkt('unpack ok\n')}${pkt(`ok ${REF}\n`)}0000`), REF)).toBeUndefined();
    expect(receivePackRefusal(Buffer.from(`${pkt('unpack ok\n')}${pkt(`ng ${REF} failed to update ref\n`)}0000`), REF)).toBe('refused by the server: failed to update ref');
    expect(receivePackRefusal(Buffer.from(`${pkt('unpack ok\n')}${pkt('ok refs/heads/other\n')}0000`), REF)).toBe(`the server did not report on ${REF}`);
    expect(receivePackRefusal(Buffer.from(`${pkt('unpack index-pack abnormal exit\n')}${pkt(`ng ${REF} unpacker error\n`)}0000`), REF)).toMatch(/could not unpack the report: index-pack abnormal exit/);
    expect(receivePackRefusal(Buffer.from('0000'), REF)).toBe('the server sent no report-status');
    expect(() => receivePackRefusal(Buffer.from(`zzzz${pkt('unpack ok\n')}`), REF)).toThrow(/malformed/);
    expect(() => receivePackRefusal(Buffer.from('00ffunpack ok\n'), REF)).toThrow(/malformed/);
  });
});

describe('publishing a report over HTTP', () => {
  let fx: GitFixture;
  let proxy: CountingProxy;
  beforeAll(async () => {
    fx = await startGitFixture({ files: { 'cluster.yaml': 'name: lab\n' } });
    proxy = await countingProxy(fx.server.url);
  });
  afterAll(async () => {
    await proxy?.close();
    await fx?.cleanup();
  });

  it('is one POST per report, and the branch holds exactly the commits built, with their content', async () => {
    const o = { url: `${proxy.url}/state.git`, node: 'n1', workDir: await fx.tmp('status') };
    const one = { 'status.json': '{"n":1}\n', 'REPORT.md': '# n1\n', 'more/detail.txt': 'nested\n' };
    const first = await publishStatus(o, one, 'status: one');
    proxy.requests.length = 0;
    const two = { ...one, 'status.json': '{"n":2}\n' };
    const second = await publishStatus(o, two, 'status: two\n\nwith a body');
    expect(second).toMatchObject({ committed: true, attempts: 1 });
    expect(proxy.requests).toEqual(['POST /state.git/git-receive-pack']);

    const git = (...args: string[]) => gitCli(['--git-dir', fx.repo, ...args]);
    expect(await git('rev-parse', 'status/n1')).toBe(second.oid);
    expect(await git('rev-parse', 'status/n1^')).toBe(first.oid);
    expect(await git('rev-list', '--max-parents=0', 'status/n1')).toBe(first.oid);
    expect(await git('log', '-1', '--format=%an <%ae>%n%B', 'status/n1')).toBe('cgw-sync n1 <cgw-sync@n1>\nstatus: two\n\nwith a body');
    expect((await git('ls-tree', '-r', '--name-only', 'status/n1')).split('\n').sort()).toEqual(Object.keys(two).sort());
    for (const [file, text] of Object.entries(two)) expect(`${await git('show', `status/n1:${file}`)}\n`).toBe(text);
    await git('fsck', '--strict', '--no-dangling');
  });
  it('a server that refuses a push without the advertisement first gets the ordinary push, and the report lands', async () => {
    // As a forge might: a receive-pack POST is answered only after a GET of its advertisement.
    const strict = await countingProxy(fx.server.url, (seen) => {
      const last = seen[seen.length - 1]!;
      if (!last.startsWith('POST ') || !last.endsWith('/git-receive-pack')) return undefined;
      return seen.at(-2)?.startsWith('GET ') && seen.at(-2)!.includes('service=git-receive-pack') ? undefined : 403;
    });
    try {
      const o = { url: `${strict.url}/state.git`, node: 'n2', workDir: await fx.tmp('status-strict') };
      const files = { 'status.json': '{"n":1}\n' };
      const r = await publishStatus(o, files, 'status: strict');
      expect(r).toMatchObject({ committed: true });
      // The one-request push was tried, refused, then the ordinary push: advertisement, then the pack.
      const pushes = strict.requests.filter((q) => q.includes('receive-pack'));
      expect(pushes).toEqual(['POST /state.git/git-receive-pack', 'GET /state.git/info/refs?service=git-receive-pack', 'POST /state.git/git-receive-pack']);
      expect(await gitCli(['--git-dir', fx.repo, 'rev-parse', 'status/n2'])).toBe(r.oid);
      expect(await gitCli(['--git-dir', fx.repo, 'show', 'status/n2:status.json'])).toBe('{"n":1}');
    } finally {
      await strict.close();
    }
  });
});
