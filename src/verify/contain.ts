// What `cgw-sync verify` runs of an untrusted revision, decided before anything is created. Pure.
//
// verify runs as root on a CI runner, so the state may name nothing that acts outside the
// throwaway namespaces it builds:
//   - every node is a namespace (`<prefix><node>`), whatever hypervisor the state names; its
//     interfaces and addresses exist only inside it;
//   - every guest is a netns guest running the lab responder: the state's boot paths (disk,
//     kernel, initrd, append) and netns commands are dropped, never read or run;
//   - health checks, hooks, windows, waves and suspend are not part of the proof (they act on
//     real nodes) and are ignored.
// What cannot be built that way, or would not fit a CI runner, is refused with the reason.
import type { ClusterState } from '../state/types.js';
import { parseCidr, subnetContains } from '../state/ipv4.js';
import { entersNode } from '../render/node-view.js';
import { DEFAULT_CLIENT_IP, DEFAULT_PUBLIC_SUBNET, planLab, type LabPlan } from '../lab/plan.js';

/** Sizes a 2-core CI runner takes in a minute or so (each node and guest is a namespace, each probe a process). */
export const VERIFY_LIMITS = { nodes: 4, guests: 16, forwardProbes: 64 } as const;

export interface Contained {
  /** The state as verify runs it: netns nodes and guests, nothing of the state's commands or boot paths. */
  state: ClusterState;
  plan: LabPlan;
  /** What of the state was replaced or is not exercised, for the report. */
  notes: string[];
}

export type ContainResult = { ok: true; contained: Contained } | { ok: false; refusals: string[] };

/** The lab's public segment for this state: the /24 all public IPs share, and a free client address in it. */
export function publicSegment(state: ClusterState): { subnet: string; clientIP: string } | string {
  const ips = state.nodes.map((n) => n.uplink.publicIP);
  const subnet = ips.every((ip) => subnetContains(parseCidr(DEFAULT_PUBLIC_SUBNET), ip)) ? DEFAULT_PUBLIC_SUBNET : `${ips[0]!.split('.').slice(0, 3).join('.')}.0/24`;
  const net = parseCidr(subnet);
  const outside = ips.filter((ip) => !subnetContains(net, ip));
  if (outside.length) return `the nodes' public IPs (${ips.join(', ')}) are not in one /24: verify puts them on one lab segment with a client`;
  if (subnetContains(parseCidr(state.cluster.guestSubnet), ips[0]!) || subnetContains(net, state.cluster.guestSubnet.split('/')[0]!)) {
    return `the public segment ${subnet} overlaps the guest subnet ${state.cluster.guestSubnet}`;
  }
  const base = subnet.split('.').slice(0, 3).join('.');
  const candidates = [DEFAULT_CLIENT_IP.split('.')[3], ...Array.from({ length: 150 }, (_, i) => String(100 + i)), ...Array.from({ length: 99 }, (_, i) => String(1 + i))].map((h) => `${base}.${h}`);
  const clientIP = candidates.find((ip) => !ips.includes(ip));
  return clientIP ? { subnet, clientIP } : `no free client address in ${subnet}`;
}

/** The state with netns nodes and responder guests only (the responder is chosen by the lab when a guest has no command). */
export function containState(state: ClusterState): { state: ClusterState; notes: string[] } {
  const notes: string[] = [];
  const dropped = state.guests.filter((g) => g.boot || g.netns).map((g) => g.name);
  if (dropped.length) notes.push(`boot paths and commands of ${dropped.join(', ')} were not used: every guest is a netns guest running the lab responder`);
  const others = state.nodes.filter((n) => n.hypervisor !== 'netns').map((n) => `${n.name} (${n.hypervisor})`);
  if (others.length) notes.push(`nodes ${others.join(', ')} ran as network namespaces`);
  if (state.cluster.health?.checks?.length || state.nodes.some((n) => n.healthChecks?.length) || state.forwards.some((f) => f.health)) {
    notes.push('declared health checks are not run (they are the nodes\' own); every forward is probed instead');
  }
  return {
    state: {
      ...state,
      nodes: state.nodes.map((n) => ({ ...n, hypervisor: 'netns' })),
      guests: state.guests.map(({ boot: _boot, netns: _netns, ...g }) => g),
    },
    notes,
  };
}

/** Refuse what verify cannot run (with the reason), or the contained state and its lab plan under `prefix`. */
export function containForVerify(state: ClusterState, opts: { prefix: string; brNetfilter: boolean; labDir?: string }): ContainResult {
  const refusals: string[] = [];
  const L = VERIFY_LIMITS;
  if (state.nodes.length > L.nodes) refusals.push(`${state.nodes.length} nodes: verify runs at most ${L.nodes} (each is a namespace with bridges, an agent's apply and probes from a client; more do not fit a CI runner)`);
  if (state.guests.length > L.guests) refusals.push(`${state.guests.length} guests: verify runs at most ${L.guests} (each is a namespace running a responder)`);
  const probes = state.nodes.reduce((sum, n) => sum + state.forwards.filter((f) => entersNode(f, n.name)).length, 0);
  if (probes > L.forwardProbes) refusals.push(`${probes} forward probes (forwards x nodes they enter): verify runs at most ${L.forwardProbes}`);
  const segment = publicSegment(state);
  if (typeof segment === 'string') refusals.push(segment);
  if (refusals.length || typeof segment === 'string') return { ok: false, refusals };
  const { state: contained, notes } = containState(state);
  try {
    const plan = planLab(contained, { prefix: opts.prefix, brNetfilter: opts.brNetfilter, publicSubnet: segment.subnet, clientIP: segment.clientIP, labDir: opts.labDir });
    return { ok: true, contained: { state: contained, plan, notes } };
  } catch (e) {
    // The lab's own names and limits (reserved node names, interface names it uses itself, lengths).
    return { ok: false, refusals: [(e as Error).message] };
  }
}
