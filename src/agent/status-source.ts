// Where the nodes' status reports live: a status branch per node in a Git repository (status.url,
// or the source URL when it is http(s) or ssh), and/or a status folder (status.dir; with `{node}` in it,
// one folder per node, so the other nodes' reports can be read back from it too). Publishing this
// node's report and reading the others' (the migration gate) both go through here.
//
// Trust: each node signs its reports (status.signingKey; a status folder gets a detached
// status.json.asc next to status.json), and a reader believes a report only when it is signed
// by the key the state declares for that node (`statusKey:` in nodes/<node>.yaml). A report that
// is not is treated as "has not reported", with the reason. A node the state declares no key for
// is read as before, unverified, unless cluster.statusSignatures is `required`.
import path from 'node:path';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { PrivateKey, PublicKey } from 'openpgp';
import { checkOwnBranch, publishStatus, readStatusBranch, statusBranchName, type Intrusion, type StatusBranchTip } from '../git/status-branch.js';
import { RemoteUnavailable, scrub } from '../git/remote.js';
import { isRemoteUrl } from '../git/ssh.js';
import { readNodePublicKey, readSigningKey, signPayload, verifyCommitSignature } from '../git/signature.js';
import type { ClusterState } from '../state/types.js';
import { KEY_FILE_SIZE_LIMIT, type AgentConfig } from './config.js';
import { agentPaths } from './memory.js';
import { commitMessage, statusFiles, type NodeStatus } from './report.js';
import { readSmallFile } from './small-file.js';

export function statusUrl(config: AgentConfig): string | undefined {
  if (config.status.url) return config.status.url;
  return isRemoteUrl(config.source.url) ? config.source.url : undefined;
}

export const credentials = (c: AgentConfig) => ({ tokenFile: c.source.tokenFile, tokenEnv: c.source.tokenEnv, username: c.source.username });

/** The status folder of `node`, when one is configured. */
function statusDir(config: AgentConfig, node: string): string | undefined {
  return config.status.dir?.replaceAll('{node}', node);
}

/** Whose signature each node's reports must carry: from the state, never from the reports. */
export interface StatusTrust {
  /** Node -> its armored public key (`statusKey:` in nodes/<node>.yaml). */
  keys: ReadonlyMap<string, string>;
  /** cluster.statusSignatures is `required`: a node without a key is not believed either. */
  required: boolean;
}

export function statusTrust(state: ClusterState): StatusTrust {
  return {
    keys: new Map(state.nodes.flatMap((n) => (n.statusKey ? [[n.name, n.statusKey] as const] : []))),
    required: state.cluster.statusSignatures === 'required',
  };
}

/**
 * The note a report carries while other nodes' reports are believed unsigned: which nodes, and
 * how to change it. Undefined when every other node has a key (or signatures are required).
 */
export function unverifiedNote(state: ClusterState, self: string): string | undefined {
  const trust = statusTrust(state);
  const open = state.nodes.map((n) => n.name).filter((n) => n !== self && !trust.keys.has(n));
  if (trust.required || open.length === 0) return undefined;
  return `the reports of ${open.join(', ')} are unverified: the state declares no statusKey for ${open.length === 1 ? 'it' : 'them'} (docs/status-signatures.md)`;
}

/** A node's latest report as a reader may believe it; `refused`: what was there and why not. */
export interface StatusRead {
  status: NodeStatus | null;
  refused?: string;
}

export type StatusReader = (node: string) => Promise<StatusRead>;

/** Judges a report found at `where` (its status.json and what signs it): believed only as `trust` allows. */
type Believe = (node: string, where: string, text: string | undefined, signed: { gpgsig?: string; payload: string }) => Promise<StatusRead>;

