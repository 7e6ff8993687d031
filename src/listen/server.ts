// The agent's optional HTTP listener (node:http): the push webhook receiver and /metrics.
// It runs inside a root process on a hypervisor and may face a network, so it is built to be
// cheap to refuse: a fixed small set of routes, POST only for the webhook, a body cap checked
// against Content-Length before anything is read (and counted while reading chunked bodies),
// timeouts for slow headers and slow bodies, a bound on connections, the signature checked on
// the raw body before it is parsed, and answers that echo nothing of the request. Refusals are
// logged at a bounded rate, so a flood cannot flood the log.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { authenticate, decide, forgeOf, type Forge, type PushFilter } from './webhook.js';
import type { WebhookResult } from '../metrics/agent.js';
import { EXPOSITION_CONTENT_TYPE } from '../metrics/exposition.js';

export const METRICS_PATH = '/metrics';

export interface ListenerLimits {
  /** Largest webhook body accepted (GitHub caps its payloads at 25 MB; a push is a few KB). */
  bodyBytes: number;
  /** Time a client has to send its headers. */
  headersTimeoutMs: number;
  /** Time a client has to send its whole request. */
  requestTimeoutMs: number;
  /** Open connections at once; more are dropped. */
  maxConnections: number;
}

export const DEFAULT_LIMITS: ListenerLimits = { bodyBytes: 1024 * 1024, headersTimeoutMs: 5_000, requestTimeoutMs: 10_000, maxConnections: 32 };

export interface WebhookOptions {
  path: string;
  secret: Buffer;
  /** Only this forge's webhooks are taken (default: any of the three). */
  forge?: Forge;
  filter: PushFilter;
  /** An authentic push to the tracked branch: start a cycle. */
  onPush: (summary: string) => void;
}

export interface ListenerOptions {
  address: string;
  port: number;
  webhook?: WebhookOptions;
  /** Serves /metrics when given: the exposition text at the time of the request. */
  metrics?: () => string;
  /** Counts each webhook request by forge ("unknown" before one is known) and result. */
  count?: (forge: string, result: WebhookResult) => void;
  /** Log lines (refusals at a bounded rate, errors). */
  log: (line: { outcome: string; reason: string }) => void;
  limits?: Partial<ListenerLimits>;
}

export interface Listener {
  /** e.g. http://127.0.0.1:9380 */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** At most this many refusals are logged per minute; the rest are counted in the next line. */
const REFUSALS_LOGGED_PER_MINUTE = 10;

function refusalLog(log: ListenerOptions['log']) {
  let windowStart = 0;
  let logged = 0;
  let dropped = 0;
  return (reason: string) => {
    const now = Date.now();
    if (now - windowStart > 60_000) {
      windowStart = now;
      logged = 0;
    }
    if (logged >= REFUSALS_LOGGED_PER_MINUTE) {
      dropped++;
      return;
    }
    logged++;
    log({ outcome: 'webhook-refused', reason: dropped ? `${reason} (and ${dropped} refused request(s) not logged)` : reason });
    dropped = 0;
  };
}

/** Start listening; resolves once bound (rejects when the address cannot be bound). */
export async function startListener(opts: ListenerOptions): Promise<Listener> {
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const refused = refusalLog(opts.log);
  const count = opts.count ?? (() => {});
  const server = http.createServer({
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // How often Node checks the two timeouts above (default 30 s, far too coarse for them).
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 2))),
    maxHeaderSize: 16 * 1024,
    keepAliveTimeout: 2_000,
  });
  server.maxConnections = limits.maxConnections;
  server.maxHeadersCount = 64;
  // An idle socket (no bytes at all) is closed too.
  server.setTimeout(limits.requestTimeoutMs, (s: Socket) => s.destroy());

  const answer = (res: http.ServerResponse, code: number, text: string, headers: Record<string, string> = {}) => {
    if (res.headersSent) return;
    res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...headers });
    res.end(`${text}\n`);
  };

  server.on('request', (req, res) => {
    const who = req.socket.remoteAddress ?? 'unknown';
    let pathname: string;
    try {
      pathname = new URL(req.url ?? '/', 'http://listener').pathname;
    } catch {
      return answer(res, 400, 'bad request');
    }
    if (opts.metrics && pathname === METRICS_PATH) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return answer(res, 405, 'method not allowed', { Allow: 'GET, HEAD' });
      const text = opts.metrics();
      res.writeHead(200, { 'Content-Type': EXPOSITION_CONTENT_TYPE, 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : text);
      return;
    }
    const hook = opts.webhook;
    if (!hook || pathname !== hook.path) {
      count('unknown', 'not_found');
      return answer(res, 404, 'not found');
    }
    const refuse = (code: number, forge: string, result: WebhookResult, text: string, why: string, headers: Record<string, string> = {}) => {
      count(forge, result);
      refused(`${code} to ${who}: ${why}`);
      // Closed after the answer: an unread body is not read on (Node drops the socket).
      answer(res, code, text, { Connection: 'close', ...headers });
    };
    if (req.method !== 'POST') return refuse(405, 'unknown', 'method_not_allowed', 'method not allowed', `${req.method} on the webhook path`, { Allow: 'POST' });
    const claimed = forgeOf(req.headers);
    if (!claimed) return refuse(400, 'unknown', 'bad_request', 'no forge event header', 'no X-GitHub-Event, X-Gitea-Event, X-Forgejo-Event or X-Gitlab-Event header');
    const { forge, event } = claimed;
    if (hook.forge && forge !== hook.forge) return refuse(401, forge, 'unauthorized', 'unauthorized', `a ${forge} webhook, but only ${hook.forge} webhooks are taken`);
    const length = req.headers['content-length'];
    if (length !== undefined && !(Number(length) <= limits.bodyBytes)) {
      return refuse(413, forge, 'too_large', 'payload too large', `Content-Length ${Number(length) || 'invalid'} over ${limits.bodyBytes} bytes`);
    }
    if (!/^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? '')) {
      return refuse(415, forge, 'unsupported_media_type', 'the webhook must send application/json', 'Content-Type is not application/json');
    }
    readCapped(req, limits.bodyBytes).then((body) => {
      if (body === 'too-large') return refuse(413, forge, 'too_large', 'payload too large', `body over ${limits.bodyBytes} bytes`);
      const auth = authenticate(forge, req.headers, body, hook.secret);
      if (!auth.ok) return refuse(401, forge, 'unauthorized', 'unauthorized', auth.why);
      const d = decide(forge, event, body, hook.filter);
      if (d.kind === 'invalid') return refuse(400, forge, 'bad_request', 'bad request', d.why);
      if (d.kind === 'ping') {
        count(forge, 'ping');
        return answer(res, 200, 'pong');
      }
      if (d.kind === 'ignored') {
        count(forge, 'ignored');
        return answer(res, 200, 'ignored');
      }
      count(forge, 'triggered');
      hook.onPush(d.summary);
      answer(res, 202, 'accepted: a cycle starts');
    }, () => req.destroy());
  });
  // A malformed request or a timeout: Node's own clientError answer (400, 431, 408) and close.

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.address, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${opts.address.includes(':') ? `[${opts.address}]` : opts.address}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The whole body, or 'too-large' as soon as it passes `limit` bytes (the rest is never buffered). */
function readCapped(req: http.IncomingMessage, limit: number): Promise<Buffer | 'too-large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.off('data', onData);
        req.pause();
        resolve('too-large');
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
    req.once('aborted', () => reject(new Error('aborted')));
  });
}
