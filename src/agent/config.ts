// The agent's own configuration file (schema/agent.schema.json), validated like state files:
// every problem with file, line, column and field. Hostile or broken files (a folder, a device,
// a huge file, a YAML bomb, a garbage key file, a cron expression cron cannot run, a URL that is
// not one) are refused at load with an AgentConfigError, never discovered later as an odd error
// in a cycle. Loading also remembers the configured token (remote.ts) so no report can carry it.
import { hostname } from 'node:os';
import path from 'node:path';
import { validateCronExpression } from 'cron';
import { stat } from 'node:fs/promises';
import { readSmallFile } from './small-file.js';
import { environmentSecrets, rememberSecret, splitUserinfo } from '../git/remote.js';
import { readSigningKey, readTrustedKeys } from '../git/signature.js';
import type { FieldPath } from '../state/diagnostics.js';
import { statusBranchName } from '../git/status-branch.js';
import { validateDocument } from '../state/schema.js';
import { locate, parseYamlSource, type YamlSource } from '../state/yaml-source.js';
import type { GuestPolicy } from '../guests/policy.js';
import { quoteValue, redactText } from './redact.js';
import type { QemuSettings } from '../guests/qemu.js';
import { isSshUrl, type SshOptions } from '../git/ssh.js';
import { isIP } from 'node:net';
import type { Forge } from '../listen/webhook.js';

export interface AgentConfig {
  /** Absolute path of the file it came from. */
  file: string;
  node: string;
  source: {
    url: string;
    branch: string;
    path: string;
    tokenFile?: string;
    tokenEnv?: string;
    username?: string;
    /** ssh URLs: the deploy key and the server's host key (never from the state). */
    ssh?: SshOptions;
    trustedKeys: string[];
    allowNonDescendant: boolean;
    timeoutSeconds: number;
  };
  /** fullReadSeconds: the longest the agent plans against its in-memory ruleset without a full read (0: always read; absent: 300). */
  schedule: { cron: string; jitterSeconds: number; fullReadSeconds?: number };
  ownedTables: string[];
  drift: 'correct' | 'report';
  /** signingKey: this node's private OpenPGP key; its report commits are signed with it. */
  status: { url?: string; branch: string; dir?: string; signingKey?: string };
  hooksDir?: string;
  /** Extra variables for the hooks; they get nothing else of the agent's environment. */
  hookEnv?: Record<string, string>;
  hookTimeoutSeconds: number;
  stateDir: string;
  nft: string;
  netns?: string;
  /** imageDirs, allowBlockDevices, allowCommands: the node's GuestPolicy (guests/policy.ts). */
  guests: { enabled: boolean; runDir: string; stopTimeoutSeconds: number; qemu?: QemuSettings } & GuestPolicy;
  /** `cgw-sync run`'s HTTP listener (webhook receiver, /metrics): off unless set. */
  listen?: { address: string; port: number };
  /** Forge push webhooks on the listener: src/listen/webhook.ts. */
  webhook?: { secretFile: string; path: string; forge?: Forge; repository?: string };
  /** /metrics on the listener (endpoint) and/or a node-exporter textfile. */
  metrics?: { endpoint: boolean; textfile?: string };
  /** Things that work but should not be so (a world-readable token file); printed by the CLI. */
  warnings?: string[];
}

/** Larger than any sensible agent configuration; a bigger file is refused unread. */
export const CONFIG_SIZE_LIMIT = 256 * 1024;
/** An armored key file (a few keys) is far smaller. */
export const KEY_FILE_SIZE_LIMIT = 1024 * 1024;
export const TOKEN_FILE_SIZE_LIMIT = 64 * 1024;
/** A webhook secret shorter than this is guessable; `head -c 32 /dev/urandom | base64` makes a good one. */
export const WEBHOOK_SECRET_MIN_LENGTH = 16;
/** YAML aliases in an agent configuration: a handful at most; many means a "billion laughs". */
const MAX_ALIASES = 50;

/** One problem with the configuration; line and column when it is about a place in the file. */
export interface ConfigProblem {
  file: string;
  line?: number;
  column?: number;
  field?: string;
  message: string;
}