function believer(trust: StatusTrust): Believe {
  const keys = new Map<string, Promise<PublicKey>>();
  const keyOf = (node: string, armored: string) => {
    if (!keys.has(node)) keys.set(node, readNodePublicKey(armored));
    return keys.get(node) as Promise<PublicKey>;
  };
  /** Why a report signed so (or not at all) is not `node`'s; undefined when it may be believed. */
  const refusal = async (node: string, where: string, gpgsig: string | undefined, payload: string): Promise<string | undefined> => {
    const armored = trust.keys.get(node);
    if (!armored) return trust.required ? `${where}: not believed: cluster.statusSignatures is required and the state declares no statusKey for ${node}` : undefined;
    const key = await keyOf(node, armored).catch((e: Error) => e);
    if (key instanceof Error) return `${where}: ${node}'s statusKey ${key.message}`;
    const check = await verifyCommitSignature(gpgsig, payload, [key]);
    if (check.ok) return undefined;
    if (check.signedBy) return `${where}: signature not by ${node}'s key (${check.signedBy})`;
    return `${where}: ${check.refusal === 'unsigned' ? `not signed, but ${node}'s reports must be signed by its statusKey` : check.reason}`;
  };
  return async (node, where, text, signed) => {
    if (text === undefined) return { status: null };
    const refused = await refusal(node, where, signed.gpgsig, signed.payload);
    if (refused) return { status: null, refused };
    const status = parseReport(text);
    if (!status) return { status: null, refused: `${where}: status.json is not a report` };
    if (status.node !== node) return { status: null, refused: `${where}: the report is node ${JSON.stringify(String(status.node)).slice(0, 70)}'s, not ${node}'s` };
    return { status };
  };
}

/**
 * Reads each node's report from the tip of its status branch, however `tipOf` gets it (a fetch
 * from the server, or a repository already here), believing only what `trust` allows.
 */
export function branchStatusReader(trust: StatusTrust, tipOf: (node: string) => Promise<StatusBranchTip | null>): StatusReader {
  const believe = believer(trust);
  return async (node) => {
    const tip = await tipOf(node);
    return tip ? believe(node, tip.branch, tip.files['status.json'], tip.signed) : { status: null };
  };
}

/**
 * How to read another node's latest report, believing only what `trust` allows; undefined when
 * no status source can tell.
 */
export function statusReader(config: AgentConfig, trust: StatusTrust): StatusReader | undefined {
  const url = statusUrl(config);
  if (url) {
    return branchStatusReader(trust, (node) =>
      readStatusBranch(url, node, { branch: statusBranchName(node, config.status.branch), credentials: credentials(config), ssh: config.source.ssh, timeoutMs: config.source.timeoutSeconds * 1000 }),
    );
  }
  if (config.status.dir?.includes('{node}')) {
    const believe = believer(trust);
    return async (node) => {
      const dir = statusDir(config, node) as string;
      const text = await readFile(path.join(dir, 'status.json'), 'utf8').catch(() => undefined);
      const gpgsig = await readFile(path.join(dir, SIGNATURE_FILE), 'utf8').catch(() => undefined);
      return believe(node, dir, text, { gpgsig, payload: text ?? '' });
    };
  }
  return undefined;
}

/**
 * The latest reports of `nodes` (null: none believed), and why a node's report was not believed.
 * A node whose branch cannot be read counts as not reporting, like a silent one.
 */
export async function readReports(read: StatusReader | undefined, nodes: string[]): Promise<{ reports: Map<string, NodeStatus | null>; refused: Map<string, string> }> {
  const none: StatusRead = { status: null };
  const reads = await Promise.all(nodes.map(async (n) => [n, read ? await read(n).catch(() => none) : none] as const));
  return {
    reports: new Map(reads.map(([n, r]) => [n, r.status])),
    refused: new Map(reads.flatMap(([n, r]) => (r.refused ? [[n, r.refused] as const] : []))),
  };
}

/** status.json's detached signature in a status folder. */
const SIGNATURE_FILE = 'status.json.asc';

function parseReport(text: string): NodeStatus | null {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as NodeStatus) : null;
  } catch {
    return null;
  }
}

let signingKeyCache: { text: string; key: PrivateKey } | undefined;

/** The node's own signing key (status.signingKey), undefined when reports go unsigned. */
export async function nodeSigningKey(config: AgentConfig): Promise<PrivateKey | undefined> {
  const file = config.status.signingKey;
  if (!file) return undefined;
  const read = await readSmallFile(file, KEY_FILE_SIZE_LIMIT);
  if ('error' in read) throw new Error(`cannot read the status signing key ${file} (status.signingKey): ${read.error}`);
  try {
    // Parsed once per content: a cycle asks for it up to three times, a long-running agent every cycle.
    if (signingKeyCache?.text !== read.text) signingKeyCache = { text: read.text, key: await readSigningKey(read.text) };
    return signingKeyCache.key;
  } catch (e) {
    throw new Error(`status signing key ${file} (status.signingKey): ${(e as Error).message}`);
  }
}

