// `cgw-sync lab up | check | down`: the whole lab, as the CLI and the end-to-end tests run it.
//
//   up     1. the topology (src/lab/topology.ts) without guests;
//          2. a bare state repository in the lab directory, seeded from a state directory with the
//             lab's adjustments committed on top (src/lab/repo.ts), with --nodes N the nodes,
//             guests and forwards that grow it to N nodes (src/lab/nodes.ts);
//          3. a Git smart-HTTP server on 127.0.0.1 and one `cgw-sync run` agent per node, as
//             background processes recorded in lab.json (src/lab/processes.ts). Each agent runs in
//             the root namespace (it must reach the Git server on 127.0.0.1) and does everything
//             node-local inside its node's namespace through the config's `netns`: nft, and the
//             netns guests, which the agents start themselves;
//          4. waits until every status branch reports the seeded revision applied and each node
//             runs its guests.
//   check  the probes of src/lab/check.ts, expectations from the state at main's tip, plus
//          one line per node saying whether it enforces that revision.
//   down   topology.ts labDown: recorded processes, namespaces by prefix, the lab directory.
//   restart git   the Git server again, on the port recorded in lab.json (the agents' URL).
//
// Lab directory (default /run/cgw-sync/lab/<prefix>):
//   lab.json            the record (processes with PID + start time, repository, URL)
//   git/state.git       the state repository;  git-server.log, git-server.json (URL)
//   webhook.secret, webhooks.json   with --webhook: the agents' secret and the Git server's receivers
//   responder.cjs       the program the guests run (named in the repository's guests/*.yaml)
//   <node>/agent.yaml   the node's agent config;  <node>/agent.log;  <node>/state, <node>/run
//   client.log          the client's responder
import { configureLabGuests } from './mode-guests.js';
import { runReplyPathChecks } from './reply-path.js';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { appendFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { loadState } from '../state/load.js';
import { formatDiagnostics } from '../state/diagnostics.js';
import type { ClusterState, NatMode } from '../state/types.js';
import { statusBranchName } from '../git/status-branch.js';
import { generateNodeKey } from '../git/signature.js';
import { delay, waitUntil } from '../proc/process.js';
import { planLab, type LabPlan } from './plan.js';
import { assertNoLab, labDown, labRunDir, labUp, waitForGuestLinks, waitForResponder, type LabRunOptions } from './topology.js';
import { checkoutRepo, seedLabRepo, type TextFiles } from './repo.js';
import { DEFAULT_SYNC_PORT } from '../settings/conntrackd.js';
import { entersNode } from '../render/node-view.js';
import { DEFAULT_PORT_STRIDE } from '../state/mode-checks.js';
import { extendLabState, extensionFiles, labNodeCount } from './nodes.js';
import { writeResponderScript } from './responder.js';
import { isRunning, logTail, readLabRecord, spawnDetached, stopProcesses, writeLabRecord, type LabProcess, type LabRecord } from './processes.js';
import { branchTip, nodeSettled, readNodeStatus } from './status.js';
import { planChecks, runChecks } from './check.js';
import { httpProbe, tcpProbe, udpProbe, type ProbeResult } from './probes.js';
import { parseReply } from './responder.js';
import { ensureVmImage, type VmImage } from './vm-image.js';
import { labAccel } from './vm-accel.js';
import type { Accel } from '../guests/qemu.js';
import { fleetRows, type FleetRow } from '../rollout/fleet.js';

import { DEFAULT_LAB_PREFIX, LAB_RESTARTABLE } from './names.js';

export { DEFAULT_LAB_PREFIX, LAB_RESTARTABLE } from './names.js';
/** Every 2 seconds (the cron package's six-field syntax, seconds first). */
export const LAB_SCHEDULE = '*/2 * * * * *';
const REPO_NAME = 'state.git';
const GIT_READY_MS = 10_000;
const GIT_SERVER = 'git-server';
/** The Git server ends its open requests on SIGTERM; after this it is killed. */
const GIT_STOP_GRACE_MS = 2_000;
const DEFAULT_READY_TIMEOUT_MS = 60_000;

export interface LabStartOptions extends LabRunOptions {
  prefix?: string;
  /** State directory the repository is seeded from (default: the bundled state-example/). */
  stateDir?: string;
  /** cluster.yaml nat.mode in the lab repository (default: as the state says). */
  mode?: NatMode;
  /** net.bridge.bridge-nf-call-iptables in the node namespaces (default false). */
  brNetfilter?: boolean;
  /** Bound on waiting for the agents to converge (default 60 s). */
  readyTimeoutMs?: number;
  /** Progress lines while it comes up. */
  progress?: (line: string) => void;
  /** netns (default): guests are namespaces; qemu: real VMs (src/lab/vm-image.ts), started by the agents. */
  guests?: LabGuestKind;
  /** Where the VM images are cached (default /var/cache/cgw-sync/lab-images). */
  imageCache?: string;
  /** Each agent listens on 127.0.0.1 and the Git server sends it a signed push webhook (docs/webhooks.md). */
  webhook?: boolean;
  /** Dual stack: the lab repository gets IPv6 twins of the state's addresses (src/lab/ipv6.ts). */
  ipv6?: boolean;
  /** `--nodes N`: grow the seed's cluster to N nodes (src/lab/nodes.ts; default: the seed's count, at most MAX_LAB_NODES). */
  nodes?: number;
}

export type LabGuestKind = 'netns' | 'qemu';

/** How long a VM gets from its qemu start to answering on all responder ports (TCG on a busy box). */
const VM_BOOT_MS = 150_000;

export interface Lab {
  prefix: string;
  dir: string;
  plan: LabPlan;
  /** The lab state as seeded (main's tip after up). */
  state: ClusterState;
  record: LabRecord;
  /** Bare repository path and its clone URL. */
  repo: string;
  url: string;
  /** The revision every node applied. */
  revision: string;
  /** Agent config file per node. */
  agents: Record<string, string>;
  /** VM guests: milliseconds from their qemu start to answering on every responder port. */
  vmBootMs: Record<string, number>;
}

/** The package's root: the folder with package.json above this module (src/lab or dist/lab). */
export function packageRoot(): string {
  let dir = import.meta.dirname;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${import.meta.dirname}`);
    dir = up;
  }
  return dir;
}

/** The compiled program the lab runs as background processes; a clear error when not built. */
export function distEntry(rel: string): string {
  const file = path.join(packageRoot(), 'dist', rel);
  if (!existsSync(file)) {
    throw new Error(`${file} is missing: the lab runs the compiled cgw-sync as background processes; build it first (npm run build)`);
  }
  return file;
}

export function bundledStateDir(): string {
  return path.join(packageRoot(), 'state-example');
}

/** `lab up`. On any failure everything made so far is removed again (with log tails in the error). */
export async function labStart(opts: LabStartOptions = {}): Promise<Lab> {
  const prefix = opts.prefix ?? DEFAULT_LAB_PREFIX;
  const say = opts.progress ?? (() => {});
  const cli = distEntry('cli/bin.js');
  const stateDir = path.resolve(opts.stateDir ?? bundledStateDir());
  const brNetfilter = opts.brNetfilter ?? false;
  const seedState = await loadOrThrow(stateDir); // the seed itself must be valid
  const grown = labGrowth(seedState, opts.nodes);
  await assertNoLab(prefix, { ...opts, withRecord: true });

  // The VM image before anything else exists: the only step that downloads (from the package registry).
  let vm: { image: VmImage; accel: Accel } | undefined;
  if (opts.guests === 'qemu') {
    const image = await ensureVmImage({ cacheRoot: opts.imageCache, progress: say });
    const verdict = await labAccel(image);
    say(`vm image ${image.dir} (kernel ${image.kernelVersion}${image.built ? ', built now' : ', cached'}); accelerator ${verdict.accel}: ${verdict.why}${verdict.cached ? ' (cached)' : ''}`);
    vm = { image, accel: verdict.accel };
  }

  const dir = labRunDir(prefix, opts);
  await mkdir(dir, { recursive: true });
  const record: LabRecord = { prefix, createdAt: new Date().toISOString(), mode: opts.mode, brNetfilter, seededFrom: stateDir, guests: opts.guests ?? 'netns', accel: vm?.accel, processes: [] };
  await writeLabRecord(dir, record);
  const started = async (p: LabProcess) => {
    record.processes.push(p);
    await writeLabRecord(dir, record);
  };

  try {
    // The repository first: the topology is planned from the lab state (node names, addresses).
    const responder = path.join(dir, 'responder.cjs');
    await writeResponderScript(responder);
    const projectRoot = path.join(dir, 'git');
    await mkdir(projectRoot, { recursive: true });
    // Each node signs its reports with a key made here; the state gets the public halves.
    const keys = await labSigningKeys(dir, grown.nodeNames);
    const seeded = await seedLabRepo(projectRoot, REPO_NAME, stateDir, prefix, {
      mode: opts.mode,
      ipv6: opts.ipv6,
      nodes: grown.nodeNames.length,
      extraFiles: grown.files,
      statusKeys: Object.fromEntries(Object.entries(keys).map(([n, k]) => [n, k.publicKey])),
      responderScript: responder,
      vm: vm && { kernel: vm.image.kernel, initrd: vm.image.initrd },
    });
    Object.assign(record, { repo: seeded.repo, revision: seeded.revision });
    const state = await stateAt(seeded.repo, 'main', dir);
    say(`state repository ${seeded.repo}: seeded from ${stateDir}, lab changes in ${seeded.revision.slice(0, 12)}`);

    say(`topology: namespaces ${prefix}* (br_netfilter ${brNetfilter ? 'on' : 'off'})`);
    // startGuests false: the agents start the guests, through the netns guest driver.
    const plan = await labUp(state, { prefix, brNetfilter, runRoot: opts.runRoot, startGuests: false, labDir: dir });

    // Webhooks: one loopback port per agent (the agents run in the root namespace), known to the Git server.
    const listeners = opts.webhook ? await labWebhooks(dir, plan.nodes.map((n) => n.name)) : undefined;
    const url = `${await startGitServer(dir, undefined, started)}/${REPO_NAME}`;
    record.url = url;
    say(`git server: ${url}${listeners ? ' (push webhooks to the agents)' : ''}`);

    record.agents = {};
    for (const node of plan.nodes) {
      const nodeDir = path.join(dir, node.name);
      await mkdir(nodeDir, { recursive: true });
      const config = path.join(nodeDir, 'agent.yaml');
      await writeFile(config, agentConfigYaml(node.name, node.ns, url, vm && { imageDir: vm.image.dir, accel: vm.accel }, keys[node.name] && path.relative(nodeDir, keys[node.name].file)));
      record.agents[node.name] = config;
      if (listeners) await appendFile(config, labListenerYaml(listeners[node.name]));
      await started(await spawnDetached(`agent ${node.name}`, [process.execPath, cli, 'run', '--config', config, '--log', 'json'], path.join(nodeDir, 'agent.log')));
    }
    say(`agents: ${plan.nodes.map((n) => n.name).join(', ')} (every 2 s, each acting inside its node namespace)`);

    const vmBootMs = await waitSettled(record, state, plan, seeded.revision, opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
    for (const [g, ms] of Object.entries(vmBootMs)) say(`vm ${g}: answering ${(ms / 1000).toFixed(1)} s after its qemu started (${vm?.accel})`);
    return { prefix, dir, plan, state, record, repo: seeded.repo, url, revision: seeded.revision, agents: record.agents, vmBootMs };
  } catch (e) {
    const tails = await Promise.all(record.processes.map(async (p) => `--- ${p.name} (${p.log}):\n${await logTail(p.log)}`));
    await labDown(prefix, opts).catch(() => undefined);
    const detail = tails.length ? `\n${tails.join('\n')}` : '';
    throw new Error(`lab up failed, everything it made is removed again: ${(e as Error).message}${detail}`);
  }
}

/** The nodes and files `--nodes` adds to the seed (refused clearly when out of bounds); pure. */
export function labGrowth(seed: ClusterState, nodes: number | undefined): { nodeNames: string[]; files: TextFiles } {
  const count = labNodeCount(nodes, seed.nodes.length);
  const ext = extendLabState(seed, count);
  const existing = [...seed.nodes, ...seed.guests, ...seed.forwards].map((x) => x.source.file);
  return { nodeNames: [...seed.nodes, ...ext.nodes].map((n) => n.name), files: extensionFiles(ext, count, existing) };
}

/** A signing key per node, the private half in `<lab dir>/<node>/status.key` (0600). */
async function labSigningKeys(dir: string, nodes: string[]): Promise<Record<string, { file: string; publicKey: string }>> {
  const out: Record<string, { file: string; publicKey: string }> = {};
  for (const node of nodes) {
    const key = await generateNodeKey(node);
    const file = path.join(dir, node, 'status.key');
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, key.privateKey, { mode: 0o600 });
    out[node] = { file, publicKey: key.publicKey };
  }
  return out;
}

/**
 * The agent config of one lab node: the lab repository as source and status target, the
 * node's namespace for nft and guests, and state under the lab directory (relative paths are
 * relative to the file).
 */
export function agentConfigYaml(node: string, ns: string, url: string, vm?: { imageDir: string; accel: Accel }, signingKey?: string): string {
  const doc = {
    apiVersion: 'cgw-sync/v1',
    kind: 'AgentConfig',
    node,
    source: { url, branch: 'main', timeoutSeconds: 10 },
    schedule: { cron: LAB_SCHEDULE, jitterSeconds: 0 },
    status: { branch: 'status/{node}', ...(signingKey && { signingKey }) },
    stateDir: './state',
    netns: ns,
    // Lab guests run the lab responder as their netns.command: state commands are allowed here only.
    guests: {
      enabled: true,
      runDir: './run',
      stopTimeoutSeconds: 5,
      allowCommands: true,
      // VMs: the lab's image folder, the probed accelerator, a tap the driver makes in the node namespace.
      ...(vm ? { imageDirs: [vm.imageDir], qemu: { accel: vm.accel, nic: 'tap' } } : {}),
    },
  };
  return `# Written by \`cgw-sync lab up\`: the agent of lab node ${node}.\n${stringify(doc)}`;
}

/** The lab agents run in the root namespace: they listen on loopback, where only this host reaches them. */
const LAB_LISTEN_ADDRESS = '127.0.0.1';
const WEBHOOKS_FILE = 'webhooks.json';

export interface LabListener {
  port: number;
  secretFile: string;
}

/** The keys (appended to agentConfigYaml's document) that make a lab agent take the Git server's webhooks. */
export function labListenerYaml(l: LabListener): string {
  return `# lab up --webhook: pushes reach this agent at once (docs/webhooks.md).\n${stringify({ listen: { address: LAB_LISTEN_ADDRESS, port: l.port }, webhook: { secretFile: l.secretFile } })}`;
}

/**
 * A webhook secret and a free loopback port per node, and the Git server's webhooks file (0600:
 * the secret stays out of command lines). A port is free when picked; nothing else on this host
 * should take it in the second before the agent binds it.
 */
async function labWebhooks(dir: string, nodes: string[]): Promise<Record<string, LabListener>> {
  const secret = randomBytes(32).toString('hex');
  const secretFile = path.join(dir, 'webhook.secret');
  await writeFile(secretFile, `${secret}\n`, { mode: 0o600 });
  const out: Record<string, LabListener> = {};
  for (const n of nodes) out[n] = { port: await freeLoopbackPort(), secretFile };
  const hooks = Object.values(out).map((l) => ({ url: `http://${LAB_LISTEN_ADDRESS}:${l.port}/hooks/push`, secret }));
  await writeFile(path.join(dir, WEBHOOKS_FILE), JSON.stringify(hooks), { mode: 0o600 });
  return out;
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, LAB_LISTEN_ADDRESS, () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function loadOrThrow(dir: string): Promise<ClusterState> {
  const { state, diagnostics } = await loadState(dir);
  if (!state) throw new Error(`${dir} is not a valid state:\n${formatDiagnostics(diagnostics)}`);
  return state;
}

/** The state at `ref` of the lab repository, loaded from a temporary checkout under `scratch`. */
export async function stateAt(repo: string, ref: string, scratch: string): Promise<ClusterState> {
  const { dir } = await checkoutRepo(repo, ref, scratch);
  try {
    return await loadOrThrow(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Start the lab's Git server (src/lab/git-serve.ts) serving `<dir>/git`, on `port` or a free
 * one; `started` records the process before the wait, so `down` finds it whatever happens next.
 * Resolves with its base URL once it listens.
 */
async function startGitServer(dir: string, port: number | undefined, started: (p: LabProcess) => Promise<void>): Promise<string> {
  const ready = path.join(dir, 'git-server.json');
  await rm(ready, { force: true });
  const webhooks = path.join(dir, WEBHOOKS_FILE);
  const argv = [process.execPath, distEntry('lab/git-serve.js'), path.join(dir, 'git'), ready, port === undefined ? '' : String(port), ...(existsSync(webhooks) ? [webhooks] : [])];
  const server = await spawnDetached(GIT_SERVER, argv, path.join(dir, 'git-server.log'));
  await started(server);
  const up = await waitUntil(() => existsSync(ready) || !isRunning(server), GIT_READY_MS);
  if (!up || !existsSync(ready)) {
    throw new Error(`the Git server did not come up within ${GIT_READY_MS} ms:\n${await logTail(server.log)}`);
  }
  return (JSON.parse(await readFile(ready, 'utf8')) as { url: string }).url;
}

/**
 * `lab restart git`: stop the lab's Git server if it still runs, and start it again on the port
 * recorded in lab.json, which is the URL the agents were configured with: they reconnect by
 * themselves (for fault tests: an outage of Git, then its return). Resolves with the URL.
 */
export async function labRestart(prefix: string, what: string, opts: LabRunOptions = {}): Promise<string> {
  if (!(LAB_RESTARTABLE as readonly string[]).includes(what)) throw new Error(`lab restart: cannot restart "${what}" (one of: ${LAB_RESTARTABLE.join(', ')})`);
  const record = await readLab(prefix, opts);
  const old = record.processes.find((p) => p.name === GIT_SERVER);
  if (!old || !record.url) throw new Error(`lab ${prefix} has no Git server recorded in ${labRunDir(prefix, opts)}`);
  await stopProcesses([old], GIT_STOP_GRACE_MS);
  const dir = labRunDir(prefix, opts);
  const port = Number(new URL(record.url).port);
  const base = await startGitServer(dir, port, async (p) => {
    record.processes = [...record.processes.filter((q) => q !== old), p];
    await writeLabRecord(dir, record);
  });
  const url = `${base}/${REPO_NAME}`;
  if (url !== record.url) throw new Error(`the Git server came back at ${url}, not at ${record.url} where the agents look`);
  return url;
}

/** Placement of the guests: node -> guest names. */
function guestsByNode(state: ClusterState): Record<string, string[]> {
  const out: Record<string, string[]> = Object.fromEntries(state.nodes.map((n) => [n.name, []]));
  for (const g of state.guests) out[g.node]?.push(g.name);
  return out;
}

/**
 * Wait until every node reports `revision` applied and runs exactly its guests, and the guests'
 * responders listen. Fails early when an agent process dies.
 */
async function waitSettled(record: LabRecord, state: ClusterState, plan: LabPlan, revision: string, timeoutMs: number): Promise<Record<string, number>> {
  const placement = guestsByNode(state);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = record.processes.filter((p) => !isRunning(p));
    if (dead.length) throw new Error(`${dead.map((p) => p.name).join(', ')} exited`);
    const statuses = await Promise.all(plan.nodes.map((n) => readNodeStatus(record.repo!, n.name)));
    if (plan.nodes.every((n, i) => nodeSettled(statuses[i], revision, placement[n.name]))) break;
    if (Date.now() >= deadline) {
      const why = plan.nodes.map((n, i) => `${n.name}: ${describeStatus(statuses[i])}`).join('; ');
      throw new Error(`the agents did not converge on ${revision.slice(0, 12)} within ${timeoutMs} ms (${why})`);
    }
    await delay(250);
  }
  const bootMs: Record<string, number> = {};
  for (const g of plan.guests) {
    if (g.vm) bootMs[g.name] = await waitForVmResponder(plan, g);
    else {
      await waitForGuestLinks(plan, g);
      await waitForResponder(g.ns, `lab guest ${g.name}`);
    }
  }
  return bootMs;
}

/**
 * Wait until a VM answers on all responder ports, asked from its node (it boots for seconds after
 * qemu starts); returns the time from its qemu start (the driver's record) to the answer.
 */
export async function waitForVmResponder(plan: LabPlan, g: LabPlan['guests'][number], timeoutMs = VM_BOOT_MS): Promise<number> {
  const node = plan.nodes.find((n) => n.name === g.node)!;
  const answers = async () => {
    const probes = [httpProbe(node.ns, g.ip, 80, { timeoutS: 2 }), tcpProbe(node.ns, g.ip, 22, { timeoutS: 2 }), udpProbe(node.ns, g.ip, 123, { timeoutS: 2 })];
    return (await Promise.all(probes)).every((r) => r.ok && parseReply(r.reply ?? '')?.guest === g.name);
  };
  if (!(await waitUntil(answers, timeoutMs, 500))) throw new Error(`lab VM ${g.name}: responder not answering on ${g.ip} after ${timeoutMs} ms`);
  const meta = JSON.parse(await readFile(path.join(path.dirname(g.vm!.serial), `${g.name}.meta.json`), 'utf8')) as { startedAt: string };
  return Date.now() - Date.parse(meta.startedAt);
}

function describeStatus(s: Awaited<ReturnType<typeof readNodeStatus>>): string {
  if (!s) return 'no report yet';
  const guests = s.guests.map((g) => `${g.name} ${g.state}`).join(', ') || 'no guests';
  return `${s.outcome} at ${s.appliedRevision?.slice(0, 12) ?? 'none'}, ${guests}${s.errors.length ? `, errors: ${s.errors.join(' | ')}` : ''}`;
}

export interface LabCheckReport {
  /** main's tip: the state the expectations come from. */
  revision: string;
  results: ProbeResult[];
  /** Every node's latest report, as `status --all` lists it. */
  fleet: FleetRow[];
}

/** The lab with this prefix, as recorded by `lab up`; a clear error when there is none. */
export async function readLab(prefix: string, opts: LabRunOptions = {}): Promise<LabRecord & { repo: string }> {
  const record = await readLabRecord(labRunDir(prefix, opts));
  if (!record?.repo) throw new Error(`no lab with prefix ${prefix} (nothing recorded in ${labRunDir(prefix, opts)}); start one with \`cgw-sync lab up\``);
  return record as LabRecord & { repo: string };
}

/**
 * `lab check`: one result per node (does it enforce main's tip?) and per probe, with the
 * expectations derived from the state at main's tip.
 */
export async function labCheck(prefix: string, opts: LabRunOptions & { timeoutS?: number } = {}): Promise<LabCheckReport> {
  const record = await readLab(prefix, opts);
  const dir = labRunDir(prefix, opts);
  const revision = await branchTip(record.repo);
  const state = await stateAt(record.repo, revision, dir);
  const plan = planLab(state, { prefix, brNetfilter: record.brNetfilter, labDir: dir });
  const placement = guestsByNode(state);
  const statuses = await Promise.all(plan.nodes.map((n) => readNodeStatus(record.repo, n.name)));
  const nodes = plan.nodes.map((n, i): ProbeResult => {
    const s = statuses[i];
    return { name: `${n.name} enforces main (${revision.slice(0, 12)}) and runs ${placement[n.name].join(', ') || 'no guests'}`, ok: nodeSettled(s, revision, placement[n.name]), detail: `${statusBranchName(n.name)}: ${describeStatus(s)}` };
  });
  const results = [...nodes, ...(await probeLab(state, plan, { timeoutS: opts.timeoutS }))];
  // The fleet as `status --all` shows it, from the same reports.
  const reports = new Map(plan.nodes.map((n, i) => [n.name, statuses[i] ?? null] as const));
  return { revision, results, fleet: fleetRows(plan.nodes.map((n) => n.name), reports, new Date(), { main: revision }) };
}

/**
 * The network probes of a lab whose nodes enforce `state`: the guests' own part of the NAT mode
 * first (stateless-nat: the tagged-port redirect, as a guest admin would load it), then every
 * forward on every node it enters, each guest's outbound and gateway ARP (src/lab/check.ts), and
 * which node's uplink answers a cross-node forward (src/lab/reply-path.ts). `lab check` and
 * `verify` both run exactly this.
 */
export async function probeLab(state: ClusterState, plan: LabPlan, opts: { timeoutS?: number; concurrency?: number } = {}): Promise<ProbeResult[]> {
  await configureLabGuests(state, plan);
  const probes = await runChecks(planChecks(state, plan), opts.timeoutS, opts.concurrency);
  const replyPaths = await runReplyPathChecks(state, plan, opts.timeoutS);
  return [...probes, ...replyPaths];
}

/** The text `lab up` prints once the lab works. */
export function labSummary(lab: Lab): string {
  const p = lab.prefix;
  const client = lab.plan.client.ns;
  const [n1] = lab.plan.nodes;
  const prefixOpt = p === DEFAULT_LAB_PREFIX ? '' : ` --prefix ${p}`;
  const lines = [
    `lab ${p} is up: ${lab.plan.nodes.map((n) => n.name).join(' + ')}, ${lab.state.cluster.nat.mode}, br_netfilter ${lab.plan.brNetfilter ? 'on' : 'off'}; ${lab.plan.nodes.length === 1 ? 'the node' : `all ${lab.plan.nodes.length} nodes`} applied ${lab.revision.slice(0, 12)}`,
    '',
    `  state repository  ${lab.url}`,
    `  status branches   ${lab.plan.nodes.map((n) => statusBranchName(n.name)).join(', ')} (same repository)`,
    `  namespaces        ${[...lab.plan.namespaces, ...lab.plan.guests.filter((g) => !g.vm).map((g) => g.ns)].join(' ')}`,
    `  public IPs        ${lab.plan.nodes.map((n) => `${n.name} ${n.publicIP}`).join(', ')}; client ${lab.plan.client.ip} in ${client}`,
    ...modeLines(lab.state),
    `  logs              ${lab.dir}/{git-server.log,${lab.plan.nodes.map((n) => `${n.name}/agent.log`).join(',')}}`,
    '',
    'Try it:',
    ...tryLines([
      ...lab.plan.nodes.map((n) => [`ip netns exec ${client} curl -s http://${n.publicIP}/`, `enters ${n.name}${webForward(lab.state, n.name)}`]),
      [`cgw-sync lab check${prefixOpt}`, 'every probe, then "N passed, M failed"'],
    ]),
    '',
    'Change the cluster through Git (the agents apply main within 2 s and report back):',
    `  git clone ${lab.url} lab-state && cd lab-state`,
    '  # edit forwards/*.yaml or move a guest (guests/<guest>.yaml node:), then',
    '  git commit -am "my change" && git push origin main',
    `  git fetch origin && git show origin/${statusBranchName(n1?.name ?? 'node1')}:REPORT.md`,
    '',
    `Remove everything: cgw-sync lab down${prefixOpt}`,
  ];
  return `${lines.join('\n')}\n`;
}

/** ": web-node1 -> guest2" when a TCP forward on port 80 enters the node (what its curl line reaches). */
function webForward(state: ClusterState, node: string): string {
  const f = state.forwards.find((f) => f.protocol === 'tcp' && f.port === 80 && entersNode(f, node));
  return f ? `: ${f.name} -> ${f.target.guest}` : '';
}

/** What the NAT mode adds per node: ct-sync's sync channel, stateless-nat's tags. */
function modeLines(state: ClusterState): string[] {
  const { nat } = state.cluster;
  if (nat.mode === 'ct-sync') {
    const group = nat.ctSync?.multicastGroup;
    const port = nat.ctSync?.port ?? DEFAULT_SYNC_PORT;
    return [`  ct-sync channel   ${group ? `multicast ${group}` : 'unicast'} udp/${port} between ${state.nodes.map((n) => n.guestBridge.nodeIP).join(', ')} (guest VLAN; guests cannot send or read it)`];
  }
  if (nat.mode === 'stateless-nat') {
    return [`  stateless tags    ${state.nodes.map((n) => `${n.name} ${n.natTag}`).join(', ')} (tagged port = target port + tag x ${nat.portStride ?? DEFAULT_PORT_STRIDE})`];
  }
  return [];
}

/** Commands with aligned comments. */
function tryLines(rows: string[][]): string[] {
  const width = Math.max(...rows.map(([cmd]) => cmd.length));
  return rows.map(([cmd, why]) => `  ${cmd.padEnd(width)}   # ${why}`);
}
