// A node resolved once from the cluster state: its spec, the forwards that enter it, the guests
// placed on it, every guest's address, and its settings. Rendering, settings, planning and the
// lab read this view instead of searching the state again. Pure.
import type { ClusterState, ForwardSpec, GuestSpec, NodeSpec } from '../state/types.js';
import type { ConntrackdPaths } from '../settings/conntrackd.js';
import { conntrackdPaths, DEFAULT_STATE_DIR, renderSettings, settingsDir, type NodeSettings } from '../settings/model.js';

export interface NodeView {
  state: ClusterState;
  node: NodeSpec;
  /** The forwards that enter on this node (all of them unless a forward names its nodes). */
  forwards: ForwardSpec[];
  /** The guests the state places on this node. */
  guests: GuestSpec[];
  /** Every guest's IP by name, cluster-wide: a forward may target a guest on another node. */
  guestIP: ReadonlyMap<string, string>;
  /** Sysctls and conntrackd this node needs. */
  settings: NodeSettings;
  /** Where cgw-sync's conntrackd keeps its files: under the node's state dir (also to stop it). */
  conntrackdPaths: ConntrackdPaths;
}

/** Whether a forward enters on the named node. */
export function entersNode(f: ForwardSpec, node: string): boolean {
  return f.nodes === undefined || f.nodes.includes(node);
}

export function guestIPs(state: ClusterState): Map<string, string> {
  return new Map(state.guests.map((g) => [g.name, g.ip]));
}

export function findNode(state: ClusterState, nodeName: string): NodeSpec {
  const node = state.nodes.find((n) => n.name === nodeName);
  if (!node) {
    const known = state.nodes.map((n) => n.name).join(', ');
    throw new Error(`node "${nodeName}" is not in the state (known nodes: ${known}); use --node`);
  }
  return node;
}

/**
 * The forwards that enter the node, in order: the state's own list when none names its nodes (the
 * usual case: 50,000 forwards are then not copied for every new revision). Neither is ever mutated.
 */
export function forwardsEntering(forwards: ForwardSpec[], node: string): ForwardSpec[] {
  for (const f of forwards) if (f.nodes !== undefined) return forwards.filter((g) => entersNode(g, node));
  return forwards;
}

/** Resolve a node once. Throws (naming the known nodes) when the state has no such node. */
export function resolveNode(state: ClusterState, nodeName: string, stateDir = DEFAULT_STATE_DIR): NodeView {
  const node = findNode(state, nodeName);
  const guestIP = guestIPs(state);
  const partial = { state, node, guestIP, forwards: forwardsEntering(state.forwards, node.name), guests: state.guests.filter((g) => g.node === node.name) };
  const paths = conntrackdPaths(settingsDir(stateDir));
  return { ...partial, settings: renderSettings(partial, paths), conntrackdPaths: paths };
}