export function formatConfigProblems(problems: ConfigProblem[]): string {
  return problems
    .map((p) => `${p.file}${p.line ? `:${p.line}:${p.column}` : ''}: ${p.field ? `${p.field}: ` : ''}${redactText(p.message, [])}`)
    .join('\n');
}

/** The agent configuration cannot be used; `problems` says why, each with file (and place). */
export class AgentConfigError extends Error {
  override name = 'AgentConfigError';
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(formatConfigProblems(problems));
  }
}

/** Relative paths in the file are relative to the file's folder, as an operator would expect. */
function resolvePaths(c: AgentConfig, base: string): AgentConfig {
  const abs = (p: string | undefined) => (p === undefined ? undefined : path.resolve(base, p));
  // Anything with a scheme or in scp syntax is left as written, for checkUrl to judge.
  const isUrl = /^[a-z][a-z0-9+.-]*:/i.test(c.source.url) || /^[^/]+@[^/]+:/.test(c.source.url);
  return {
    ...c,
    source: {
      ...c.source,
      url: isUrl ? c.source.url : (abs(c.source.url) as string),
      tokenFile: abs(c.source.tokenFile),
      ssh: c.source.ssh && { identityFile: abs(c.source.ssh.identityFile) as string, knownHostsFile: abs(c.source.ssh.knownHostsFile) as string },
      trustedKeys: c.source.trustedKeys.map((k) => abs(k) as string),
    },
    status: { ...c.status, dir: abs(c.status.dir), signingKey: abs(c.status.signingKey) },
    hooksDir: abs(c.hooksDir),
    stateDir: abs(c.stateDir) as string,
    guests: { ...c.guests, runDir: abs(c.guests.runDir) as string },
    ...(c.webhook && { webhook: { ...c.webhook, secretFile: abs(c.webhook.secretFile) as string } }),
    ...(c.metrics && { metrics: { ...c.metrics, textfile: abs(c.metrics.textfile) } }),
  };
}

/**
 * Load, validate and check an agent configuration. `checkFiles: false` skips the checks of the
 * files it names (token, trusted keys, hooks folder): for an example read on another machine.
 */
export async function loadAgentConfig(file: string, opts: { checkFiles?: boolean } = {}): Promise<AgentConfig> {
  const abs = path.resolve(file);
  const fail = (message: string): never => {
    throw new AgentConfigError(abs, [{ file: abs, message }]);
  };
  const read = await readSmallFile(abs, CONFIG_SIZE_LIMIT);
  if ('error' in read) return fail(`cannot read the agent configuration: ${read.error}`);
  if (read.text.includes('\0')) return fail('not a YAML text file (it contains NUL bytes)');
  const { source, data } = parseConfigYaml(abs, read.text);
  if (data === null || data === undefined) return fail('the file is empty: an AgentConfig needs apiVersion, kind and source');
  if (typeof data !== 'object' || Array.isArray(data)) return fail('must be a YAML mapping (apiVersion, kind, source, ...), not a list or a single value');
  const at = (p: FieldPath, message: string, key = false): ConfigProblem => ({ ...locate(source, p, { key }), message });
  const problems = validateDocument('AgentConfig', data).map((p) => at(p.path, p.message, p.unknownProperty));
  if (problems.length) throw new AgentConfigError(abs, problems);
  const raw = data as Record<string, unknown>;
  const config = resolvePaths({ ...(raw as unknown as AgentConfig), file: abs, node: (raw.node as string | undefined) ?? hostname().split('.')[0] }, path.dirname(abs));
  rememberConfigSecrets(config);
  const warnings: string[] = [];
  problems.push(...fieldProblems(config).map((p) => at(p.path, p.message)));
  if (opts.checkFiles !== false) for (const p of await fileProblems(config, warnings)) problems.push(at(p.path, p.message));
  if (problems.length) throw new AgentConfigError(abs, problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0)));
  return warnings.length ? { ...config, warnings: warnings.map((w) => `${abs}: ${w}`) } : config;
}

