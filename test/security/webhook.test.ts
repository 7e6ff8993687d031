// Adversarial group "webhook listener": whoever can reach the agent's listener (it runs as root)
// without the secret can neither start a cycle nor make the process spend memory or time on
// them, nor put anything of theirs into the log unescaped, nor learn the secret. The real
// listener (src/listen/server.ts) on 127.0.0.1, real HTTP, real HMAC; a request "started a
// cycle" when onPush was called.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startListener, type Listener } from '../../src/listen/server.js';
import { hmacHex, hookHeaders, pushPayload, rawConnection, sendHook } from '../helpers/webhook.js';

const SECRET = `sec-${process.pid}-fedcba9876543210`;
const BODY_CAP = 32 * 1024;

interface Receiver {
  listener: Listener;
  url: string;
  pushes: string[];
  logs: { outcome: string; reason: string }[];
}

async function receiver(opts: { forge?: 'github' | 'gitea' | 'gitlab'; repository?: string } = {}): Promise<Receiver> {
  const pushes: string[] = [];
  const logs: Receiver['logs'] = [];
  const listener = await startListener({
    address: '127.0.0.1',
    port: 0,
    webhook: { path: '/hooks/push', secret: Buffer.from(SECRET), ...(opts.forge && { forge: opts.forge }), filter: { branch: 'main', ...(opts.repository && { repository: opts.repository }) }, onPush: (s) => pushes.push(s) },
    metrics: () => '# metrics\n',
    log: (l) => logs.push(l),
    limits: { bodyBytes: BODY_CAP, headersTimeoutMs: 400, requestTimeoutMs: 800, maxConnections: 8 },
  });
  return { listener, url: `${listener.url}/hooks/push`, pushes, logs };
}

const TIP = 'e'.repeat(40);
const main = (sender: 'github' | 'gitea' | 'gitlab' = 'github') => pushPayload(sender, { ref: 'refs/heads/main', after: TIP });

