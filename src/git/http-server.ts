// A small Git smart-HTTP server: Node's `http` in front of `git http-backend` run as CGI.
// Used by the tests and by the lab as the cluster's state/status repository host. It binds to
// 127.0.0.1 by default, can demand a token (to exercise credentials), can answer 503 for every
// request (outage simulation) and can be stopped and started again on the same port. It can send
// a Gitea-shaped, HMAC-signed push webhook (push-webhook.ts) after each push that moved a branch.
import { spawn, type ChildProcess } from 'node:child_process';
import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { branchTips, changedBranches, checkWebhookUrl, sendPushWebhooks, type PushWebhook } from './push-webhook.js';

export interface GitHttpServerOptions {
  /** Directory holding the bare repositories (GIT_PROJECT_ROOT); repo "x.git" is served at /x.git. */
  projectRoot: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: an ephemeral port, chosen on the first start and kept on restarts. */
  port?: number;
  /**
   * When set, every request must carry this token, either as `Authorization: Bearer <token>` or as
   * the password of HTTP Basic auth (any user name). Otherwise the server answers 401.
   */
  token?: string;
  /** Receives git http-backend's stderr lines and request errors (never request headers). */
  onLog?: (line: string) => void;
  /** After a push that moved branches: a signed Gitea-style push webhook per branch to each (loopback only). */
  webhooks?: PushWebhook[];
}

export interface GitHttpServer {
  /** Base URL, e.g. "http://127.0.0.1:40123". */
  readonly url: string;
  readonly port: number;
  /** URL of one repository under the project root, e.g. repoUrl("state.git"). */
  repoUrl(name: string): string;
  /** While true every request is answered with 503 (the process keeps listening). */
  setUnavailable(unavailable: boolean): void;
  /** Close the listener, drop open connections and end running backends. */
  stop(): Promise<void>;
  /** Listen again on the same port after stop(). */
  start(): Promise<void>;
}

