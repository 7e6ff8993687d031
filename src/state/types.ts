// The desired state of a cluster, as loaded and validated from a state directory.
// Everything downstream (render, plan, guests, agent) works on these types only.

export type NatMode = 'full-nat' | 'ct-sync' | 'stateless-nat';
export type Protocol = 'tcp' | 'udp';
export type HypervisorDriver = 'qemu' | 'xen' | 'netns';

/** Where an object came from, so every later message can name the file and line. */
export interface SourceRef {
  file: string; // path relative to the state directory, e.g. "nodes/node1.yaml"
  line: number; // 1-based
  column: number; // 1-based
}

export interface ClusterSettings {
  name: string;
  /** Guest subnet in CIDR form, e.g. "10.5.5.0/24". */
  guestSubnet: string;
  /** The shared outbound gateway IP every node carries on its guest bridge. */
  gatewayIP: string;
  /** Dual stack (src/state/ipv6-checks.ts, src/render/ipv6.ts); absent: IPv4 only. */
  ipv6?: ClusterIPv6;
  /**
   * The shared gateway MAC (lower-case colon form): every node answers ARP for gatewayIP with it
   * and takes frames to it as its own (src/render/gateway-mac.ts). Absent: per-node bridge MACs,
   * and the gateway is announced to a guest when it starts (src/guests/announce.ts).
   */
  gatewayMAC?: string;
  nat: {
    mode: NatMode;
    /**
     * full-nat only: SNAT forwarded traffic to the entering node's guest-bridge IP.
     * Default true; false exists as a negative control (cross-node flows must then fail).
     */
    forwardSnat: boolean;
    /** stateless-nat only: tagged port = target port + natTag * portStride (docs/nat-modes.md). Default 10000. */
    portStride?: number;
    /**
     * ct-sync only: conntrackd's sync channel between the nodes' guest-bridge IPs. With two nodes
     * it is unicast UDP; more than two need a multicast group (a conntrackd UDP block has one peer).
     */
    ctSync?: { port?: number; multicastGroup?: string };
  };
  /** Names of the nftables tables cgw-sync owns on every node. Nothing else is ever written. */
  tables: {
    /** `table ip <nat>`: DNAT maps, full-nat SNAT, casual outbound SNAT. */
    nat: string;
    /** `table netdev <arp>`: egress filters on trunk ports that hide the shared gateway IP. */
    arp: string;
    /**
     * `table ip <raw>`: the ct-sync and stateless-nat chains that run before connection tracking
     * (priority raw) and ct-sync's forward filter. Absent on nodes in full-nat. Default cgw_raw.
     */
    raw?: string;
    /**
     * `table bridge <sync>` (ct-sync): conntrackd's sync traffic only between trunks and the node
     * itself, never from or to a guest's port. Absent in the other modes. Default cgw_sync.
     */
    sync?: string;
    /** `table ip6 <nat6>` (dual stack): IPv6 DNAT maps and SNAT. Absent without `ipv6`. Default cgw_nat6. */
    nat6?: string;
    /** `table bridge <gwmac>`: the shared gateway MAC (gatewayMAC). Absent without it. Default cgw_gwmac. */
    gwmac?: string;
    /**
     * `table bridge <migration>`: live-migration streams only between trunks and the node itself,
     * never from or to a guest's port (src/render/migration-guard.ts). Default cgw_migration.
     */
    migration?: string;
  };
  /** Health checks and their checkpoint window (src/health/). Absent: defaults, no declared checks. */
  health?: ClusterHealth;
  /** Waves of a rollout (src/rollout/waves.ts). Absent: one wave. */
  rollout?: { waves: string[][]; soakSeconds: number };
  /** The whole fleet applies nothing (src/rollout/suspend.ts). */
  suspend?: { reason: string };
  /** Change windows (src/rollout/windows.ts). */
  windows?: ChangeWindow[];
  /** `required`: a node's report is believed only when signed by its statusKey (default: when it has one). */
  statusSignatures?: 'optional' | 'required';
  source: SourceRef;
}

import type { ChangeWindow } from '../rollout/windows.js';

/** The IPv6 guest subnet beside the IPv4 one. Addresses as written in the state (canonicalIPv6 for nft). */
export interface ClusterIPv6 {
  /** e.g. "fd05:5:5::/64": global unicast or unique local, no host bits. */
  guestSubnet: string;
  /** The shared gateway's global address every node carries on its guest bridge, e.g. "fd05:5:5::fe". */
  gatewayIP: string;
  /** The shared gateway's link-local address on every guest bridge (fe80::/64). Default fe80::1. */
  gatewayLinkLocal: string;
}

