// conntrackd.conf for one node in ct-sync, rendered from the state. Pure.
//
// What each part is for (measured with conntrackd 1.4.7 in namespaces, see docs/nat-modes.md):
//   - DisableExternalCache On: states from the other nodes go straight into the kernel table, so a
//     reply leaving through this node matches the entering node's DNAT entry.
//   - Mode FTFW between two nodes (reliable: lost messages are resent). Mode NOTRACK with more
//     nodes (they share a multicast group): FTFW keeps ONE expected sequence number per daemon, not one per sender, so with three
//     or more senders a receiver drops every message whose sender is "behind" the last one it heard
//     as a delayed packet (sync-ftfw.c: SEQ_BEFORE -> MSG_DROP) and the state arrives only with the
//     recovery a second later. NOTRACK digests every message (no recovery: a lost message leaves
//     the flow answered through the entering node, as the early-reply steering does). Its internal
//     cache stays on: messages sent past it (DisableInternalCache) wait in the channel buffer until
//     it fills, while the queue behind the cache flushes at once.
//   - UDP between the nodes' guest-bridge IPs: unicast with exactly two nodes (a UDP block has one
//     destination), a multicast group with more.
//   - Filter From Userspace, Address Accept the guests' IPs: only flows to or from guests are
//     synchronised (forwards; guests' own outbound flows are harmless extras). Filtering "From
//     Kernelspace" by address silently stopped syncing the DNATed flows.
//   - Own LockFile and UNIX socket: several conntrackd may run on one host (one per lab node).
import type { ClusterState, NodeSpec } from '../state/types.js';

export const DEFAULT_SYNC_PORT = 3780;

/** Where one conntrackd keeps its files (host paths; they differ per node in the lab). */
export interface ConntrackdPaths {
  config: string;
  lockFile: string;
  socket: string;
  logFile: string;
  /** cgw-sync's record of the conntrackd it started: PID, start time, configuration hash. */
  record: string;
}

export function renderConntrackdConf(state: ClusterState, node: NodeSpec, paths: ConntrackdPaths): string {
  const { ctSync } = state.cluster.nat;
  const port = ctSync?.port ?? DEFAULT_SYNC_PORT;
  const bridge = node.guestBridge.interface;
  const peers = state.nodes.filter((n) => n.name !== node.name);
  const guests = [...new Set(state.guests.map((g) => g.ip))].sort();

  const channel = ctSync?.multicastGroup
    ? [
        '\tMulticast {',
        `\t\tIPv4_address ${ctSync.multicastGroup}`,
        `\t\tGroup ${port}`,
        `\t\tIPv4_interface ${node.guestBridge.nodeIP}`,
        `\t\tInterface ${bridge}`,
        ...BUFFERS,
        '\t}',
      ]
    : [
        '\tUDP {',
        `\t\tIPv4_address ${node.guestBridge.nodeIP}`,
        // Exactly one peer: validation refuses more than two nodes without multicastGroup, and a
        // single node runs no conntrackd (src/settings/model.ts).
        `\t\tIPv4_Destination_Address ${peers[0]?.guestBridge.nodeIP}`,
        `\t\tPort ${port}`,
        `\t\tInterface ${bridge}`,
        ...BUFFERS,
        '\t}',
      ];
  const lines = [
    `# conntrackd.conf for node ${node.name} of cluster ${state.cluster.name}, rendered by cgw-sync (ct-sync).`,
    '# Do not edit: cgw-sync rewrites this file and restarts conntrackd when the state changes.',
    'Sync {',
    ...syncMode(state.nodes.length > 2),
    ...channel,
    '}',
    'General {',
    '\tHashSize 8192',
    '\tHashLimit 65536',
    '\tSyslog off',
    `\tLogFile ${paths.logFile}`,
    `\tLockFile ${paths.lockFile}`,
    '\tUNIX {',
    `\t\tPath ${paths.socket}`,
    '\t\tBacklog 20',
    '\t}',
    '\tNetlinkBufferSize 2097152',
    '\tNetlinkBufferSizeMaxGrowth 8388608',
    '\tSystemd off',
    '\tFilter From Userspace {',
    '\t\tProtocol Accept {',
    '\t\t\tTCP',
    '\t\t\tUDP',
    '\t\t}',
    // Without guests there is nothing to select by (conntrackd refuses an empty list).
    ...(guests.length ? ['\t\tAddress Accept {', ...guests.map((ip) => `\t\t\tIPv4_address ${ip}`), '\t\t}'] : []),
    '\t}',
    '}',
  ];
  return lines.join('\n') + '\n';
}

/** The sync protocol: FTFW between two nodes, NOTRACK among more senders (see the header). */
function syncMode(manySenders: boolean): string[] {
  return manySenders
    ? ['\tMode NOTRACK {', '\t\tDisableExternalCache On', '\t}']
    : ['\tMode FTFW {', '\t\tDisableExternalCache On', '\t}'];
}

const BUFFERS = ['\t\tSndSocketBuffer 1249280', '\t\tRcvSocketBuffer 1249280', '\t\tChecksum on'];