/** Start a server; resolves once it is listening. */
export async function startGitHttpServer(opts: GitHttpServerOptions): Promise<GitHttpServer> {
  for (const w of opts.webhooks ?? []) checkWebhookUrl(w.url);
  const host = opts.host ?? '127.0.0.1';
  let port = opts.port ?? 0;
  let unavailable = false;
  const sockets = new Set<Socket>();
  const children = new Set<ChildProcess>();
  const log = opts.onLog ?? (() => {});

  const server = http.createServer((req, res) => {
    if (unavailable) {
      res.writeHead(503, { 'Content-Type': 'text/plain', 'Retry-After': '1' });
      res.end('service unavailable (simulated outage)\n');
      return;
    }
    const user = checkAuth(req.headers.authorization, opts.token);
    if (user === undefined) {
      res.writeHead(401, { 'Content-Type': 'text/plain', 'WWW-Authenticate': 'Basic realm="cgw-sync"' });
      res.end('authentication required\n');
      return;
    }
    let pathInfo: string;
    try {
      pathInfo = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
    } catch {
      res.writeHead(400, { 'Content-Type': 'text/plain' });
      res.end('bad request path\n');
      return;
    }
    const receivePack = /^(\/.+\.git)\/git-receive-pack$/.exec(pathInfo);
    if (!receivePack || !opts.webhooks?.length) return void runBackend(req, res, pathInfo, opts.projectRoot, user, children, log);
    // The branches before and after the push: what moved is what the webhooks announce.
    const repo = path.join(opts.projectRoot, receivePack[1]);
    const hooks = opts.webhooks;
    void branchTips(repo).then((before) => {
      runBackend(req, res, pathInfo, opts.projectRoot, user, children, log).once('close', () => {
        void branchTips(repo).then((after) => sendPushWebhooks(hooks, repo, changedBranches(before, after), log));
      });
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        port = (server.address() as AddressInfo).port;
        resolve();
      });
    });

  await listen();
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  return {
    url,
    port,
    repoUrl: (name) => `${url}/${name}`,
    setUnavailable: (on) => {
      unavailable = on;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        for (const c of children) c.kill('SIGKILL');
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
    start: async () => {
      if (!server.listening) await listen();
    },
  };
}

/**
 * Returns the authenticated user name ('' for anonymous access when no token is configured),
 * or undefined when the request must be refused.
 */
export function checkAuth(header: string | undefined, token: string | undefined): string | undefined {
  if (token === undefined) return '';
  if (!header) return undefined;
  const [scheme, value = ''] = header.split(/\s+/, 2);
  if (/^bearer$/i.test(scheme)) return sameSecret(value, token) ? 'token' : undefined;
  if (/^basic$/i.test(scheme)) {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return undefined;
    return sameSecret(decoded.slice(colon + 1), token) ? decoded.slice(0, colon) || 'token' : undefined;
  }
  return undefined;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function runBackend(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  pathInfo: string,
  projectRoot: string,
  user: string,
  children: Set<ChildProcess>,
  log: (line: string) => void,
): ChildProcess {
  const u = new URL(req.url ?? '/', 'http://localhost');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    GIT_PROJECT_ROOT: projectRoot,
    GIT_HTTP_EXPORT_ALL: '1',
    GATEWAY_INTERFACE: 'CGI/1.1',
    PATH_INFO: pathInfo,
    QUERY_STRING: u.search.replace(/^\?/, ''),
    REQUEST_METHOD: req.method ?? 'GET',
    CONTENT_TYPE: req.headers['content-type'] ?? '',
    REMOTE_ADDR: req.socket.remoteAddress ?? '',
    // http-backend only allows receive-pack for an authenticated user unless http.receivepack
    // is set in the repository; the bare-repo helper sets it, so both paths work.
    ...(user ? { REMOTE_USER: user } : {}),
  };
  if (req.headers['content-length']) env.CONTENT_LENGTH = req.headers['content-length'];
  if (req.headers['content-encoding']) env.HTTP_CONTENT_ENCODING = req.headers['content-encoding'];
  const gitProtocol = req.headers['git-protocol'];
  if (typeof gitProtocol === 'string') env.GIT_PROTOCOL = gitProtocol;

  const child = spawn('git', ['http-backend'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.on('close', () => children.delete(child));
  child.on('error', (e) => {
    log(`git http-backend: ${e.message}`);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
  child.stderr.on('data', (d: Buffer) => {
    for (const line of d.toString('utf8').split('\n')) if (line.trim()) log(line);
  });
  // The backend may exit before reading the whole body (e.g. on a bad request): ignore EPIPE.
  child.stdin.on('error', () => {});
  req.pipe(child.stdin);
  // Client went away before the response was complete: stop the backend.
  res.on('close', () => {
    if (!res.writableFinished && child.exitCode === null) child.kill('SIGKILL');
  });

  // CGI output: header lines, an empty line, then the body, which is streamed through.
  let head = Buffer.alloc(0);
  let headerDone = false;
  const forward = (chunk: Buffer) => {
    if (!res.write(chunk)) {
      child.stdout.pause();
      res.once('drain', () => child.stdout.resume());
    }
  };
  child.stdout.on('data', (chunk: Buffer) => {
    if (headerDone) {
      forward(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    const split = findHeaderEnd(head);
    if (!split) return;
    headerDone = true;
    const { status, headers } = parseCgiHeaders(head.subarray(0, split.headerEnd).toString('latin1'));
    res.writeHead(status.code, status.text, headers);
    const rest = head.subarray(split.bodyStart);
    if (rest.length) forward(rest);
  });
  child.stdout.on('end', () => {
    if (!headerDone && !res.headersSent) res.writeHead(502, { 'Content-Type': 'text/plain' });
    res.end();
  });
  return child;
}

function findHeaderEnd(buf: Buffer): { headerEnd: number; bodyStart: number } | undefined {
  const crlf = buf.indexOf('\r\n\r\n');
  const lf = buf.indexOf('\n\n');
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return { headerEnd: crlf, bodyStart: crlf + 4 };
  if (lf >= 0) return { headerEnd: lf, bodyStart: lf + 2 };
  return undefined;
}

/** Parse a CGI response header block: the `Status:` pseudo-header sets the HTTP status. */
export function parseCgiHeaders(block: string): {
  status: { code: number; text?: string };
  headers: Record<string, string | string[]>;
} {
  const headers: Record<string, string | string[]> = {};
  let status: { code: number; text?: string } = { code: 200 };
  for (const line of block.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name.toLowerCase() === 'status') {
      const m = /^(\d{3})\s*(.*)$/.exec(value);
      if (m) status = { code: Number(m[1]), text: m[2] || undefined };
      continue;
    }
    const prev = headers[name];
    headers[name] = prev === undefined ? value : ([] as string[]).concat(prev, value);
  }
  return { status, headers };
}