export type ProbeKind = 'tcp' | 'udp' | 'http';

/** How a health check probes (schema/common.schema.json forwardHealthCheck). */
export interface ProbeSettings {
  type: ProbeKind;
  send?: string;
  expect?: string;
  path?: string;
  status?: number;
  timeoutSeconds: number;
}

/** A declared health check with its own address (cluster-wide or per node). */
export interface HealthCheckSpec extends ProbeSettings {
  name: string;
  ip: string;
  port: number;
}

export interface ClusterHealth {
  windowSeconds: number;
  intervalSeconds: number;
  checks: HealthCheckSpec[];
}

export interface NodeSpec {
  name: string;
  uplink: {
    /** Interface carrying the node's public IP (e.g. "xenbr0"). */
    interface: string;
    publicIP: string;
    /** Dual stack: the node's public IPv6 address, where IPv6 forwards enter and guests leave. */
    publicIPv6?: string;
  };
  guestBridge: {
    /** Bridge the guests attach to (e.g. "guestbr0"). Carries nodeIP and the shared gateway IP. */
    interface: string;
    /** This node's own address on the guest subnet (e.g. 10.5.5.251). */
    nodeIP: string;
    /** Dual stack: this node's own address in the IPv6 guest subnet (full-nat's IPv6 SNAT source). */
    nodeIPv6?: string;
    /** The bridge's own pinned MAC (lower-case); required with the cluster's gatewayMAC. */
    mac?: string;
  };
  /** Interfaces that carry the guest VLAN to the other nodes (e.g. "eth1.100"). */
  trunks: string[];
  hypervisor: HypervisorDriver;
  /** stateless-nat: this node's tag, unique in the cluster (1..), see docs/nat-modes.md. */
  natTag?: number;
  /** Health checks of this node only. */
  healthChecks?: HealthCheckSpec[];
  /** This node applies nothing (src/rollout/suspend.ts). */
  suspend?: { reason: string };
  /** Armored OpenPGP public key the node's report commits are signed with (src/state/status-keys.ts). */
  statusKey?: string;
  source: SourceRef;
}

export interface GuestSpec {
  name: string;
  node: string;
  ip: string;
  /** Dual stack: the guest's address in the IPv6 guest subnet; absent: the guest is IPv4 only. */
  ipv6?: string;
  /** Lower-case colon form, e.g. "52:54:00:05:05:c9". */
  mac: string;
  resources: { memoryMiB: number; vcpus: number };
  /** Boot description for qemu/xen guests (the design's KVM command). */
  boot?: {
    disk?: string;
    kernel?: string;
    initrd?: string;
    append?: string;
  };
  /** netns lab guests only: a command run inside the guest namespace (a service). */
  netns?: { command?: string[] };
  /** Restart the guest when its configuration differs from the running one (default: report only). */
  restartOnChange: boolean;
  /** How it moves to another node: stop then start (default), or live migration (qemu to qemu). */
  migration?: GuestMigration;
  source: SourceRef;
}

export type GuestMigration = 'stop-start' | 'live';

export interface ForwardSpec {
  /** Unique name, used in plans and reports. */
  name: string;
  protocol: Protocol;
  /** Public port on the entering node. */
  port: number;
  target: { guest: string; port: number };
  /** Nodes the forward enters on; undefined means every node. */
  nodes?: string[];
  /** Probed on each entering node at its publicIP and `port`. */
  health?: ProbeSettings;
  /**
   * TCP forwards: after an apply that retargets this forward, delete the conntrack entries still
   * DNATed to the old target (default false: open TCP connections finish). UDP forwards are
   * always cleaned (src/conntrack/cleanup.ts).
   */
  conntrackCleanup?: boolean;
  source: SourceRef;
}

export interface ClusterState {
  /** Absolute path of the state directory the state was read from. */
  dir: string;
  cluster: ClusterSettings;
  nodes: NodeSpec[];
  guests: GuestSpec[];
  forwards: ForwardSpec[];
}

/** One problem found in a state directory. */
export interface Diagnostic {
  file: string;
  line: number;
  column: number;
  /** Dotted field path inside the document, e.g. "uplink.interface" or "forwards[2].port". */
  field: string;
  message: string;
}
