// Test side of the push webhooks: payloads shaped like GitHub's, Gitea/Forgejo's and GitLab's,
// signed for real (HMAC-SHA256) or carrying GitLab's token, sent over real HTTP; and a raw
// socket client for what a well-behaved HTTP client never does (stall, lie about the length).
import { createHmac } from 'node:crypto';
import net from 'node:net';
import type { Forge } from '../../src/listen/webhook.js';

export type Sender = Forge | 'forgejo';

export interface HookRequest {
  sender: Sender;
  /** X-*-Event value (default: the sender's push event). */
  event?: string;
  body: string | Buffer;
  /** Signed with (or, for GitLab, sent as the token) this secret; undefined: nothing is sent. */
  secret?: string;
  /** Extra or replacing headers. */
  headers?: Record<string, string | string[]>;
  method?: string;
}

export const hmacHex = (secret: string, body: string | Buffer) => createHmac('sha256', secret).update(body).digest('hex');

/** A push payload as the forges send it (the fields cgw-sync reads, and some it does not). */
export function pushPayload(sender: Sender, opts: { ref: string; after: string; repo?: string }): string {
  const repo = opts.repo ?? 'http://forge.example/ops/state.git';
  const web = repo.replace(/\.git$/, '');
  if (sender === 'gitlab') {
    return JSON.stringify({ object_kind: 'push', ref: opts.ref, after: opts.after, project: { web_url: web, git_http_url: repo }, repository: { name: 'state', url: repo, homepage: web, git_http_url: repo } });
  }
  return JSON.stringify({ ref: opts.ref, before: '0'.repeat(40), after: opts.after, repository: { full_name: 'ops/state', clone_url: repo, html_url: web }, pusher: { name: 'someone' } });
}

/** The headers the sender puts on a request with this body. */
export function hookHeaders(r: HookRequest): Record<string, string | string[]> {
  const event = r.event ?? (r.sender === 'gitlab' ? 'Push Hook' : 'push');
  const h: Record<string, string | string[]> = { 'content-type': 'application/json' };
  if (r.sender === 'github') h['x-github-event'] = event;
  if (r.sender === 'gitea') Object.assign(h, { 'x-gitea-event': event, 'x-github-event': event });
  if (r.sender === 'forgejo') h['x-forgejo-event'] = event;
  if (r.sender === 'gitlab') h['x-gitlab-event'] = event;
  if (r.secret !== undefined) {
    const sig = hmacHex(r.secret, r.body);
    if (r.sender === 'github') h['x-hub-signature-256'] = `sha256=${sig}`;
    if (r.sender === 'gitea') h['x-gitea-signature'] = sig;
    if (r.sender === 'forgejo') h['x-forgejo-signature'] = sig;
    if (r.sender === 'gitlab') h['x-gitlab-token'] = r.secret;
  }
  return { ...h, ...r.headers };
}

export interface HookResponse {
  status: number;
  text: string;
  headers: Headers;
}

/** Send one webhook request with fetch. */
export async function sendHook(url: string, r: HookRequest): Promise<HookResponse> {
  const headers = new Headers();
  for (const [k, v] of Object.entries(hookHeaders(r))) for (const x of [v].flat()) headers.append(k, x);
  const body = typeof r.body === 'string' ? r.body : new Uint8Array(r.body);
  const res = await fetch(url, { method: r.method ?? 'POST', headers, ...(r.method === 'GET' || r.method === 'HEAD' ? {} : { body }) });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

/** A raw TCP client: the caller writes what it wants when it wants; records what comes back and when the server closed. */
export async function rawConnection(url: string) {
  const u = new URL(url);
  const socket = net.connect(Number(u.port), u.hostname);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let received = '';
  socket.on('data', (d: Buffer) => {
    received += d.toString('latin1');
  });
  socket.on('error', () => {});
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
  return {
    write: (data: string | Buffer) => new Promise<void>((resolve) => socket.write(data, () => resolve())),
    received: () => received,
    /** Resolves with the time the server closed the connection, or undefined after `ms`. */
    closedWithin: (ms: number) => Promise.race([closed, new Promise<undefined>((r) => setTimeout(() => r(undefined), ms).unref())]),
    destroy: () => socket.destroy(),
  };
}
