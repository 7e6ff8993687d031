// Push webhooks and metrics end to end: a real agent (nft in its own namespace, a real Git
// smart-HTTP server on 127.0.0.1) with its listener on 127.0.0.1, real HTTP requests signed with
// real HMAC. The schedule never fires during the test, so a cycle after a push is the webhook's.
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startListeningAgent, type ListeningAgent } from '../src/listen/agent.js';
import { authenticate, decide, forgeOf, sameRepository } from '../src/listen/webhook.js';
import { parseExposition } from '../src/metrics/exposition.js';
import { commitFiles, startGitFixture, type GitFixture } from './helpers/git-server.js';
import type { FileMap } from '../src/git/tree.js';
import { loadState } from '../src/state/load.js';
import { entersNode } from '../src/render/node-view.js';
import { mainTip, PROJECT_ROOT, startTestAgent, stateExampleFiles, withExtraForward, type TestAgent } from './helpers/agent-fixture.js';
import { spawnCliJson, type JsonLogProcess } from './helpers/cli.js';
import { waitUntil } from '../src/proc/process.js';
import { hmacHex, hookHeaders, pushPayload, rawConnection, sendHook, type Sender } from './helpers/webhook.js';

/** 00:00 on 1 January: never during a test run. */
const NEVER = '0 0 1 1 *';
const SECRET = `whsec-${process.pid}-0123456789abcdef`;
const CYCLE_MS = 15_000;

/** Log lines as they come, and a way to wait for the next one that matches (with a deadline). */
function logBook() {
  const lines: Record<string, unknown>[] = [];
  const waiting = new Set<{ match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }>();
  return {
    lines,
    log: (l: Record<string, unknown>) => {
      lines.push(l);
      for (const w of waiting) if (w.match(l)) {
        waiting.delete(w);
        w.resolve(l);
      }
    },
    next: (match: (l: Record<string, unknown>) => boolean, ms = CYCLE_MS) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(w);
          reject(new Error(`no matching log line within ${ms} ms; last lines: ${JSON.stringify(lines.slice(-5))}`));
        }, ms);
        const w = {
          match,
          resolve: (l: Record<string, unknown>) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        waiting.add(w);
      }),
  };
}

const isCycle = (l: Record<string, unknown>) => typeof l.revision === 'string' || l.revision === null;

