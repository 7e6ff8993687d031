// What the source and the status branch share about talking to a Git server over HTTP(S):
// credentials (token from a file or an env var, handed to isomorphic-git via onAuth), an HTTP
// client with an idle timeout, and turning transport failures into one typed, scrubbed error.
// Secrets never appear in messages: URLs lose their userinfo and the token text is masked.
// Every token this process reads is also remembered (knownSecrets), so that whatever the agent
// writes to Git or prints can be masked again at the end, whichever path a value took.
import { readFile } from 'node:fs/promises';
import type { AuthCallback, GitHttpResponse, HttpClient } from 'isomorphic-git';
import nodeHttp from 'isomorphic-git/http/node';

export interface GitCredentials {
  /** File whose (trimmed) content is the token; read on every operation so rotation works. */
  tokenFile?: string;
  /** Environment variable holding the token. */
  tokenEnv?: string;
  /** User name sent with the token in HTTP Basic auth (default "cgw-sync"). */
  username?: string;
}

export const DEFAULT_TIMEOUT_MS = 30_000;

/** The server could not be reached or answered with an HTTP error. */
export class RemoteUnavailable extends Error {
  override name = 'RemoteUnavailable';
  constructor(
    message: string,
    /** HTTP status when the server answered (401, 403, 404, 503, ...). */
    readonly httpStatus?: number,
    /** Node/isomorphic-git error code, e.g. ECONNREFUSED or HttpError. */
    readonly code?: string,
  ) {
    super(message);
  }
}

/** A remote as the rest of the module uses it: a URL without userinfo, plus an auth callback. */
export interface Remote {
  url: string;
  onAuth: AuthCallback;
  http: HttpClient;
  /** Strings that must never appear in output (the token). */
  secrets: string[];
}

/**
 * Resolve the credentials for `url`. Userinfo in the URL is removed and used as the credential
 * when no token is configured (so the token never sits in a URL we store or print).
 */
