// `cgw-sync init` writes a node's agent configuration that fits the state; `cgw-sync check-config`
// finds, before the first cycle, every problem of a configuration that only the node can see
// (files, folders, the schedule, the namespace, the state's tables), each with line:column.
import { constants } from 'node:fs';
import { access, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { AgentConfigError, formatConfigProblems, loadAgentConfig, type AgentConfig, type ConfigProblem } from '../agent/config.js';
import { formatDiagnostics, type FieldPath } from '../state/diagnostics.js';
import { loadState } from '../state/load.js';
import type { ClusterState } from '../state/types.js';
import { locate, parseYamlSource } from '../state/yaml-source.js';
import { stateTables } from '../render/render.js';
import { ownershipProblem } from '../render/ownership.js';
import { DEFAULT_OWNED_TABLES } from '../nft/ownership.js';
import { isSshUrl } from '../git/ssh.js';
import { UsageError, type Io, type Values } from './args.js';

const DEFAULT_STATE_DIR = '/var/lib/cgw-sync';

/** A problem at a field of the configuration; located in the file afterwards. */
interface Finding {
  field: FieldPath;
  message: string;
}

async function loadCheckedState(dir: string): Promise<ClusterState> {
  const { state, diagnostics } = await loadState(dir);
  if (!state) throw new Error(`the state in ${dir} is invalid:\n${formatDiagnostics(diagnostics)}`);
  return state;
}

const nodeNames = (state: ClusterState) => state.nodes.map((n) => n.name).join(', ');

/** Folders the state's guests boot from: the node must allow them (guests.imageDirs). */
function guestImageDirs(state: ClusterState): string[] {
  const files = state.guests.flatMap((g) => [g.boot?.disk, g.boot?.kernel, g.boot?.initrd]).filter((f): f is string => !!f);
  return [...new Set(files.map((f) => path.dirname(f)))].sort();
}

const q = (s: string) => JSON.stringify(s);

/** The configuration file's text: every optional part present as an explained comment. Pure. */
export function initConfigText(o: { source: string; node: string; stateDir: string; hooksDir: string; signingKey?: string; state?: ClusterState }): string {
  const tables = o.state ? stateTables(o.state).map((t) => `${t.family} ${t.name}`) : undefined;
  const images = o.state ? guestImageDirs(o.state) : [];
  const https = /^https?:\/\//i.test(o.source);
  return [
    `# cgw-sync agent configuration for node ${o.node}, written by \`cgw-sync init\` (schema: schema/agent.schema.json).`,
    '# Check it with `cgw-sync check-config --config <this file> [--state <checkout>]`.',
    'apiVersion: cgw-sync/v1',
    'kind: AgentConfig',
    `node: ${q(o.node)}`,
    'source:',
    `  url: ${q(o.source)}`,
    '  branch: main',
    '  path: .',
    ...(https
      ? [
          '  # The agent reads `main` and pushes its reports to `status/<node>` in this repository: a token',
          '  # with read access and push access to status/* only. Put it in a 0600 root file and uncomment:',
          '  # tokenFile: /etc/cgw-sync/token',
          '  # (or name an environment variable: tokenEnv: CGW_SYNC_TOKEN)',
        ]
      : []),
    ...(isSshUrl(o.source)
      ? [
          "  # ssh: the deploy key (read access, push to status/*) and the server's host key in known_hosts",
          '  # format. Host keys are always checked; ssh never prompts. check-config names them until they exist.',
          '  ssh:',
          '    identityFile: /etc/cgw-sync/ssh/id_ed25519',
          '    knownHostsFile: /etc/cgw-sync/ssh/known_hosts',
        ]
      : []),
    '  # Apply only commits signed by one of these armored OpenPGP public keys; uncomment once the',
    '  # key file exists (unsigned or otherwise signed revisions are then refused):',
    '  # trustedKeys:',
    '  #   - /etc/cgw-sync/keys/admins.asc',
    '# Reports: every status commit is signed with this node\'s private OpenPGP key, and the other nodes',
    '# believe them only when nodes/<node>.yaml has the matching public key as statusKey (docs/status-signatures.md).',
    ...(o.signingKey
      ? ['status:', `  signingKey: ${q(o.signingKey)}`]
      : ['# `cgw-sync init --signing-key FILE` creates one (FILE 0600, public key FILE.pub.asc); then uncomment:', '# status:', `#   signingKey: /etc/cgw-sync/keys/${o.node}.key`]),
    ...(tables
      ? ['# The nftables tables the state names (cluster.yaml tables); a state naming others is refused.', 'ownedTables:', ...tables.map((t) => `  - ${t}`)]
      : [`# ownedTables: the default accepts ${DEFAULT_OWNED_TABLES.join(', ')} (init --state derives them).`]),
    '# Reconcile every minute (and at once when nft monitor sees a change to our tables by hand).',
    '# Between full reads of its tables, at least every fullReadSeconds, the agent plans against',
    '# the ruleset it committed (0: read the tables in full every cycle).',
    'schedule:',
    "  cron: '*/1 * * * *'",
    '  fullReadSeconds: 300',
    '# Executables pre-apply / post-apply (or pre-apply.d/*, post-apply.d/*); examples in hooks/.',
    `hooksDir: ${q(o.hooksDir)}`,
    '# Push webhooks and metrics (docs/webhooks.md), off by default. A forge push to source.branch then',
    '# starts a cycle at once; bind to a management address only (TLS termination in front if exposed).',
    '# listen:',
    '#   address: 127.0.0.1',
    '#   port: 9380',
    '# webhook:',
    '#   secretFile: /etc/cgw-sync/webhook-secret   # 0600; head -c 32 /dev/urandom | base64 > /etc/cgw-sync/webhook-secret',
    '#   path: /hooks/push',
    '# metrics:',
    '#   textfile: /var/lib/prometheus/node-exporter/cgw-sync.prom   # and /metrics on the listener',
    '# Cache, last good revision, lock and memory.',
    `stateDir: ${q(o.stateDir)}`,
    'guests:',
    '  enabled: true',
    ...(images.length
      ? [
          "  # The folders the state's guests boot from (derived at init): guests may use nothing else.",
          '  imageDirs:',
          ...images.map((d) => `    - ${q(d)}`),
          ...(images.some((d) => d.startsWith('/dev/')) ? ['  # The guests name block devices (LVM volumes) under /dev.', '  allowBlockDevices: true'] : []),
        ]
      : ['  # imageDirs: [/var/lib/cgw-sync/images]   # the only folders guests may boot from']),
    '',
  ].join('\n');
}

/** `cgw-sync init --source URL --node NAME [--state DIR] [--config FILE] [--state-dir DIR] [--force]` */
export async function initCommand(v: Values, defaultConfig: string, io: Io): Promise<number> {
  const source = v.source as string | undefined;
  const node = v.node as string | undefined;
  if (!source || !node) throw new UsageError('init needs --source URL and --node NAME');
  const file = path.resolve((v.config as string | undefined) ?? defaultConfig);
  const stateDir = path.resolve((v['state-dir'] as string | undefined) ?? DEFAULT_STATE_DIR);
  const hooksDir = path.join(path.dirname(file), 'hooks');
  const state = v.state ? await loadCheckedState(v.state as string) : undefined;
  if (state && !state.nodes.some((n) => n.name === node)) throw new Error(`node "${node}" is not in the state (nodes: ${nodeNames(state)})`);
  const signingKey = v['signing-key'] ? path.resolve(v['signing-key'] as string) : undefined;
  const text = initConfigText({ source: /^[a-z][a-z0-9+.-]*:\/\//i.test(source) ? source : path.resolve(source), node, stateDir, hooksDir, ...(signingKey && { signingKey }), ...(state && { state }) });
  await mkdir(path.dirname(file), { recursive: true });
  try {
    await writeFile(file, text, { flag: v.force ? 'w' : 'wx', mode: 0o600 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${file} exists; nothing was written (--force overwrites it)`);
    throw e;
  }
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  await mkdir(hooksDir, { recursive: true });
  io.out(`wrote ${file} for node ${node}; created ${stateDir} and ${hooksDir}\n`);
  if (signingKey) io.out(await createSigningKey(signingKey, node));
  return checkConfigCommand(file, v.state as string | undefined, io);
}

/**
 * A new signing key for `node` at `file` (0600) and its public key at `file`.pub.asc, unless
 * the key exists (kept: the state may already hold its public key). Says what to put in the state.
 */
async function createSigningKey(file: string, node: string): Promise<string> {
  const pub = `${file}.pub.asc`;
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const { generateNodeKey } = await import('../git/signature.js');
  const key = await generateNodeKey(node);
  try {
    await writeFile(file, key.privateKey, { flag: 'wx', mode: 0o600 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return `kept the existing signing key ${file}; its public key belongs in nodes/${node}.yaml as statusKey\n`;
  }
  await writeFile(pub, key.publicKey, { mode: 0o644 });
  const indented = key.publicKey.trim().split('\n').map((l) => `  ${l}`).join('\n');
  return `created the status signing key ${file} (fingerprint ${key.fingerprint}); add its public key (${pub}) to nodes/${node}.yaml:\nstatusKey: |\n${indented}\n`;
}

/** What went wrong, in words: `/etc/x does not exist`, not `ENOENT: no such file ..., open '/etc/x'`. */
function fsMessage(e: NodeJS.ErrnoException): string {
  const where = e.path ?? '';
  if (e.code === 'ENOENT') return `${where} does not exist`;
  if (e.code === 'EACCES' || e.code === 'EPERM') return `${where}: permission denied`;
  return e.message;
}

async function problem(check: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await check();
    return undefined;
  } catch (e) {
    return fsMessage(e as NodeJS.ErrnoException);
  }
}

/** A folder the agent creates when missing: it must be a writable folder, or creatable. */
async function writableDir(dir: string): Promise<string | undefined> {
  const st = await stat(dir).catch(() => undefined);
  if (!st) {
    const parent = path.dirname(dir);
    if (parent === dir) return `${dir} does not exist`;
    const p = await writableDir(parent);
    return p && `${dir} does not exist and cannot be created: ${p}`;
  }
  if (!st.isDirectory()) return `${dir} is not a folder`;
  return problem(() => access(dir, constants.R_OK | constants.W_OK | constants.X_OK)).then((p) => p && `${dir} is not writable: ${p}`);
}

async function readableDir(dir: string): Promise<string | undefined> {
  const st = await stat(dir).catch(() => undefined);
  if (!st) return `${dir} does not exist`;
  if (!st.isDirectory()) return `${dir} is not a folder`;
  return problem(() => access(dir, constants.R_OK | constants.X_OK)).then((p) => p && `${dir} is not readable: ${p}`);
}

async function executable(cmd: string): Promise<string | undefined> {
  const candidates = cmd.includes('/') ? [cmd] : (process.env.PATH ?? '').split(':').filter(Boolean).map((d) => path.join(d, cmd));
  for (const c of candidates) if (!(await problem(() => access(c, constants.X_OK)))) return undefined;
  return cmd.includes('/') ? `${cmd} is not an executable file` : `${cmd} is not on PATH`;
}

/** The listener binds in the agent's own (root) namespace: the address must be one of this machine's. */
function localAddressProblem(address: string): string | undefined {
  if (address === '0.0.0.0' || address === '::') return undefined;
  const mine = Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address));
  return mine.includes(address) ? undefined : `${address} is not an address of this machine (ip -br addr); the listener could not bind to it`;
}

/** Everything about `c` that only this machine can tell. */
export async function configFindings(c: AgentConfig, state?: ClusterState): Promise<Finding[]> {
  const f: Finding[] = [];
  const add = (field: FieldPath, message: string | undefined) => message && f.push({ field, message });
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(c.source.url)) add(['source', 'url'], await readableDir(c.source.url));
  // The token and key files, URL and cron are checked by loadAgentConfig itself.
  if (c.hooksDir) add(['hooksDir'], await readableDir(c.hooksDir));
  add(['stateDir'], await writableDir(c.stateDir));
  if (c.status.dir) add(['status', 'dir'], await writableDir(c.status.dir.replaceAll('{node}', c.node)));
  if (c.guests.enabled) add(['guests', 'runDir'], await writableDir(c.guests.runDir));
  add(['nft'], await executable(c.nft));
  if (c.metrics?.textfile) add(['metrics', 'textfile'], await writableDir(path.dirname(c.metrics.textfile)));
  if (c.listen) add(['listen', 'address'], localAddressProblem(c.listen.address));
  if (c.netns) add(['netns'], await problem(() => access(path.join('/run/netns', c.netns as string))).then((p) => p && `network namespace ${c.netns} does not exist (ip netns list)`));
  if (state) {
    if (!state.nodes.some((n) => n.name === c.node)) add(['node'], `node "${c.node}" is not in the state (nodes: ${nodeNames(state)})`);
    add(['ownedTables'], ownershipProblem(state, c));
  }
  return f;
}

/** The config's problems that loading finds (schema, fields, then the files it names), with warnings. */
async function loadProblems(file: string): Promise<{ config?: AgentConfig; problems: ConfigProblem[]; warnings: string[] }> {
  let config: AgentConfig;
  try {
    config = await loadAgentConfig(file, { checkFiles: false });
  } catch (e) {
    if (e instanceof AgentConfigError) return { problems: e.problems, warnings: [] };
    throw e;
  }
  try {
    return { config, problems: [], warnings: (await loadAgentConfig(file)).warnings ?? [] };
  } catch (e) {
    if (e instanceof AgentConfigError) return { config, problems: e.problems, warnings: [] };
    throw e;
  }
}

/** `cgw-sync check-config [--config FILE] [--state DIR]` */
export async function checkConfigCommand(file: string, stateDir: string | undefined, io: Io): Promise<number> {
  const { config, problems, warnings } = await loadProblems(file);
  const state = stateDir ? await loadCheckedState(stateDir) : undefined;
  if (config) {
    const { source } = parseYamlSource(config.file, await readFile(config.file, 'utf8'));
    problems.push(...(await configFindings(config, state)).map((x) => ({ ...locate(source, x.field), message: x.message })));
  }
  const shown = config?.file ?? path.resolve(file);
  for (const w of warnings) io.err(`cgw-sync: warning: ${w}\n`);
  if (problems.length) {
    const sorted = [...problems].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
    io.err(`${formatConfigProblems(sorted)}\ncgw-sync: ${shown}: ${problems.length} problem(s)\n`);
    return 1;
  }
  io.out(`${shown}: no problems (node ${config?.node}${state ? `, state ${stateDir}` : ''})\n`);
  return 0;
}
