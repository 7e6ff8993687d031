// Builds and tears down the lab described by a LabPlan (src/lab/plan.ts): namespaces, bridges,
// veths, addresses, then one netns guest per state guest running the lab responder.
//
// `labDown` needs no plan: it removes every namespace whose name starts with the prefix (and the
// processes inside them) plus the lab's runtime directory, so it also cleans up after a crash.
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
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
  runInUnchecked,
  setMaster,
  sysctl,
} from '../netns/netns.js';
import { NetnsDriver } from '../guests/netns.js';
import { DEFAULT_RUN_ROOT } from '../guests/runtime.js';
import { processStartTime, terminate, waitUntil } from '../proc/process.js';
import { assertLabPrefix, describeStep, planLab, type LabNode, type LabOptions, type LabPlan, type LabStep } from './plan.js';
import { RESPONDER_PORTS, responderCommand } from './responder.js';

export interface LabRunOptions {
  /** Parent of the lab's runtime directory (guest metadata and logs). Default /run/cgw-sync/lab. */
  runRoot?: string;
}

/** How long `up` waits for a guest's responder to listen. */
const RESPONDER_READY_MS = 5_000;
/** How long a process in a lab namespace gets to leave on SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 2_000;

export function labRunDir(prefix: string, opts: LabRunOptions = {}): string {
  return join(opts.runRoot ?? join(DEFAULT_RUN_ROOT, 'lab'), prefix);
}

/** Namespaces that belong to the lab with this prefix (what `down` would remove). */
export async function labNamespaces(prefix: string): Promise<string[]> {
  assertLabPrefix(prefix);
  return (await listNamespaces()).filter((ns) => ns.startsWith(prefix)).sort();
}

/**
 * Plan and build the lab for a state, and start its guests. Refuses when namespaces with the prefix
 * already exist. On any failure, removes what it made and rethrows.
 */
export async function labUp(state: ClusterState, opts: LabOptions & LabRunOptions): Promise<LabPlan> {
  const plan = planLab(state, opts);
  const existing = await labNamespaces(plan.prefix);
  if (existing.length > 0) {
    throw new Error(`lab ${plan.prefix} already exists (${existing.join(', ')}); run lab down first`);
  }
  try {
    await buildTopology(plan);
    await startGuests(state, plan, opts);
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
}

async function applyStep(s: LabStep): Promise<void> {
  switch (s.kind) {
    case 'netns':
      return createNamespace(s.ns);
    case 'sysctl':
      return sysctl(s.ns, s.key, s.value);
    case 'bridge':
      return addBridge(s.ns, s.name);
    case 'veth':
      return addVeth({ ns: s.a.ns, name: s.a.dev }, { ns: s.b.ns, name: s.b.dev });
    case 'master':
      return setMaster(s.ns, s.dev, s.bridge);
    case 'addr':
      return addAddress(s.ns, s.dev, s.cidr);
    case 'up':
      return linkUp(s.ns, s.dev);
  }
}

/** The netns guest driver for one lab node. */
export function labDriver(plan: LabPlan, node: LabNode, opts: LabRunOptions = {}): NetnsDriver {
  return new NetnsDriver({ nodeNs: node.ns, prefix: node.guestPrefix, runDir: join(labRunDir(plan.prefix, opts), node.name) });
}

/**
 * Start every state guest as a netns guest on its lab node. Guests without their own netns
 * command run the lab responder; `up` waits until it listens.
 */
export async function startGuests(state: ClusterState, plan: LabPlan, opts: LabRunOptions = {}): Promise<void> {
  const cluster = { guestSubnet: state.cluster.guestSubnet, gatewayIP: state.cluster.gatewayIP };
  for (const lg of plan.guests) {
    const spec = state.guests.find((g) => g.name === lg.name)!;
    const nodeSpec = state.nodes.find((n) => n.name === lg.node)!;
    const node = plan.nodes.find((n) => n.name === lg.node)!;
    const runsResponder = !spec.netns?.command?.length;
    const guest: GuestSpec = { ...spec, netns: { command: runsResponder ? responderCommand(spec.name) : spec.netns!.command } };
    // In the lab every node is a namespace, whatever hypervisor the state names.
    await labDriver(plan, node, opts).start(guest, { node: { ...nodeSpec, hypervisor: 'netns' }, cluster });
    // The driver's namespace got the default (IPv6 on); turning `all` off covers its eth0 too.
    await runIn(lg.ns, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1']);
    if (runsResponder && !(await waitUntil(() => responderListening(lg.ns), RESPONDER_READY_MS))) {
      throw new Error(`lab guest ${lg.name}: responder not listening after ${RESPONDER_READY_MS} ms`);
    }
  }
}

async function responderListening(ns: string): Promise<boolean> {
  const r = await runInUnchecked(ns, 'ss', ['-Hln', '-tu']);
  const ports = new Set(
    r.stdout
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => `${l.split(/\s+/)[0]}/${l.split(/\s+/)[4]?.split(':').pop()}`),
  );
  return (
    RESPONDER_PORTS.tcp.every((p) => ports.has(`tcp/${p}`)) && RESPONDER_PORTS.udp.every((p) => ports.has(`udp/${p}`))
  );
}

/**
 * Remove the lab with this prefix: stop every process inside its namespaces (SIGTERM, then
 * SIGKILL), delete the guest namespaces, then the others, then the runtime directory.
 * Returns the namespaces removed.
 */
export async function labDown(prefix: string, opts: LabRunOptions = {}): Promise<string[]> {
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
