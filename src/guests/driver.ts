// The guest driver interface: how cgw-sync starts, stops and lists guests on one node, whatever
// the hypervisor (qemu/KVM, Xen `xl`, or a network namespace in the lab).
//
// The reconciler compares `desiredFingerprint(guest, node)` with `RunningGuest.fingerprint` to tell
// "this guest runs with the configuration we want" from "it runs, but with another configuration".
import { createHash } from 'node:crypto';
import type { ClusterSettings, GuestSpec, HypervisorDriver, NodeSpec } from '../state/types.js';

export type GuestState = 'running' | 'paused' | 'shutdown' | 'crashed' | 'unknown';
export type StopResult = 'clean' | 'forced';

export interface RunningGuest {
  name: string;
  /** MAC address of the guest's NIC, when it can be seen. */
  mac?: string;
  /**
   * Fingerprint of the configuration the guest runs with. Undefined when it is not known: a qemu
   * or netns guest not started by cgw-sync (nobody recorded what it was started with). Xen keeps
   * every domain's configuration, so there it is computed from the live config, even by hand.
   */
  fingerprint?: string;
  state: GuestState;
  /** Host process of the guest (qemu process, netns guest command) when there is one. */
  pid?: number;
  /** True when cgw-sync started this guest; false for one started by hand or left by someone else. */
  managed: boolean;
  /** A live-migration destination still waiting for the guest's state (qemu 'inmigrate'). */
  incoming?: IncomingListen;
}

/** Where a live migration goes: the destination qemu listens there (-incoming). */
export interface MigrationTarget {
  host: string;
  port: number;
}

/** A destination's listener as the node started it: the target, for which attempt and revision. */
export interface IncomingListen extends MigrationTarget {
  /** The source's failed attempts when it was started (a source migrates only to the listener of its next attempt). */
  attempt: number;
  /** The revision that placed the guest here. */
  revision: string;
}

export interface MigrationResult {
  /** qemu's own figures from query-migrate: the whole migration and the pause at its end. */
  totalMs: number;
  downtimeMs: number;
}

/** A driver that can live-migrate its guests (qemu). */
export interface LiveMigrator {
  /** Start the guest as a destination waiting on `listen` for the running guest's state. */
  startIncoming(guest: GuestSpec, ctx: StartContext, listen: IncomingListen): Promise<void>;
  /** Migrate a running guest to a waiting destination; on failure it still runs here (MigrationFailed). */
  migrateOut(name: string, to: MigrationTarget, opts: { timeoutMs: number }): Promise<MigrationResult>;
  /** Stop a destination that still waits; false (and nothing done) when it no longer waits: it runs the guest. */
  stopIncoming(name: string): Promise<boolean>;
}

export function canMigrateLive(driver: GuestDriver): driver is GuestDriver & LiveMigrator {
  const d = driver as Partial<LiveMigrator>;
  return typeof d.startIncoming === 'function' && typeof d.migrateOut === 'function' && typeof d.stopIncoming === 'function';
}

/** What a driver needs besides the guest itself. */
export interface StartContext {
  node: NodeSpec;
  /** Only the netns driver uses these (the guest's prefix length and default route). */
  cluster: Pick<ClusterSettings, 'guestSubnet' | 'gatewayIP' | 'ipv6'>;
}

export interface GuestDriver {
  readonly kind: HypervisorDriver;
  /** Guests present on this node (running or not, as long as the hypervisor still knows them). */
  list(): Promise<RunningGuest[]>;
  /**
   * Start a guest. Starting a guest that already runs with the same fingerprint is a no-op; one
   * of ours that shut down or crashed is cleared away and started again; one that runs with
   * another configuration, or that cgw-sync did not start, is refused with an error.
   */
  start(guest: GuestSpec, ctx: StartContext): Promise<void>;
  /** Ask the guest to shut down; force it off after timeoutMs. Stopping an absent guest is 'clean'. */
  stop(name: string, opts: { timeoutMs: number }): Promise<StopResult>;
}

/**
 * The parts of a guest's configuration the hypervisor applies when it starts the guest.
 * Only these go into the fingerprint, so e.g. a qemu guest's IP (configured inside the guest)
 * changing does not make the running guest look outdated.
 */
export interface AppliedConfig {
  driver: HypervisorDriver;
  name: string;
  mac: string;
  bridge: string;
  memoryMiB?: number;
  vcpus?: number;
  disk?: string;
  kernel?: string;
  initrd?: string;
  append?: string;
  ip?: string;
  command?: string[];
}

export function appliedConfig(guest: GuestSpec, node: NodeSpec): AppliedConfig {
  const base = { driver: node.hypervisor, name: guest.name, mac: guest.mac.toLowerCase(), bridge: node.guestBridge.interface };
  if (node.hypervisor === 'netns') {
    return { ...base, ip: guest.ip, command: guest.netns?.command };
  }
  const boot = guest.boot ?? {};
  return {
    ...base,
    memoryMiB: guest.resources.memoryMiB,
    vcpus: guest.resources.vcpus,
    disk: boot.disk,
    kernel: boot.kernel,
    initrd: boot.initrd,
    append: boot.append,
  };
}

/** Short stable hash of an AppliedConfig: absent, undefined and empty values are treated alike. */
export function fingerprint(config: AppliedConfig): string {
  const entries = Object.entries(config)
    .filter(([, v]) => v !== undefined && v !== '' && !(Array.isArray(v) && v.length === 0))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const canonical = JSON.stringify(entries);
  return 'sha256:' + createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}

/** Pure: the fingerprint a guest would have if started now from this desired state. */
export function desiredFingerprint(guest: GuestSpec, node: NodeSpec): string {
  return fingerprint(appliedConfig(guest, node));
}

/**
 * Guest names end up in file names, process arguments (`-name`, xl config) and namespace names:
 * allow only a conservative character set so none of them needs quoting.
 */
export function assertSafeGuestName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name)) {
    throw new Error(`guest name ${JSON.stringify(name)} is not usable: letters, digits, '_', '.', '-' only, at most 63`);
  }
}

/**
 * Common first step of every driver's start(). Returns true when the guest already runs with the
 * wanted fingerprint (start is then a no-op). A managed guest that has shut down or crashed is
 * cleared away (stop) so it can be started afresh; anything else present under that name is refused.
 */
export async function prepareStart(driver: GuestDriver, name: string, wanted: string): Promise<boolean> {
  const existing = (await driver.list()).find((g) => g.name === name);
  if (!existing) return false;
  if (!existing.managed) {
    throw new Error(`guest ${name} is already present but was not started by cgw-sync; refusing to start another`);
  }
  if (existing.state === 'shutdown' || existing.state === 'crashed') {
    await driver.stop(name, { timeoutMs: 0 });
    return false;
  }
  if (existing.fingerprint !== wanted) {
    throw new Error(`guest ${name} already runs with another configuration (${existing.fingerprint} != ${wanted}); stop it first`);
  }
  return true;
}
