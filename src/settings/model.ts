// Node settings: what a NAT mode needs on a node besides its nftables tables, i.e. sysctls and
// (ct-sync) conntrackd. Rendered from the state like the ruleset (pure), read live at the edge
// (src/settings/host.ts), planned as a pure function of both (src/settings/plan.ts).
import type { ClusterState, NodeSpec } from '../state/types.js';
import type { NodeView } from '../render/node-view.js';
import { renderConntrackdConf, type ConntrackdPaths } from './conntrackd.js';

export interface NodeSettings {
  /** Full sysctl key -> value, e.g. "net.ipv4.ip_forward" -> "1". Per-netns keys are read in the node's namespace. */
  sysctls: Record<string, string>;
  /**
   * Keys another mode sets, put back to the kernel default in this one, where they exist (a
   * missing interface or an unloaded conntrack module has nothing to put back).
   */
  resets: Record<string, string>;
  /** Present when conntrackd must run on the node with this configuration; absent: must not run (ours). */
  conntrackd?: { paths: ConntrackdPaths; config: string };
}

/**
 * The sysctls cgw-sync sets, per mode. A key one mode sets is reset to the kernel default in the
 * others (where it exists), so switching modes puts it back.
 *   - ip_forward: every gateway routes.
 *   - accept_local on the guest bridge (stateless-nat): a reply to a forward that entered this
 *     node leaves with this node's own public IP as source, rewritten before routing; without it
 *     the kernel drops it as a martian ("source is a local address").
 *   - rp_filter on the guest bridge (stateless-nat only, not reset): the rewritten reply has
 *     another node's public IP as source, whose route is via the uplink; strict mode (1) would
 *     drop it, loose (2) accepts it.
 *   - nf_conntrack_tcp_be_liberal (ct-sync): the entering node sees only the client's half of a
 *     flow until conntrackd brings the other half; liberal window tracking keeps its packets valid.
 */
export function renderSysctls(state: ClusterState, node: NodeSpec): Pick<NodeSettings, 'sysctls' | 'resets'> {
  const mode = state.cluster.nat.mode;
  const bridge = node.guestBridge.interface;
  const acceptLocal = `net.ipv4.conf.${bridge}.accept_local`;
  const liberal = 'net.netfilter.nf_conntrack_tcp_be_liberal';
  const sysctls: Record<string, string> = { 'net.ipv4.ip_forward': '1' };
  const resets: Record<string, string> = {};
  if (mode === 'stateless-nat') Object.assign(sysctls, { [acceptLocal]: '1', [`net.ipv4.conf.${bridge}.rp_filter`]: '2' });
  else resets[acceptLocal] = '0';
  if (mode === 'ct-sync') sysctls[liberal] = '1';
  else resets[liberal] = '0';
  return { sysctls, resets };
}

/** The agent's default state directory; node settings files live in <stateDir>/conntrackd. */
export const DEFAULT_STATE_DIR = '/var/lib/cgw-sync';

export function settingsDir(stateDir: string): string {
  return `${stateDir}/conntrackd`;
}

/** conntrackd's files under one directory (the agent's state directory; one per lab node). */
export function conntrackdPaths(dir: string): ConntrackdPaths {
  return {
    config: `${dir}/conntrackd.conf`,
    lockFile: `${dir}/conntrackd.lock`,
    socket: `${dir}/conntrackd.ctl`,
    logFile: `${dir}/conntrackd.log`,
    record: `${dir}/conntrackd.json`,
  };
}

export function renderSettings({ state, node }: Pick<NodeView, 'state' | 'node'>, paths: ConntrackdPaths): NodeSettings {
  const settings: NodeSettings = renderSysctls(state, node);
  // A single node has no one to synchronise with: every reply already leaves where its state is.
  if (state.cluster.nat.mode === 'ct-sync' && state.nodes.length > 1) settings.conntrackd = { paths, config: renderConntrackdConf(state, node, paths) };
  return settings;
}
