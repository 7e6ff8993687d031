// Builds and tears down the lab described by a LabPlan (src/lab/plan.ts): namespaces, bridges,
// veths, addresses, the client's responder, then (unless agents will do it) one netns guest per
// state guest running the lab responder.
//
// `labDown` needs no plan: it stops the root-namespace processes recorded in the lab's runtime
// directory (agents, Git server: src/lab/processes.ts), removes every namespace whose name starts
// with the prefix (and the processes inside them) and the runtime directory, so it also cleans
// up after a crash.
import { join } from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import type { ClusterState, GuestSpec } from '../state/types.js';
import {
  addAddress,
  addBridge,
  addVeth,
  createNamespace,
  deleteNamespace,
  linkUp,
  listNamespaces,
  namespacePids,
  runIn,
  setMaster,
  sysctl,
  waitForLinks,
  waitForListening,
} from '../netns/netns.js';
import { NetnsDriver } from '../guests/netns.js';
import { DEFAULT_RUN_ROOT } from '../guests/runtime.js';
import { DEFAULT_GUEST_POLICY, policyGuard } from '../guests/policy.js';
import { processStartTime, terminate } from '../proc/process.js';
import { assertLabPrefix, describeStep, planLab, type LabGuest, type LabNode, type LabOptions, type LabPlan, type LabStep } from './plan.js';
import { RESPONDER_PORTS, responderCommand } from './responder.js';
import { readLabRecord, spawnDetached, stopProcesses } from './processes.js';

export interface LabRunOptions {
  /** Parent of the lab's runtime directory (guest metadata and logs). Default /run/cgw-sync/lab. */
  runRoot?: string;
}

export interface LabUpOptions extends LabOptions, LabRunOptions {
  /**
   * Start the state's guests right away (default). false when agents will start them, through
   * the same netns guest driver and with the same namespace names (`<prefix><node>.<guest>`).
   */
  startGuests?: boolean;
}

/** How long `up` waits for a guest's responder to listen. */
const RESPONDER_READY_MS = 15_000;
/** How long a process in a lab namespace gets to leave on SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 2_000;
/** An agent finishes its running cycle on SIGTERM (never stopped mid-apply): more time. */
const AGENT_STOP_GRACE_MS = 10_000;

export function labRunDir(prefix: string, opts: LabRunOptions = {}): string {
  return join(opts.runRoot ?? join(DEFAULT_RUN_ROOT, 'lab'), prefix);
}

/** Namespaces that belong to the lab with this prefix (what `down` would remove). */
export async function labNamespaces(prefix: string): Promise<string[]> {
  assertLabPrefix(prefix);
  return (await listNamespaces()).filter((ns) => ns.startsWith(prefix)).sort();
}

/** Thrown when a lab with the prefix is already (or still) there. */
export class LabExists extends Error {
  override name = 'LabExists';
}

/**
 * Refuse to build over an existing lab: its namespaces, or (withRecord) the record of a lab whose
 * namespaces are gone but whose processes may still run.
 */
export async function assertNoLab(prefix: string, opts: LabRunOptions & { withRecord?: boolean } = {}): Promise<void> {
  const existing = await labNamespaces(prefix);
  const record = opts.withRecord ? await readLabRecord(labRunDir(prefix, opts)).catch(() => undefined) : undefined;
  if (existing.length > 0 || record) {
    const what = existing.length > 0 ? `namespaces ${existing.join(', ')}` : `runtime directory ${labRunDir(prefix, opts)}`;
    throw new LabExists(`lab ${prefix} already exists (${what}); remove it with \`cgw-sync lab down --prefix ${prefix}\``);
  }
}

/**
 * Plan and build the lab for a state: the topology, the client's responder, and (unless
 * startGuests is false) the guests. Refuses when a lab with the prefix already exists. On any
 * failure, removes what it made and rethrows.
 */
export async function labUp(state: ClusterState, opts: LabUpOptions): Promise<LabPlan> {
  const plan = planLab(state, opts);
  await assertNoLab(plan.prefix, opts);
  try {
    await buildTopology(plan);
    await startClientResponder(plan, opts);
    if (opts.startGuests ?? true) await startGuests(state, plan, opts);
  } catch (e) {
    await labDown(plan.prefix, opts).catch(() => undefined);
    throw e;
  }
  return plan;
}

/** Execute the plan's steps in order. */
export async function buildTopology(plan: LabPlan): Promise<void> {
  for (const step of plan.steps) {
    try {
      await applyStep(step);
    } catch (e) {
      throw new Error(`lab step failed: ${describeStep(step)}: ${(e as Error).message}`);
    }
  }
  // Probes sent before the links carry traffic are lost: wait for carrier, forwarding bridge ports.
  await Promise.all(plan.namespaces.map((ns) => waitForLinks(ns)));
}

async function applyStep(s: LabStep): Promise<void> {
  switch (s.kind) {
    case 'netns':
      return createNamespace(s.ns);
    case 'sysctl':
      return sysctl(s.ns, s.key, s.value);
    case 'bridge':
      return addBridge(s.ns, s.name, s.mac);
    case 'veth':
      return addVeth({ ns: s.a.ns, name: s.a.dev }, { ns: s.b.ns, name: s.b.dev });
    case 'master':
      return setMaster(s.ns, s.dev, s.bridge);
    case 'addr':
      if (!s.flags) return addAddress(s.ns, s.dev, s.cidr);
      await runIn(s.ns, 'ip', ['addr', 'add', s.cidr, 'dev', s.dev, ...s.flags]);
      return;
    case 'up':
      return linkUp(s.ns, s.dev);
  }
}