export async function openRemote(url: string, creds: GitCredentials = {}, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Remote> {
  const { url: clean, username: urlUser, password: urlPass } = splitUserinfo(url);
  const token = (await loadToken(creds)) ?? rememberSecret(urlPass);
  const username = creds.username ?? urlUser ?? 'cgw-sync';
  // No onAuthFailure: a rejected token ends in HttpError 401 instead of an endless retry.
  const onAuth: AuthCallback = () => (token ? { username, password: token } : undefined);
  return { url: clean, onAuth, http: httpWithTimeout(timeoutMs), secrets: token ? [token] : [] };
}

export async function loadToken(creds: GitCredentials): Promise<string | undefined> {
  if (creds.tokenFile) {
    let text: string;
    try {
      text = await readFile(creds.tokenFile, 'utf8');
    } catch (e) {
      throw new Error(`cannot read token file ${creds.tokenFile}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    const token = text.trim();
    if (!token) throw new Error(`token file ${creds.tokenFile} is empty`);
    return rememberSecret(token);
  }
  if (creds.tokenEnv) {
    const token = process.env[creds.tokenEnv]?.trim();
    if (!token) throw new Error(`environment variable ${creds.tokenEnv} (git token) is not set`);
    return rememberSecret(token);
  }
  return undefined;
}

/**
 * `http`, keeping the last upload-pack ref advertisement it received (GET .../info/refs) to answer
 * the next identical GET with, once: a fetch that first asked for the refs (is anything new?)
 * does not make the server run git again for the same answer when isomorphic-git's fetch starts
 * with that GET. For one fetch only: make a new one per fetch.
 */
export function replayingAdvertisement(http: HttpClient): HttpClient {
  let held: { key: string; response: GitHttpResponse; chunks: Uint8Array[] } | undefined;
  return {
    request: async (req) => {
      const method = req.method ?? 'GET';
      if (method !== 'GET' || !/\/info\/refs\?service=git-upload-pack$/.test(req.url)) return http.request(req);
      const key = JSON.stringify([req.url, Object.entries(req.headers ?? {}).sort()]);
      if (held?.key === key) {
        const { response, chunks } = held;
        held = undefined;
        return { ...response, body: replay(chunks) };
      }
      const response = await http.request(req);
      if (response.statusCode !== 200 || !response.body) return response;
      const chunks: Uint8Array[] = [];
      for await (const chunk of response.body) chunks.push(chunk);
      held = { key, response, chunks };
      return { ...response, body: replay(chunks) };
    },
  };
}

async function* replay(chunks: Uint8Array[]): AsyncIterableIterator<Uint8Array> {
  yield* chunks;
}

/** isomorphic-git's Node client with an idle-socket timeout, so a hung server cannot hang us. */
function httpWithTimeout(timeoutMs: number): HttpClient {
  return {
    request: (req) => nodeHttp.request({ ...req, fetchOptions: { ...req.fetchOptions, timeout: timeoutMs } }),
  };
}

export function splitUserinfo(url: string): { url: string; username?: string; password?: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { url };
  }
  if (!u.username && !u.password) return { url };
  const username = u.username ? decodeURIComponent(u.username) : undefined;
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  u.username = '';
  u.password = '';
  return { url: u.toString(), username, password };
}

/** Secrets this process has read (tokens, passwords in URLs): masked in everything it writes. */
const remembered = new Set<string>();

/** Remember a secret so that `scrub` masks it from now on; returns it unchanged. */
export function rememberSecret<T extends string | undefined>(value: T): T {
  // Very short values would mask ordinary words; no real token is that short.
  if (value && value.length >= 4) remembered.add(value);
  return value;
}

/** Names of environment variables that by convention hold secrets. */
const SECRET_ENV_NAME = /TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|API_?KEY|PRIVATE_?KEY|AUTH/i;
/** Well-known variables whose values are not secret and may well appear in a report (the host name). */
const PUBLIC_ENV_NAME = /^(HOSTNAME|HOME|PWD|OLDPWD|PATH|SHELL|USER|LOGNAME|TERM|LANG|LANGUAGE|LC_[A-Z]+|TZ|TMPDIR|SHLVL|_)$/;

/**
 * Values of the process environment that must not leave it: those of secret-looking variables
 * (8+ characters), and, as a second line behind the state loader's refusal of symlinks such as
 * one to /proc/self/environ, every other value of 16+ characters that is not a path.
 */
export function environmentSecrets(env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    const value = raw?.trim() ?? '';
    if (SECRET_ENV_NAME.test(name) ? value.length >= 8 : value.length >= 16 && !PUBLIC_ENV_NAME.test(name) && !/^[\w.+-]*(\/[\w.@+-]*)+(:[\w.+-]*(\/[\w.@+-]*)+)*$/.test(value)) out.push(value);
  }
  return out;
}

/** Every secret known to this process, longest first (so a secret containing another is masked whole). */
export function knownSecrets(): string[] {
  return [...new Set([...remembered, ...environmentSecrets()])].sort((a, b) => b.length - a.length);
}

/** `secrets` plus every secret this process knows, longest first. */
export function allSecrets(secrets: string[] = []): string[] {
  return [...new Set([...secrets.filter(Boolean), ...knownSecrets()])].sort((a, b) => b.length - a.length);
}

/**
 * Remove userinfo from every URL in `text`, the credentials of Authorization headers and bearer
 * tokens, and mask each of `secrets` (pure: the caller decides which secrets).
 */
export function maskSecrets(text: string, secrets: readonly string[]): string {
  let out = text
    // Bounded and anchored at the start of a scheme: linear even on a megabyte of letters.
    .replace(/(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,31}:\/\/)[^/\s@]{0,2048}@/gi, '$1***@')
    .replace(/\b((?:proxy-)?authorization\s*[:=]\s*)(?:(basic|bearer|token)\s+)?[^\s,;"']+/gi, (_m, head: string, scheme?: string) => `${head}${scheme ? `${scheme} ` : ''}***`)
    .replace(/\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}/gi, '$1***');
  for (const s of secrets) if (s) out = out.split(s).join('***');
  return out;
}

/** maskSecrets with the given secrets and every one this process knows (knownSecrets). */
export function scrub(text: string, secrets: string[] = []): string {
  return maskSecrets(text, allSecrets(secrets));
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
]);

/**
 * Classify an error thrown by an isomorphic-git network operation. Transport and HTTP failures
 * become a RemoteUnavailable (built by `make`, so callers can use a subclass); anything else is
 * re-created with a scrubbed message and no cause (a cause could carry the credential).
 */
export function classifyRemoteError<E extends RemoteUnavailable>(
  err: unknown,
  what: string,
  remote: Pick<Remote, 'url' | 'secrets'>,
  make: (message: string, httpStatus?: number, code?: string) => E,
): E | Error {
  const e = err as { code?: string; name?: string; message?: string; data?: { statusCode?: number; statusMessage?: string } };
  const where = scrub(remote.url, remote.secrets);
  if (e?.code === 'HttpError' && e.data?.statusCode) {
    const status = e.data.statusCode;
    const hint = status === 401 ? ' (authentication failed)' : status === 403 ? ' (access denied)' : '';
    return make(`${what} ${where}: HTTP ${status} ${e.data.statusMessage ?? ''}`.trimEnd() + hint, status, e.code);
  }
  if (e?.code === 'SmartHttpError') return make(`${what} ${where}: not a Git smart-HTTP endpoint`, undefined, e.code);
  if (e?.code === 'UserCanceledError') return make(`${what} ${where}: authentication canceled`, undefined, e.code);
  if ((e?.code && NETWORK_CODES.has(e.code)) || /timed out|socket hang up/i.test(e?.message ?? '')) {
    return make(`${what} ${where}: ${e.code ?? scrub(e.message ?? '', remote.secrets)}`, undefined, e.code ?? 'ETIMEDOUT');
  }
  const plain = new Error(`${what} ${where}: ${scrub(String(e?.message ?? err), remote.secrets)}`);
  if (e?.code) (plain as Error & { code?: string }).code = e.code;
  return plain;
}