/** What became of a report; `oid`: the tip of the status branch after it. */
export type PublishResult = { kind: 'committed'; oid?: string } | { kind: 'nowhere' } | { kind: 'failed'; error: string };

function ownBranch(config: AgentConfig, signingKey: PrivateKey | undefined) {
  const url = statusUrl(config);
  return url && { url, node: config.node, branch: statusBranchName(config.node, config.status.branch), workDir: agentPaths(config.stateDir).statusRepo, credentials: credentials(config), ssh: config.source.ssh, timeoutMs: config.source.timeoutSeconds * 1000, ...(signingKey && { signingKey }) };
}

/**
 * Write the report to the status folder and commit it to the status branch, signed when the node
 * has a signing key. `always`: commit even when the branch holds the same files (to restore it).
 */
export async function publishReport(config: AgentConfig, status: NodeStatus, { always = false } = {}): Promise<PublishResult> {
  const files: Record<string, string> = statusFiles(status);
  let signingKey: PrivateKey | undefined;
  try {
    signingKey = await nodeSigningKey(config);
  } catch (e) {
    return { kind: 'failed', error: (e as Error).message };
  }
  const dir = statusDir(config, config.node);
  if (dir) {
    try {
      await mkdir(dir, { recursive: true });
      const signed = signingKey ? { ...files, [SIGNATURE_FILE]: await signPayload(signingKey, files['status.json'] as string) } : files;
      for (const [name, text] of Object.entries(signed)) await writeFile(path.join(dir, name), text);
    } catch (e) {
      return { kind: 'failed', error: `writing the report to ${dir}: ${(e as Error).message}` };
    }
  }
  const branch = ownBranch(config, signingKey);
  if (!branch) return dir ? { kind: 'committed' } : { kind: 'nowhere' };
  try {
    const r = await publishStatus(branch, files, commitMessage(status), { always });
    return { kind: 'committed', oid: r.oid };
  } catch (e) {
    if (!(e instanceof RemoteUnavailable) && !(e instanceof Error && e.name === 'StatusPushRejected')) throw e;
    return { kind: 'failed', error: scrub((e as Error).message) };
  }
}

/**
 * Whether someone else put a commit at the tip of this node's status branch since it pushed
 * `lastPushed`. An unreachable server is no finding (the publish reports the outage).
 */
export async function findIntrusion(config: AgentConfig, lastPushed: string | undefined): Promise<Intrusion | undefined> {
  const signingKey = await nodeSigningKey(config).catch(() => undefined);
  const branch = ownBranch(config, signingKey);
  if (!branch || !lastPushed) return undefined;
  // Unreachable, or a broken local status repository: the publish that follows says what is wrong.
  return checkOwnBranch(branch, lastPushed, signingKey?.toPublic()).catch(() => undefined);
}

/**
 * Why the other nodes will not believe this node's reports, when the state declares a statusKey
 * for it that its signing key does not match (or it has none). Undefined when they will.
 */
export async function ownKeyProblem(config: AgentConfig, state: ClusterState): Promise<string | undefined> {
  const declared = state.nodes.find((n) => n.name === config.node)?.statusKey;
  const required = state.cluster.statusSignatures === 'required';
  if (!declared && !required) return undefined;
  const key = await nodeSigningKey(config).catch((e: Error) => e);
  const ignored = 'the other nodes ignore its reports (migration gate, waves, fleet status)';
  if (key instanceof Error) return `${key.message}: ${ignored}`;
  if (!key) return `the state declares ${declared ? `a statusKey for ${config.node}` : 'statusSignatures: required'}, and status.signingKey is not set: ${ignored}`;
  if (!declared) return undefined;
  const expected = await readNodePublicKey(declared).then((k) => k.getFingerprint());
  const own = key.getFingerprint();
  return own === expected ? undefined : `status.signingKey ${config.status.signingKey} is key ${own}, but the state's statusKey for ${config.node} is ${expected}: ${ignored}`;
}
