// Push webhooks of GitHub, Gitea/Forgejo and GitLab (as Flux's notification-controller Receiver
// takes them): who sent it, whether it is authentic, and whether it announces a push to the
// tracked branch. Pure: the HTTP side is server.ts.
//
// Authentication comes before anything else looks at the body: GitHub and Gitea/Forgejo sign the
// raw body with HMAC-SHA256 (X-Hub-Signature-256: sha256=<hex>, X-Gitea-Signature /
// X-Forgejo-Signature: <hex>); GitLab sends the shared secret itself (X-Gitlab-Token). Every
// comparison is constant-time. Only an authentic body is parsed as JSON.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { quoteValue } from '../state/diagnostics.js';

export type Forge = 'github' | 'gitea' | 'gitlab';
export const FORGES: readonly Forge[] = ['github', 'gitea', 'gitlab'];

type Headers = Record<string, string | string[] | undefined>;

/** One header's value; a header sent twice is not trusted (which one would the forge mean?). */
function header(h: Headers, name: string): string | undefined | null {
  const v = h[name];
  return Array.isArray(v) ? null : v;
}

/**
 * The forge a request claims to come from, by its event header. Gitea and Forgejo also send
 * X-GitHub-Event (for compatibility), so their own headers are looked at first.
 */
export function forgeOf(h: Headers): { forge: Forge; event: string } | undefined {
  for (const [forge, name] of [['gitea', 'x-forgejo-event'], ['gitea', 'x-gitea-event'], ['github', 'x-github-event'], ['gitlab', 'x-gitlab-event']] as const) {
    const event = header(h, name);
    if (typeof event === 'string') return { forge, event };
  }
  return undefined;
}

export type Authenticity = { ok: true } | { ok: false; why: string };

const hmacHex = (secret: Buffer, body: Buffer) => createHmac('sha256', secret).update(body).digest();

/** Constant-time equality of a received hex HMAC with the expected digest. */
function sameDigest(hex: string, expected: Buffer): boolean {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return false;
  return timingSafeEqual(Buffer.from(hex, 'hex'), expected);
}

/** Constant-time equality of a shared token (lengths differ: compared against itself, still false). */
function sameToken(token: string, secret: Buffer): boolean {
  const got = Buffer.from(token, 'utf8');
  if (got.length !== secret.length) {
    timingSafeEqual(secret, secret);
    return false;
  }
  return timingSafeEqual(got, secret);
}

/** Whether `body` was sent by the forge holding `secret`, by that forge's scheme. */
export function authenticate(forge: Forge, h: Headers, body: Buffer, secret: Buffer): Authenticity {
  if (forge === 'gitlab') {
    const token = header(h, 'x-gitlab-token');
    if (token === null) return { ok: false, why: 'X-Gitlab-Token sent more than once' };
    if (token === undefined) return { ok: false, why: 'no X-Gitlab-Token header (set the secret token of the webhook)' };
    return sameToken(token, secret) ? { ok: true } : { ok: false, why: 'X-Gitlab-Token does not match the secret' };
  }
  const names = forge === 'github' ? ['x-hub-signature-256'] : ['x-forgejo-signature', 'x-gitea-signature', 'x-hub-signature-256'];
  const expected = hmacHex(secret, body);
  for (const name of names) {
    const v = header(h, name);
    if (v === null) return { ok: false, why: `${name} sent more than once` };
    if (v === undefined) continue;
    const hex = name === 'x-hub-signature-256' ? /^sha256=(.*)$/.exec(v)?.[1] ?? '' : v;
    return sameDigest(hex, expected) ? { ok: true } : { ok: false, why: `${name} does not match the body signed with the secret` };
  }
  return { ok: false, why: `no signature header (${names.join(' or ')}); set the secret of the webhook` };
}

/** What an authentic request asks for. */
export type WebhookDecision =
  | { kind: 'ping' }
  | { kind: 'push'; ref: string; after?: string; summary: string }
  | { kind: 'ignored'; why: string }
  | { kind: 'invalid'; why: string };

export interface PushFilter {
  branch: string;
  /** When set, the payload's repository must be this one (any of the URLs the forge reports). */
  repository?: string;
}

const isPushEvent = (forge: Forge, event: string) => (forge === 'gitlab' ? event === 'Push Hook' : event === 'push');
const isPingEvent = (forge: Forge, event: string) => forge !== 'gitlab' && event === 'ping';

/** Decide on an authentic request's event and JSON body. */
export function decide(forge: Forge, event: string, body: Buffer, filter: PushFilter): WebhookDecision {
  if (isPingEvent(forge, event)) return { kind: 'ping' };
  if (!isPushEvent(forge, event)) return { kind: 'ignored', why: `event ${quoteValue(event)} is not a push` };
  let payload: unknown;
  try {
    payload = JSON.parse(body.toString('utf8'));
  } catch {
    return { kind: 'invalid', why: 'the body is not JSON' };
  }
  if (!payload || typeof payload !== 'object' || Array.isArray(payload)) return { kind: 'invalid', why: 'the body is not a JSON object' };
  const p = payload as Record<string, unknown>;
  if (typeof p.ref !== 'string') return { kind: 'invalid', why: 'the push has no ref' };
  if (p.ref !== `refs/heads/${filter.branch}`) return { kind: 'ignored', why: `ref ${quoteValue(p.ref)} is not the tracked branch` };
  if (filter.repository !== undefined && !repositoryUrls(p.repository, p.project).some((u) => sameRepository(u, filter.repository!))) {
    return { kind: 'ignored', why: 'the push is for another repository' };
  }
  const after = typeof p.after === 'string' && /^[0-9a-f]{40,64}$/.test(p.after) ? p.after : undefined;
  return { kind: 'push', ref: p.ref, ...(after && { after }), summary: `${forge} push to ${quoteValue(filter.branch)}${after ? ` at ${after.slice(0, 12)}` : ''}` };
}

/** The repository URLs a payload names (GitHub/Gitea: repository.*; GitLab: repository.* and project.*). */
function repositoryUrls(...objects: unknown[]): string[] {
  const keys = ['clone_url', 'html_url', 'ssh_url', 'git_url', 'url', 'git_http_url', 'git_ssh_url', 'homepage', 'web_url', 'http_url', 'ssh_url_to_repo', 'http_url_to_repo'];
  return objects.flatMap((o) => (o && typeof o === 'object' ? keys.map((k) => (o as Record<string, unknown>)[k]).filter((v): v is string => typeof v === 'string') : []));
}

/**
 * Whether two repository URLs name the same repository: scheme, user info, a trailing ".git" or
 * "/" and the case of the host do not matter; the path does (case-sensitive, as on most forges).
 */
export function sameRepository(a: string, b: string): boolean {
  const key = (u: string) => {
    const scp = /^(?:[^@/]+@)?([^:/]+):(?!\/\/)(.*)$/.exec(u);
    const m = scp ? ['', scp[1], scp[2]] : /^[a-z][a-z0-9+.-]*:\/\/(?:[^@/]*@)?([^/:]+)(?::\d+)?\/?(.*)$/i.exec(u);
    if (!m) return u;
    return `${m[1].toLowerCase()}/${m[2].replace(/\/+$/, '').replace(/\.git$/, '')}`;
  };
  return key(a) === key(b);
}
