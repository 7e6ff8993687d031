// Test fixture for the GitOps agent: a node agent (config file, state dir, its own network
// namespace for nft) pointed at a real git smart-HTTP server, plus readers for what it publishes.
// Shared by the test/agent-*.test.ts files.
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { loadAgentConfig, type AgentConfig } from '../../src/agent/config.js';
import { runOnce } from '../../src/agent/cycle.js';
import type { NodeStatus } from '../../src/agent/report.js';
import type { FileMap } from '../../src/git/tree.js';
import { gitCli, type GitFixture } from './git-server.js';
import { nftNamespace, type NftNamespace } from './nft-netns.js';

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI_BIN = path.join(PROJECT_ROOT, 'dist/cli/bin.js');

/** Every file of state-example/ as a FileMap (repository-relative paths). */
/** The bundled state-example as text files (a FileMap whose values are all strings). */
export async function stateExampleFiles(): Promise<Record<string, string>> {
  const root = path.join(PROJECT_ROOT, 'state-example');
  const files: Record<string, string> = {};
  async function walk(rel: string): Promise<void> {
    for (const it of await readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${it.name}` : it.name;
      if (it.isDirectory()) await walk(r);
      else files[r] = await readFile(path.join(root, r), 'utf8');
    }
  }
  await walk('');
  return files;
}

/** One more TCP forward (a new element in the node's forward map). */
export function withExtraForward(files: FileMap, name = 'extra', port = 2299): FileMap {
  const extra = `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n  - name: ${name}\n    protocol: tcp\n    port: ${port}\n    target: { guest: guest1, port: 22 }\n`;
  return { ...files, [`forwards/${name}.yaml`]: extra };
}

export interface TestAgent {
  node: string;
  ns: NftNamespace;
  configFile: string;
  config: AgentConfig;
  /** Structured log lines of the cycles run through `cycle()`. */
  logs: Record<string, unknown>[];
  /** One cycle (runOnce), optionally with some configuration changed for this cycle only. */
  cycle(change?: Partial<AgentConfig>): Promise<NodeStatus>;
  /** `nft list tables` inside the agent's namespace, one "family name" per entry. */
  tables(): Promise<string[]>;
  destroy(): Promise<void>;
}

/**
 * Write an agent config (YAML, through the real loader) for `node` against the fixture's
 * repository and create the node's namespace. `extra` is merged into the YAML document.
 */
export async function startTestAgent(fx: GitFixture, node: string, extra: Record<string, unknown> = {}): Promise<TestAgent> {
  const dir = await fx.tmp(`agent-${node}`);
  const ns = await nftNamespace(node.slice(0, 12));
  const { source, ...rest } = extra;
  const doc = {
    apiVersion: 'cgw-sync/v1',
    kind: 'AgentConfig',
    node,
    source: { url: fx.url, branch: 'main', timeoutSeconds: 5, ...(source as object | undefined) },
    stateDir: path.join(dir, 'state'),
    netns: ns.ns,
    // The state-example nodes are Xen nodes; guests have their own tests.
    guests: { enabled: false },
    ...rest,
  };
  const configFile = path.join(dir, 'agent.yaml');
  let config: AgentConfig;
  try {
    await writeFile(configFile, stringify(doc));
    config = await loadAgentConfig(configFile);
  } catch (e) {
    await ns.destroy();
    throw e;
  }
  const logs: Record<string, unknown>[] = [];
  return {
    node,
    ns,
    configFile,
    config,
    logs,
    cycle: (change = {}) => runOnce({ config: { ...config, ...change }, nft: ns.nft, log: (l) => logs.push(l) }),
    tables: async () =>
      (await ns.raw(['list', 'tables']))
        .split('\n')
        .map((l) => l.replace(/^table /, '').trim())
        .filter(Boolean)
        .sort(),
    destroy: () => ns.destroy(),
  };
}

export interface PublishedStatus {
  oid: string;
  json: NodeStatus;
  markdown: string;
  subject: string;
  commits: number;
}

/** The node's status branch as the plain git CLI sees it in the bare repository. */
export async function readPublished(fx: GitFixture, node: string): Promise<PublishedStatus | undefined> {
  const ref = `refs/heads/status/${node}`;
  const oid = await gitCli(['--git-dir', fx.repo, 'rev-parse', '--verify', '--quiet', ref]).catch(() => '');
  if (!oid) return undefined;
  return {
    oid,
    json: JSON.parse(await gitCli(['--git-dir', fx.repo, 'show', `${oid}:status.json`])) as NodeStatus,
    markdown: await gitCli(['--git-dir', fx.repo, 'show', `${oid}:REPORT.md`]),
    subject: await gitCli(['--git-dir', fx.repo, 'log', '-1', '--format=%s', oid]),
    commits: Number(await gitCli(['--git-dir', fx.repo, 'rev-list', '--count', oid])),
  };
}

/** Current tip of main in the bare repository. */
export async function mainTip(fx: GitFixture): Promise<string> {
  return gitCli(['--git-dir', fx.repo, 'rev-parse', 'refs/heads/main']);
}

/** An Io for the CLI's main() that keeps what it prints. */
export function capture() {
  const io = {
    outText: '',
    errText: '',
    out: (s: string) => {
      io.outText += s;
    },
    err: (s: string) => {
      io.errText += s;
    },
  };
  return io;
}

/** State files whose nodes run netns guests (a namespace per guest, running `sleep`), as the lab does. */
export function withNetnsGuests(files: Record<string, string>): Record<string, string> {
  const out = { ...files };
  for (const [p, text] of Object.entries(files)) {
    if (p.startsWith('nodes/')) out[p] = text.replace('hypervisor: xen', 'hypervisor: netns');
    if (p.startsWith('guests/')) out[p] = `${text}netns:\n  command: [sleep, "600"]\n`;
  }
  return out;
}