/** Parse with an alias limit; a stack overflow (absurd nesting) becomes a message, not a crash. */
function parseConfigYaml(abs: string, text: string): { source: YamlSource; data: unknown } {
  let parsed: ReturnType<typeof parseYamlSource>;
  let data: unknown;
  try {
    parsed = parseYamlSource(abs, text);
    const deep = (m: string) => m.replace(/Maximum call stack size exceeded/, 'nested too deeply');
    if (parsed.diagnostics.length) throw new AgentConfigError(abs, parsed.diagnostics.map((d) => ({ ...d, message: deep(d.message) })));
    data = parsed.source.doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (e) {
    if (e instanceof AgentConfigError) throw e;
    const why = e instanceof RangeError ? 'nested too deeply' : /alias/i.test((e as Error).message) ? `too many YAML aliases (at most ${MAX_ALIASES}; a "billion laughs" file?)` : (e as Error).message;
    throw new AgentConfigError(abs, [{ file: abs, message: `cannot be read as YAML: ${why}` }]);
  }
  return { source: parsed.source, data };
}

interface FieldProblem {
  path: FieldPath;
  message: string;
}

/** Checks the schema cannot express; pure. */
export function fieldProblems(c: AgentConfig): FieldProblem[] {
  const out: FieldProblem[] = [];
  const urlProblem = checkUrl(c.source.url, true);
  if (urlProblem) out.push({ path: ['source', 'url'], message: urlProblem });
  if (c.status.url !== undefined) {
    const p = checkUrl(c.status.url, false);
    if (p) out.push({ path: ['status', 'url'], message: p });
  }
  // ssh is configured by the agent alone: without its key and known_hosts there is no safe way in.
  const sshUsed = isSshUrl(c.source.url) || (c.status.url !== undefined && isSshUrl(c.status.url));
  if (sshUsed && !c.source.ssh) out.push({ path: ['source', 'url'], message: 'an ssh URL needs source.ssh with identityFile (the deploy key) and knownHostsFile (the server\'s host key)' });
  const branchProblem = checkBranch(c.source.branch);
  if (branchProblem) out.push({ path: ['source', 'branch'], message: branchProblem });
  const statusBranchProblem = checkBranch(statusBranch(c));
  if (statusBranchProblem) out.push({ path: ['status', 'branch'], message: statusBranchProblem });
  const cron = validateCronExpression(c.schedule.cron);
  if (!cron.valid) out.push({ path: ['schedule', 'cron'], message: `${quoteValue(c.schedule.cron)} is not a cron expression: ${cron.error?.message ?? 'invalid'} (e.g. "*/1 * * * *")` });
  if (c.netns !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(c.netns)) {
    out.push({ path: ['netns'], message: `${quoteValue(c.netns)} is not a network namespace name (letters, digits, _ . -, not starting with . or -, at most 64 characters)` });
  }
  out.push(...listenProblems(c));
  return out;
}

/** The listener, webhook and metrics keys: what the schema cannot say. */
function listenProblems(c: AgentConfig): FieldProblem[] {
  const out: FieldProblem[] = [];
  if (c.listen && !isIP(c.listen.address)) out.push({ path: ['listen', 'address'], message: `${quoteValue(c.listen.address)} is not an IP address (the listener binds to one address, e.g. 127.0.0.1 or the node's management address)` });
  if (c.webhook && !c.listen) out.push({ path: ['webhook'], message: 'webhooks need the listener: set listen (address and port) too' });
  if (c.webhook?.path === '/metrics') out.push({ path: ['webhook', 'path'], message: '/metrics is the metrics endpoint; choose another path (e.g. /hooks/push)' });
  if (c.webhook?.repository !== undefined) {
    const p = checkUrl(c.webhook.repository, false);
    if (p) out.push({ path: ['webhook', 'repository'], message: p });
  }
  if (c.metrics?.textfile !== undefined && !c.metrics.textfile.endsWith('.prom')) {
    out.push({ path: ['metrics', 'textfile'], message: `${quoteValue(c.metrics.textfile)}: node-exporter's textfile collector reads only files ending in .prom` });
  }
  return out;
}

/** Why `url` cannot be a Git source (or status) URL; undefined when it can. */
export function checkUrl(url: string, folderAllowed: boolean): string | undefined {
  const shown = quoteValue(splitUserinfo(url).url);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\s\u0000-\u001f\u007f]/.test(url)) return `${shown} is not a valid URL: it contains spaces or control characters`;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  const folder = folderAllowed ? ' or a local folder' : '';
  if (scheme === 'http' || scheme === 'https') {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return `${shown} is not a valid URL (expected ${scheme}://host[:port]/path)`;
    }
    if (!/^https?:\/\/[^/]/i.test(url) || !u.hostname) return `${shown} is not a valid URL: it names no host (expected ${scheme}://host[:port]/path)`;
    return undefined;
  }
  if (scheme === 'ssh') return /^ssh:\/\/([^@/]+@)?[A-Za-z0-9.-]+(:\d+)?\//i.test(url) ? undefined : `${shown} is not a valid ssh URL (expected ssh://HOST[:PORT]/PATH, with USER@ before HOST when needed)`;
  if (isSshUrl(url)) return undefined;
  if (scheme === 'file' && folderAllowed) return /^file:\/\//i.test(url) ? undefined : `${shown} is not a valid file:// URL`;
  if (scheme) return `${shown}: unsupported URL scheme "${scheme}:" (cgw-sync speaks https://, ssh:// or user@host:path${folder})`;
  if (/^[^/]+@[^/]+:/.test(url)) return `${shown} is not an ssh address cgw-sync can use (expected user@host:path)`;
  return folderAllowed ? undefined : `${shown} is not an http(s) or ssh URL`;
}

