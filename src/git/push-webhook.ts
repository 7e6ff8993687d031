// The lab Git server's push webhooks (http-server.ts `webhooks`): after a push moved branches,
// one Gitea-shaped push event per moved branch, signed with HMAC-SHA256 (X-Gitea-Signature), to
// each configured receiver, as a Gitea server would send it. Receivers must be on loopback: the
// lab's agents listen on 127.0.0.1, and this server never sends anything elsewhere.
import { createHmac, randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import path from 'node:path';
import { run } from '../netns/netns.js';

export interface PushWebhook {
  /** http://127.0.0.1:PORT/PATH (or [::1]): loopback only. */
  url: string;
  secret: string;
}

export interface BranchMove {
  ref: string;
  before: string;
  after: string;
}

const ZERO = '0'.repeat(40);
const SEND_TIMEOUT_MS = 5_000;

/** Throws unless `url` is plain http to a loopback address. */
export function checkWebhookUrl(url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`webhook URL ${JSON.stringify(url)} is not a URL`);
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = (isIP(host) === 4 && host.startsWith('127.')) || host === '::1';
  if (u.protocol !== 'http:' || !loopback) throw new Error(`webhook URL ${JSON.stringify(url)}: the Git server sends webhooks only over http to a loopback address (127.0.0.0/8, ::1)`);
}

/** refs/heads/* -> commit id of the bare repository `repo`. */
export async function branchTips(repo: string): Promise<Map<string, string>> {
  const out = await run('git', ['--git-dir', repo, 'for-each-ref', '--format=%(objectname) %(refname)', 'refs/heads/'], {
    env: { GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' },
  }).catch(() => ({ stdout: '' }));
  return new Map(
    out.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [oid, ref] = l.split(' ');
        return [ref, oid] as const;
      }),
  );
}

/** The branches a push created, moved or deleted. Pure. */
export function changedBranches(before: Map<string, string>, after: Map<string, string>): BranchMove[] {
  const refs = [...new Set([...before.keys(), ...after.keys()])].sort();
  return refs.filter((r) => before.get(r) !== after.get(r)).map((ref) => ({ ref, before: before.get(ref) ?? ZERO, after: after.get(ref) ?? ZERO }));
}

/** The body Gitea sends for a push (the fields receivers read). Pure. */
export function giteaPushPayload(repo: string, move: BranchMove): string {
  const name = path.basename(repo).replace(/\.git$/, '');
  return JSON.stringify({ ref: move.ref, before: move.before, after: move.after, repository: { name, full_name: `lab/${name}` }, pusher: { login: 'lab' } });
}

/** Send every move to every receiver; failures are logged, never thrown (the push itself succeeded). */
export async function sendPushWebhooks(hooks: PushWebhook[], repo: string, moves: BranchMove[], log: (line: string) => void): Promise<void> {
  await Promise.all(
    moves.flatMap((move) =>
      hooks.map(async (h) => {
        const body = giteaPushPayload(repo, move);
        const signature = createHmac('sha256', h.secret).update(body).digest('hex');
        try {
          const res = await fetch(h.url, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', 'X-Gitea-Event': 'push', 'X-GitHub-Event': 'push', 'X-Gitea-Delivery': randomUUID(), 'X-Gitea-Signature': signature },
            body,
            signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
          });
          await res.arrayBuffer();
          if (res.status >= 300) log(`webhook ${h.url} for ${move.ref}: HTTP ${res.status}`);
        } catch (e) {
          log(`webhook ${h.url} for ${move.ref}: ${(e as Error).message}`);
        }
      }),
    ),
  );
}