/** The netns guest driver for one lab node. */
export function labDriver(plan: LabPlan, node: LabNode, opts: LabRunOptions = {}): NetnsDriver {
  // The lab runs its own responder (and the lab state's commands) in its guests: state commands allowed.
  const guard = policyGuard({ ...DEFAULT_GUEST_POLICY, allowCommands: true });
  return new NetnsDriver({ nodeNs: node.ns, prefix: node.guestPrefix, runDir: join(labRunDir(plan.prefix, opts), node.name), guard });
}

/**
 * Start every state guest as a netns guest on its lab node. Guests without their own netns
 * command run the lab responder; `up` waits until it listens.
 */
export async function startGuests(state: ClusterState, plan: LabPlan, opts: LabRunOptions = {}): Promise<void> {
  const cluster = { guestSubnet: state.cluster.guestSubnet, gatewayIP: state.cluster.gatewayIP, ipv6: state.cluster.ipv6 };
  for (const lg of plan.guests) {
    const spec = state.guests.find((g) => g.name === lg.name)!;
    const nodeSpec = state.nodes.find((n) => n.name === lg.node)!;
    const node = plan.nodes.find((n) => n.name === lg.node)!;
    const runsResponder = !spec.netns?.command?.length;
    const guest: GuestSpec = { ...spec, netns: { command: runsResponder ? responderCommand(spec.name) : spec.netns!.command } };
    // In the lab every node is a namespace, whatever hypervisor the state names.
    await labDriver(plan, node, opts).start(guest, { node: { ...nodeSpec, hypervisor: 'netns' }, cluster });
    // The driver's namespace got the default (IPv6 on); turning `all` off covers its eth0 too.
    // A dual-stack guest keeps it.
    if (lg.ipv6 === undefined) await runIn(lg.ns, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1']);
    await waitForGuestLinks(plan, lg);
    if (runsResponder) await waitForResponder(lg.ns, `lab guest ${lg.name}`);
  }
}

/** Wait until a started guest's links carry traffic: its own and the node's (its bridge port). */
export async function waitForGuestLinks(plan: LabPlan, guest: LabGuest): Promise<void> {
  const node = plan.nodes.find((n) => n.name === guest.node)!;
  await Promise.all([waitForLinks(guest.ns), waitForLinks(node.ns)]);
}

/**
 * The client answers like a guest ("this is client OK from <source> ..."), so a check can see
 * which source address a guest's outbound traffic has when it reaches the public segment.
 */
async function startClientResponder(plan: LabPlan, opts: LabRunOptions): Promise<void> {
  const dir = labRunDir(plan.prefix, opts);
  await mkdir(dir, { recursive: true });
  await spawnDetached('client responder', ['ip', 'netns', 'exec', plan.client.ns, ...responderCommand('client')], join(dir, 'client.log'));
  await waitForResponder(plan.client.ns, 'lab client');
}

/** Wait until the responder in namespace ns listens on all its ports. */
export async function waitForResponder(ns: string, what: string): Promise<void> {
  const ports = [...RESPONDER_PORTS.tcp.map((p) => `tcp/${p}`), ...RESPONDER_PORTS.udp.map((p) => `udp/${p}`)];
  await waitForListening(ns, ports, `${what}: responder`, RESPONDER_READY_MS);
}

/**
 * Remove the lab with this prefix: stop the recorded agents and Git server (agents first, so none
 * starts a guest again), stop every process inside its namespaces (SIGTERM, then SIGKILL), delete
 * the guest namespaces, then the others, then the runtime directory.
 * Returns the namespaces removed.
 */
export async function labDown(prefix: string, opts: LabRunOptions = {}): Promise<string[]> {
  assertLabPrefix(prefix);
  const record = await readLabRecord(labRunDir(prefix, opts)).catch(() => undefined);
  if (record) {
    const agents = record.processes.filter((p) => p.name.startsWith('agent'));
    await stopProcesses(agents, AGENT_STOP_GRACE_MS);
    await stopProcesses(record.processes.filter((p) => !agents.includes(p)), STOP_GRACE_MS);
  }
  const namespaces = await labNamespaces(prefix);
  for (const ns of namespaces) {
    const pids = (await namespacePids(ns)).filter((pid) => pid !== process.pid);
    await Promise.all(pids.map((pid) => terminate(pid, processStartTime(pid), STOP_GRACE_MS)));
  }
  // Guest namespaces (`<p><node>.<guest>`) first: their veths have a peer in a node namespace.
  const isGuest = (ns: string) => ns.slice(prefix.length).includes('.');
  for (const ns of [...namespaces.filter(isGuest), ...namespaces.filter((ns) => !isGuest(ns))]) {
    await deleteNamespace(ns);
  }
  await rm(labRunDir(prefix, opts), { recursive: true, force: true });
  return namespaces;
}