/** Why `branch` is not a usable Git branch name (git check-ref-format's rules); undefined if it is. */
export function checkBranch(branch: string): string | undefined {
  const bad =
    !branch ||
    // biome-ignore lint/suspicious/noControlCharactersInRegex: git refuses control characters in ref names
    /[\s\u0000-\u001f\u007f~^:?*[\\]|\.\.|\/\/|@\{/.test(branch) ||
    /^[-/.]|[/.]$/.test(branch) ||
    branch.split('/').some((part) => part.startsWith('.') || part.endsWith('.lock')) ||
    branch === '@' ||
    branch.length > 200;
  return bad ? `${quoteValue(branch)} is not a valid Git branch name` : undefined;
}

/** Passwords in URLs and the tokenEnv token are remembered like tokens, so no message shows them. */
function rememberConfigSecrets(c: AgentConfig): void {
  rememberSecret(splitUserinfo(c.source.url).password);
  if (c.status.url) rememberSecret(splitUserinfo(c.status.url).password);
  if (c.source.tokenEnv) rememberSecret(process.env[c.source.tokenEnv]?.trim());
  // Hooks get hookEnv and often print what they got: judged like the agent's own environment.
  for (const value of environmentSecrets(c.hookEnv ?? {})) rememberSecret(value);
}

/** Checks of the files the configuration names (token, trusted keys, hooks folder). */
async function fileProblems(c: AgentConfig, warnings: string[]): Promise<FieldProblem[]> {
  const out: FieldProblem[] = [];
  if (c.source.tokenFile) {
    const token = await readSmallFile(c.source.tokenFile, TOKEN_FILE_SIZE_LIMIT);
    if ('error' in token) out.push({ path: ['source', 'tokenFile'], message: `cannot read token file ${c.source.tokenFile}: ${token.error}` });
    else if (!token.text.trim()) out.push({ path: ['source', 'tokenFile'], message: `token file ${c.source.tokenFile} is empty` });
    else {
      rememberSecret(token.text.trim());
      if (token.mode & 0o044) warnings.push(`source.tokenFile: ${c.source.tokenFile} is readable by other users (mode ${(token.mode & 0o777).toString(8)}); make it 0600`);
    }
  }
  if (c.source.ssh) {
    const { identityFile, knownHostsFile } = c.source.ssh;
    const key = await readSmallFile(identityFile, TOKEN_FILE_SIZE_LIMIT);
    if ('error' in key) out.push({ path: ['source', 'ssh', 'identityFile'], message: `cannot read ssh key ${identityFile}: ${key.error}` });
    // ssh itself ignores a private key others can read ("UNPROTECTED PRIVATE KEY FILE").
    else if (key.mode & 0o077) out.push({ path: ['source', 'ssh', 'identityFile'], message: `${identityFile} is accessible by other users (mode ${(key.mode & 0o777).toString(8)}); ssh refuses such a key: make it 0600` });
    const hosts = await readSmallFile(knownHostsFile, KEY_FILE_SIZE_LIMIT);
    if ('error' in hosts) out.push({ path: ['source', 'ssh', 'knownHostsFile'], message: `cannot read known_hosts file ${knownHostsFile}: ${hosts.error}` });
    else if (!hosts.text.trim()) out.push({ path: ['source', 'ssh', 'knownHostsFile'], message: `known_hosts file ${knownHostsFile} is empty: every host key would be refused (ssh-keyscan HOST > ${knownHostsFile}, then check its fingerprint)` });
  }
  for (const [i, f] of c.source.trustedKeys.entries()) {
    const problem = await trustedKeyProblem(f);
    if (problem) out.push({ path: ['source', 'trustedKeys', i], message: problem });
  }
  if (c.status.signingKey) {
    const problem = await signingKeyProblem(c.status.signingKey);
    if (problem) out.push({ path: ['status', 'signingKey'], message: problem });
  }
  if (c.hooksDir) {
    const dir = await statMode(c.hooksDir);
    if (dir !== undefined && dir & 0o022) out.push({ path: ['hooksDir'], message: `${c.hooksDir} is writable by other users (mode ${(dir & 0o777).toString(8)}): anyone could make the agent run a program as root` });
  }
  if (c.webhook) {
    const file = c.webhook.secretFile;
    const secret = await readSmallFile(file, TOKEN_FILE_SIZE_LIMIT);
    if ('error' in secret) out.push({ path: ['webhook', 'secretFile'], message: `cannot read webhook secret file ${file}: ${secret.error}` });
    else if (secret.text.trim().length < WEBHOOK_SECRET_MIN_LENGTH) out.push({ path: ['webhook', 'secretFile'], message: `the webhook secret in ${file} is shorter than ${WEBHOOK_SECRET_MIN_LENGTH} characters: make one with \`head -c 32 /dev/urandom | base64\`` });
    else {
      rememberSecret(secret.text.trim());
      if (secret.mode & 0o044) warnings.push(`webhook.secretFile: ${file} is readable by other users (mode ${(secret.mode & 0o777).toString(8)}); make it 0600`);
    }
  }
  if (c.listen && (c.listen.address === '0.0.0.0' || c.listen.address === '::')) {
    warnings.push(`listen.address: ${c.listen.address} listens on every interface of the node; bind to its management address (docs/webhooks.md)`);
  }
  return out;
}

async function statMode(p: string): Promise<number | undefined> {
  return stat(p).then((s) => s.mode, () => undefined);
}

/** The node's signing key: readable, private, unprotected, and not readable by others. */
async function signingKeyProblem(file: string): Promise<string | undefined> {
  const read = await readSmallFile(file, KEY_FILE_SIZE_LIMIT);
  const create = `create it with \`cgw-sync init --signing-key ${file}\``;
  if ('error' in read) return `cannot read the status signing key ${file}: ${read.error} (${create})`;
  if (read.mode & 0o077) return `${file} is accessible by other users (mode ${(read.mode & 0o777).toString(8)}); anyone who can read it can forge this node's reports: make it 0600`;
  return readSigningKey(read.text).then(
    () => undefined,
    (e: Error) => `status signing key ${file}: ${e.message}`,
  );
}

async function trustedKeyProblem(file: string): Promise<string | undefined> {
  const read = await readSmallFile(file, KEY_FILE_SIZE_LIMIT);
  if ('error' in read) return `cannot read trusted key file ${file}: ${read.error}`;
  try {
    await readTrustedKeys([read.text]);
    return undefined;
  } catch (e) {
    return `trusted key file ${file} is not an armored OpenPGP public key: ${quoteValue((e as Error).message)}`;
  }
}

/** The armored keys of the trusted key files; a missing or unreadable file is named in the error. */
export async function readTrustedKeyFiles(files: string[]): Promise<string[]> {
  return Promise.all(
    files.map(async (f) => {
      const read = await readSmallFile(f, KEY_FILE_SIZE_LIMIT);
      if ('error' in read) throw new Error(`cannot read trusted key file ${f} (source.trustedKeys): ${read.error}`);
      return read.text;
    }),
  );
}

/** The status branch name for this node. */
export function statusBranch(c: AgentConfig): string {
  return statusBranchName(c.node, c.status.branch);
}