describe('webhook listener under attack', () => {
  let r: Receiver;
  beforeAll(async () => {
    r = await receiver();
  });
  afterAll(async () => {
    await r.listener.close();
  });

  it('an unsigned body is never parsed: broken JSON without a signature is 401, not 400', async () => {
    const res = await sendHook(r.url, { sender: 'github', body: '{"ref": "refs/heads/main", broken' });
    expect(res.status).toBe(401);
    expect(r.pushes).toEqual([]);
  });

  it('a signature header sent twice is refused, even when one of them is right', async () => {
    const body = main();
    const res = await sendHook(r.url, { sender: 'github', body, headers: { 'x-hub-signature-256': [`sha256=${hmacHex(SECRET, body)}`, 'sha256=00'] } });
    expect(res.status).toBe(401);
    expect(r.pushes).toEqual([]);
  });

  it('a GitLab token that is a prefix, a superset or a case variant of the secret is refused', async () => {
    for (const token of [SECRET.slice(0, 8), `${SECRET}${SECRET}`, SECRET.toUpperCase(), `${SECRET} x`]) {
      expect((await sendHook(r.url, { sender: 'gitlab', body: main('gitlab'), headers: { 'x-gitlab-token': token } })).status).toBe(401);
    }
    expect(r.pushes).toEqual([]);
  });

  it('answers echo nothing of the request, and the log shows hostile values escaped', async () => {
    const hostile = 'refs/heads/x\u001b[31m\n\u202eevil"} 1';
    const body = pushPayload('github', { ref: hostile, after: TIP });
    const res = await sendHook(r.url, { sender: 'github', event: `push\u0007${'A'.repeat(300)}`.replace(/[^\x20-\x7e]/g, ''), body, secret: SECRET });
    expect(res.status).toBe(200);
    expect(res.text).toBe('ignored\n');
    // Signed and on the wrong branch: ignored, so not logged at all; an unsigned one is logged, escaped.
    await sendHook(r.url, { sender: 'github', body, headers: { 'x-hub-signature-256': `sha256=${'0'.repeat(64)}`, 'x-github-event': 'push' } });
    const log = JSON.stringify(r.logs);
    expect(log.includes('\u001b')).toBe(false);
    expect(log.includes('\u202e')).toBe(false);
    expect(r.pushes).toEqual([]);
  });

  it('a signed push to the branch names the branch from the configuration, not from the payload', async () => {
    const res = await sendHook(r.url, { sender: 'gitea', body: main('gitea'), secret: SECRET });
    expect(res.status).toBe(202);
    expect(r.pushes.at(-1)).toBe(`gitea push to "main" at ${TIP.slice(0, 12)}`);
    r.pushes.length = 0;
  });

  it('deeply nested JSON in a signed body is a 400 and the listener goes on', async () => {
    const deep = `${'['.repeat(15_000)}${']'.repeat(15_000)}`;
    expect((await sendHook(r.url, { sender: 'github', body: deep, secret: SECRET })).status).toBe(400);
    const res = await sendHook(r.url, { sender: 'github', body: main(), secret: SECRET });
    expect(res.status).toBe(202);
    r.pushes.length = 0;
  });

  it('a body over the cap is cut off at the cap: the process never buffers more', async () => {
    const before = process.memoryUsage().arrayBuffers;
    const c = await rawConnection(r.url);
    const head = Object.entries({ ...hookHeaders({ sender: 'github', body: '', secret: SECRET }), 'transfer-encoding': 'chunked', host: 'x' }).map(([k, v]) => `${k}: ${v}`).join('\r\n');
    await c.write(`POST /hooks/push HTTP/1.1\r\n${head}\r\n\r\n`);
    const chunk = Buffer.alloc(8 * 1024, 0x61);
    // Keep sending after the answer; the server closes, later writes fail.
    for (let i = 0; i < 64 && !c.received(); i++) await c.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]));
    expect(await c.closedWithin(5_000)).toBeDefined();
    expect(c.received()).toMatch(/^HTTP\/1\.1 413 /);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 1024 * 1024);
    // An announced length over the cap is refused before any body byte.
    const d = await rawConnection(r.url);
    await d.write(`POST /hooks/push HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nContent-Type: application/json\r\nContent-Length: ${BODY_CAP + 1}\r\n\r\n`);
    expect(await d.closedWithin(5_000)).toBeDefined();
    expect(d.received()).toMatch(/^HTTP\/1\.1 413 /);
  });

  it('garbage lengths, huge headers and non-JSON content types are refused', async () => {
    const c = await rawConnection(r.url);
    await c.write('POST /hooks/push HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nContent-Length: -5\r\n\r\n');
    expect(await c.closedWithin(5_000)).toBeDefined();
    expect(c.received()).toMatch(/^HTTP\/1\.1 400 /);
    const d = await rawConnection(r.url);
    await d.write(`POST /hooks/push HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(20 * 1024)}\r\n\r\n`);
    expect(await d.closedWithin(5_000)).toBeDefined();
    expect(d.received()).toMatch(/^HTTP\/1\.1 431 /);
    const form = `payload=${encodeURIComponent(main())}`;
    expect((await sendHook(r.url, { sender: 'github', body: form, secret: SECRET, headers: { 'content-type': 'application/x-www-form-urlencoded' } })).status).toBe(415);
    expect(r.pushes).toEqual([]);
  });

  it('a connection that sends nothing is closed; many at once do not lock out a forge', async () => {
    const idle = await Promise.all(Array.from({ length: 8 }, () => rawConnection(r.url)));
    const closed = await Promise.all(idle.map((c) => c.closedWithin(5_000)));
    expect(closed.every((t) => t !== undefined)).toBe(true);
    expect((await sendHook(r.url, { sender: 'github', body: main(), secret: SECRET })).status).toBe(202);
    r.pushes.length = 0;
  });

  it('refusals are logged at a bounded rate', async () => {
    const before = r.logs.length;
    for (let i = 0; i < 40; i++) await sendHook(r.url, { sender: 'github', body: main(), secret: `wrong-${i}-xxxxxxxxxxxxxxxx` });
    expect(r.logs.length - before).toBeLessThanOrEqual(10);
    expect(r.pushes).toEqual([]);
  });

  it('the secret is in no answer and no log line', async () => {
    const texts = [JSON.stringify(r.logs), (await sendHook(r.url, { sender: 'gitlab', body: main('gitlab'), secret: 'x'.repeat(SECRET.length) })).text];
    for (const t of texts) expect(t.includes(SECRET)).toBe(false);
  });
});

describe('webhook listener restricted to one forge and repository', () => {
  let r: Receiver;
  beforeAll(async () => {
    r = await receiver({ forge: 'github', repository: 'https://github.com/ops/state' });
  });
  afterAll(async () => {
    await r.listener.close();
  });

  it('another forge\'s scheme is refused even with the right secret (no downgrade to a plain token)', async () => {
    expect((await sendHook(r.url, { sender: 'gitlab', body: main('gitlab'), secret: SECRET })).status).toBe(401);
    expect((await sendHook(r.url, { sender: 'gitea', body: main('gitea'), secret: SECRET })).status).toBe(401);
    expect(r.pushes).toEqual([]);
  });

  it('a signed push for another repository is ignored; for this one it triggers', async () => {
    const other = pushPayload('github', { ref: 'refs/heads/main', after: TIP, repo: 'https://github.com/evil/state.git' });
    expect((await sendHook(r.url, { sender: 'github', body: other, secret: SECRET })).status).toBe(200);
    expect(r.pushes).toEqual([]);
    const mine = pushPayload('github', { ref: 'refs/heads/main', after: TIP, repo: 'https://github.com/ops/state.git' });
    expect((await sendHook(r.url, { sender: 'github', body: mine, secret: SECRET })).status).toBe(202);
    expect(r.pushes).toHaveLength(1);
  });
});