describe('webhook receiver and metrics on a running agent', () => {
  let fx: GitFixture;
  let node: TestAgent;
  let agent: ListeningAgent;
  let hookUrl: string;
  let textfile: string;
  const book = logBook();
  let forwards = 0;

  beforeAll(async () => {
    const files = await stateExampleFiles();
    fx = await startGitFixture({ files });
    const dir = await fx.tmp('secrets');
    const secretFile = path.join(dir, 'webhook.secret');
    await writeFile(secretFile, `${SECRET}\n`, { mode: 0o600 });
    textfile = path.join(dir, 'metrics', 'cgw-sync.prom');
    node = await startTestAgent(fx, 'node1', {
      schedule: { cron: NEVER, jitterSeconds: 0 },
      listen: { address: '127.0.0.1', port: 0 },
      webhook: { secretFile },
      metrics: { textfile },
    });
    const first = book.next(isCycle);
    agent = await startListeningAgent({ config: node.config, nft: node.ns.nft, log: book.log }, { limits: { headersTimeoutMs: 400, requestTimeoutMs: 800, bodyBytes: 64 * 1024 } });
    hookUrl = `${agent.url}/hooks/push`;
    expect(await first).toMatchObject({ outcome: 'applied' });
    // The forwards entering node1, as the agent's own loader and node view count them.
    const { state } = await loadState(path.join(PROJECT_ROOT, 'state-example'));
    forwards = state!.forwards.filter((f) => entersNode(f, 'node1')).length;
  }, 60_000);

  afterAll(async () => {
    await agent?.stop();
    await node?.destroy();
    await fx?.cleanup();
  });

  /** A new commit on main (one more forward), and the push request a forge would send for it. */
  let extra = 0;
  async function pushCommit(): Promise<string> {
    extra++;
    forwards++;
    let files: FileMap = await stateExampleFiles();
    for (let i = 1; i <= extra; i++) files = withExtraForward(files, `extra${i}`, 2300 + i);
    await commitFiles(fx.repo, files, { message: `forward ${extra}` });
    return mainTip(fx);
  }

  it.each<Sender>(['github', 'gitea', 'forgejo', 'gitlab'])('a %s push to the tracked branch starts a cycle at once that applies it', async (sender) => {
    const tip = await pushCommit();
    const applied = book.next((l) => isCycle(l) && l.revision === tip);
    const before = agent.cycles();
    const res = await sendHook(hookUrl, { sender, body: pushPayload(sender, { ref: 'refs/heads/main', after: tip }), secret: SECRET });
    expect(res.status).toBe(202);
    expect(await applied).toMatchObject({ outcome: 'applied', revision: tip });
    expect(agent.cycles()).toBe(before + 1);
    const trigger = book.lines.filter((l) => l.outcome === 'triggered').at(-1);
    expect(String(trigger?.reason)).toContain(`${sender === 'forgejo' ? 'gitea' : sender} push to "main" at ${tip.slice(0, 12)}`);
  });

  it('pushes during a running cycle coalesce into one more cycle', async () => {
    const tip = await pushCommit();
    const body = pushPayload('github', { ref: 'refs/heads/main', after: tip });
    const before = agent.cycles();
    const applied = book.next((l) => isCycle(l) && l.revision === tip);
    const again = book.next((l) => isCycle(l) && l.outcome === 'converged');
    const answers = await Promise.all(Array.from({ length: 6 }, () => sendHook(hookUrl, { sender: 'github', body, secret: SECRET })));
    expect(answers.map((a) => a.status)).toEqual(Array(6).fill(202));
    await applied;
    // The first starts a cycle; the other five, arriving while it runs, make one more.
    await again;
    expect(agent.cycles()).toBe(before + 2);
  });

  /** A request that must not start a cycle: the answer comes after trigger() would have run. */
  async function expectNoCycle(send: () => Promise<{ status: number; text: string }>, status: number): Promise<string> {
    const before = agent.cycles();
    const triggers = book.lines.filter((l) => l.outcome === 'triggered').length;
    const res = await send();
    expect(res.status).toBe(status);
    expect(agent.cycles()).toBe(before);
    expect(book.lines.filter((l) => l.outcome === 'triggered').length).toBe(triggers);
    return res.text;
  }

  it('a wrong signature is refused (401) and starts nothing', async () => {
    const body = pushPayload('github', { ref: 'refs/heads/main', after: await mainTip(fx) });
    await expectNoCycle(() => sendHook(hookUrl, { sender: 'github', body, secret: `${SECRET}x` }), 401);
    await expectNoCycle(() => sendHook(hookUrl, { sender: 'gitea', body, secret: 'not-the-secret-at-all' }), 401);
    await expectNoCycle(() => sendHook(hookUrl, { sender: 'gitlab', body, secret: SECRET.slice(0, -1) }), 401);
    // The signature of another body (a replay with a changed ref).
    await expectNoCycle(() => sendHook(hookUrl, { sender: 'github', body, headers: { 'x-hub-signature-256': `sha256=${hmacHex(SECRET, `${body} `)}` } }), 401);
    expect(book.lines.filter((l) => l.outcome === 'webhook-refused').length).toBeGreaterThan(0);
  });

  it('a missing signature is refused (401), also the old SHA-1 one alone', async () => {
    const body = pushPayload('github', { ref: 'refs/heads/main', after: await mainTip(fx) });
    for (const sender of ['github', 'gitea', 'forgejo', 'gitlab'] as const) await expectNoCycle(() => sendHook(hookUrl, { sender, body }), 401);
    await expectNoCycle(() => sendHook(hookUrl, { sender: 'github', body, headers: { 'x-hub-signature': `sha1=${'0'.repeat(40)}` } }), 401);
  });

  it('a push to another branch is answered "ignored" and starts nothing', async () => {
    for (const sender of ['github', 'gitlab'] as const) {
      const text = await expectNoCycle(() => sendHook(hookUrl, { sender, body: pushPayload(sender, { ref: 'refs/heads/feature', after: 'c'.repeat(40) }), secret: SECRET }), 200);
      expect(text).toMatch(/ignored/);
    }
    // A tag push of the same name is not the branch either.
    await expectNoCycle(() => sendHook(hookUrl, { sender: 'github', body: pushPayload('github', { ref: 'refs/tags/main', after: 'c'.repeat(40) }), secret: SECRET }), 200);
  });

  it('ping is answered and starts nothing; other events are ignored', async () => {
    expect(await expectNoCycle(() => sendHook(hookUrl, { sender: 'github', event: 'ping', body: JSON.stringify({ zen: 'hi', hook_id: 1 }), secret: SECRET }), 200)).toMatch(/pong/);
    expect(await expectNoCycle(() => sendHook(hookUrl, { sender: 'github', event: 'issues', body: '{}', secret: SECRET }), 200)).toMatch(/ignored/);
    expect(await expectNoCycle(() => sendHook(hookUrl, { sender: 'gitlab', event: 'Tag Push Hook', body: '{}', secret: SECRET }), 200)).toMatch(/ignored/);
  });

  it('only POST reaches the receiver (405 with Allow); unknown paths are 404', async () => {
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const res = await sendHook(hookUrl, { sender: 'github', method, body: '{}', secret: SECRET });
      expect(res.status).toBe(405);
      expect(res.headers.get('allow')).toBe('POST');
    }
    expect((await fetch(`${agent.url}/hooks/other`, { method: 'POST' })).status).toBe(404);
    expect((await fetch(`${agent.url}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('an oversized body is refused with 413 before it is read', async () => {
    const body = pushPayload('github', { ref: 'refs/heads/main', after: await mainTip(fx) });
    const headers = hookHeaders({ sender: 'github', body, secret: SECRET });
    // Announced: 10 MB, of which only a few bytes are ever sent.
    const c = await rawConnection(hookUrl);
    const head = Object.entries({ ...headers, 'content-length': String(10 * 1024 * 1024), host: 'x' }).map(([k, v]) => `${k}: ${v}`).join('\r\n');
    await c.write(`POST /hooks/push HTTP/1.1\r\n${head}\r\n\r\n${body}`);
    expect(await c.closedWithin(5_000)).toBeDefined();
    expect(c.received()).toMatch(/^HTTP\/1\.1 413 /);
    // Chunked, no length: cut off once it passes the cap (64 KiB here); the rest is never sent.
    const d = await rawConnection(hookUrl);
    const chunked = Object.entries({ ...headers, 'transfer-encoding': 'chunked', host: 'x' }).map(([k, v]) => `${k}: ${v}`).join('\r\n');
    await d.write(`POST /hooks/push HTTP/1.1\r\n${chunked}\r\n\r\n`);
    const chunk = 'x'.repeat(16 * 1024);
    for (let i = 0; i < 5; i++) await d.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
    expect(await d.closedWithin(5_000)).toBeDefined();
    expect(d.received()).toMatch(/^HTTP\/1\.1 413 /);
  });

  it('a slow client is cut off: stalled headers and a stalled body', async () => {
    const before = agent.cycles();
    /** Milliseconds from writing `partial` (and then nothing) until the server closed the connection. */
    const cutOffAfter = async (partial: string) => {
      const c = await rawConnection(hookUrl);
      const t0 = Date.now();
      await c.write(partial);
      const closed = await c.closedWithin(5_000);
      expect(closed, 'still open after 5 s').toBeDefined();
      return closed! - t0;
    };
    // The listener's limits here: 400 ms for the headers, 800 ms for the whole request.
    expect(await cutOffAfter('POST /hooks/push HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n')).toBeLessThan(3_000);
    expect(await cutOffAfter('POST /hooks/push HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"ref":')).toBeLessThan(3_000);
    expect(agent.cycles()).toBe(before);
  });

  it('/metrics has every family with plausible values after the cycles', async () => {
    const res = await fetch(`${agent.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const { types, samples } = parseExposition(await res.text());
    const one = (name: string, labels: Record<string, string> = {}) => samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(types).toMatchObject({
      cgw_sync_cycles_total: 'counter',
      cgw_sync_cycle_duration_seconds: 'histogram',
      cgw_sync_cycle_phase_duration_seconds: 'histogram',
      cgw_sync_drift_items_total: 'counter',
      cgw_sync_applied_revision_info: 'gauge',
      cgw_sync_applied_revision_commit_timestamp_seconds: 'gauge',
      cgw_sync_applied_revision_age_seconds: 'gauge',
      cgw_sync_forwards: 'gauge',
      cgw_sync_map_elements: 'gauge',
      cgw_sync_guests: 'gauge',
      cgw_sync_last_success_timestamp_seconds: 'gauge',
      cgw_sync_webhook_requests_total: 'counter',
    });
    const tip = await mainTip(fx);
    expect(one('cgw_sync_applied_revision_info', { revision: tip })).toBe(1);
    const now = Date.now() / 1000;
    const committed = one('cgw_sync_applied_revision_commit_timestamp_seconds')!;
    expect(committed).toBeLessThanOrEqual(now + 1);
    expect(committed).toBeGreaterThan(now - 600);
    expect(one('cgw_sync_applied_revision_age_seconds')).toBeGreaterThanOrEqual(0);
    expect(one('cgw_sync_applied_revision_age_seconds')).toBeLessThan(600);
    expect(one('cgw_sync_cycles_total', { outcome: 'applied' })).toBe(1 + 4 + 1);
    expect(one('cgw_sync_cycles_total', { outcome: 'error' })).toBe(0);
    expect(one('cgw_sync_cycle_duration_seconds_count')).toBe(agent.cycles());
    for (const phase of ['source', 'load', 'read', 'plan', 'apply', 'report']) {
      expect(one('cgw_sync_cycle_phase_duration_seconds_count', { phase }), phase).toBe(agent.cycles());
      expect(one('cgw_sync_cycle_phase_duration_seconds_sum', { phase }), phase).toBeGreaterThanOrEqual(0);
    }
    expect(one('cgw_sync_cycle_duration_seconds_sum')).toBeGreaterThan(0);
    expect(one('cgw_sync_forwards')).toBe(forwards);
    const elements = samples.filter((s) => s.name === 'cgw_sync_map_elements').reduce((n, s) => n + s.value, 0);
    expect(elements).toBeGreaterThanOrEqual(forwards);
    expect(one('cgw_sync_last_success_timestamp_seconds')).toBeGreaterThan(now - 120);
    expect(one('cgw_sync_webhook_requests_total', { forge: 'github', result: 'triggered' })).toBeGreaterThanOrEqual(7);
    expect(one('cgw_sync_webhook_requests_total', { forge: 'github', result: 'unauthorized' })).toBeGreaterThanOrEqual(2);
  });

  it('the textfile is replaced whole after each cycle, and the secret is nowhere', async () => {
    await agent.flushed();
    const before = await stat(textfile);
    const first = parseExposition(await readFile(textfile, 'utf8'));
    const tip = await pushCommit();
    const applied = book.next((l) => isCycle(l) && l.revision === tip);
    expect((await sendHook(hookUrl, { sender: 'gitea', body: pushPayload('gitea', { ref: 'refs/heads/main', after: tip }), secret: SECRET })).status).toBe(202);
    await applied;
    await agent.flushed();
    const after = await stat(textfile);
    // A rename over the old file: a new inode, never the old one rewritten in place.
    expect(after.ino).not.toBe(before.ino);
    expect(after.mode & 0o777).toBe(0o644);
    expect((await readdir(path.dirname(textfile))).filter((f) => f !== path.basename(textfile))).toEqual([]);
    const text = await readFile(textfile, 'utf8');
    const second = parseExposition(text);
    expect(second.samples.find((s) => s.name === 'cgw_sync_applied_revision_info')?.labels.revision).toBe(tip);
    expect(first.samples.find((s) => s.name === 'cgw_sync_applied_revision_info')?.labels.revision).not.toBe(tip);
    const metricsText = await (await fetch(`${agent.url}/metrics`)).text();
    for (const [where, t] of Object.entries({ textfile: text, metrics: metricsText, log: JSON.stringify(book.lines) })) expect(t.includes(SECRET), where).toBe(false);
  });
});

describe('webhook decisions (pure)', () => {
  const secret = Buffer.from('0123456789abcdef0123');
  const body = Buffer.from(pushPayload('github', { ref: 'refs/heads/main', after: 'd'.repeat(40), repo: 'https://github.com/Ops/State.git' }));
  const filter = { branch: 'main' };

  it('tells the forges apart, Gitea and Forgejo before the X-GitHub-Event they also send', () => {
    expect(forgeOf({ 'x-github-event': 'push' })).toEqual({ forge: 'github', event: 'push' });
    expect(forgeOf({ 'x-gitea-event': 'push', 'x-github-event': 'push' })).toEqual({ forge: 'gitea', event: 'push' });
    expect(forgeOf({ 'x-forgejo-event': 'push' })).toEqual({ forge: 'gitea', event: 'push' });
    expect(forgeOf({ 'x-gitlab-event': 'Push Hook' })).toEqual({ forge: 'gitlab', event: 'Push Hook' });
    expect(forgeOf({ 'x-github-event': ['push', 'push'] })).toBeUndefined();
    expect(forgeOf({})).toBeUndefined();
  });

  it('authenticates by each forge\'s scheme only', () => {
    const sig = hmacHex(secret.toString(), body);
    expect(authenticate('github', { 'x-hub-signature-256': `sha256=${sig}` }, body, secret)).toEqual({ ok: true });
    expect(authenticate('gitea', { 'x-gitea-signature': sig }, body, secret)).toEqual({ ok: true });
    expect(authenticate('gitea', { 'x-hub-signature-256': `sha256=${sig}` }, body, secret)).toEqual({ ok: true });
    // GitHub's scheme does not take Gitea's header, nor a bare hex, nor upper-case junk.
    expect(authenticate('github', { 'x-gitea-signature': sig }, body, secret).ok).toBe(false);
    expect(authenticate('github', { 'x-hub-signature-256': sig }, body, secret).ok).toBe(false);
    expect(authenticate('github', { 'x-hub-signature-256': `sha256=${sig.slice(0, -2)}` }, body, secret).ok).toBe(false);
    expect(authenticate('gitlab', { 'x-gitlab-token': secret.toString() }, body, secret)).toEqual({ ok: true });
    expect(authenticate('gitlab', { 'x-gitlab-token': `${secret.toString()}0` }, body, secret).ok).toBe(false);
    // A signature header twice: refused, whichever of the two is right.
    expect(authenticate('github', { 'x-hub-signature-256': [`sha256=${sig}`, 'sha256=00'] }, body, secret).ok).toBe(false);
  });

  it('filters by branch and, when configured, by repository', () => {
    expect(decide('github', 'push', body, filter)).toMatchObject({ kind: 'push', ref: 'refs/heads/main', after: 'd'.repeat(40) });
    expect(decide('github', 'push', body, { branch: 'prod' })).toMatchObject({ kind: 'ignored' });
    expect(decide('github', 'push', body, { branch: 'main', repository: 'git@github.com:Ops/State' })).toMatchObject({ kind: 'push' });
    expect(decide('github', 'push', body, { branch: 'main', repository: 'https://github.com/ops/other.git' })).toMatchObject({ kind: 'ignored' });
    expect(decide('github', 'push', Buffer.from('{"ref": 1}'), filter)).toMatchObject({ kind: 'invalid' });
    expect(decide('github', 'push', Buffer.from('[1]'), filter)).toMatchObject({ kind: 'invalid' });
    expect(decide('github', 'push', Buffer.from('not json'), filter)).toMatchObject({ kind: 'invalid' });
  });

  it('compares repository URLs by host and path', () => {
    expect(sameRepository('https://user:pw@GitHub.com/ops/state.git', 'git@github.com:ops/state')).toBe(true);
    expect(sameRepository('ssh://git@gitea.lan:2222/ops/state.git', 'https://gitea.lan/ops/state/')).toBe(true);
    expect(sameRepository('https://github.com/ops/state', 'https://github.com/ops/state2')).toBe(false);
    expect(sameRepository('https://github.com/ops/state', 'https://evil.example/ops/state')).toBe(false);
  });
});

describe('cgw-sync run (the built CLI) with its listener', () => {
  let fx: GitFixture;
  let node: TestAgent;
  let proc: JsonLogProcess | undefined;

  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
    const secretFile = path.join(await fx.tmp('secrets'), 'webhook.secret');
    await writeFile(secretFile, SECRET, { mode: 0o600 });
    node = await startTestAgent(fx, 'node2', { schedule: { cron: NEVER, jitterSeconds: 0 }, listen: { address: '127.0.0.1', port: 0 }, webhook: { secretFile } });
  });

  afterAll(async () => {
    if (proc && proc.child.exitCode === null && proc.child.signalCode === null) {
      proc.child.kill('SIGKILL');
      await proc.exited;
    }
    await node?.destroy();
    await fx?.cleanup();
  });

  it('listens as configured: a signed push applies at once, /metrics answers, SIGTERM closes the listener', async () => {
    const p = spawnCliJson(['run', '--config', node.configFile, '--log', 'json']);
    proc = p;
    expect(await waitUntil(() => p.lines.some(isCycle), CYCLE_MS), p.stderr()).toBe(true);
    const base = /webhook (http:\/\/127\.0\.0\.1:\d+)\/hooks\/push/.exec(String(p.lines.find((l) => l.outcome === 'listening')?.reason))?.[1];
    expect(base).toBeDefined();
    await commitFiles(fx.repo, withExtraForward(await stateExampleFiles()), { message: 'one more forward' });
    const tip = await mainTip(fx);
    expect((await sendHook(`${base}/hooks/push`, { sender: 'github', body: pushPayload('github', { ref: 'refs/heads/main', after: tip }), secret: SECRET })).status).toBe(202);
    expect(await waitUntil(() => p.lines.some((l) => isCycle(l) && l.revision === tip), CYCLE_MS), JSON.stringify(p.lines)).toBe(true);
    expect(await (await fetch(`${base}/metrics`)).text()).toContain(`cgw_sync_applied_revision_info{revision="${tip}"} 1`);
    p.child.kill('SIGTERM');
    expect(await p.exited).toEqual([0, null]);
    expect(p.lines.at(-1)).toMatchObject({ outcome: 'stopped', cycles: 2 });
    await expect(fetch(`${base}/metrics`)).rejects.toThrow();
    expect(p.stderr()).toBe('');
    expect(JSON.stringify(p.lines).includes(SECRET)).toBe(false);
  });
});
