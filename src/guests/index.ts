// Picks the guest driver a node's `hypervisor` names.
import { join } from 'node:path';
import type { NodeSpec } from '../state/types.js';
import type { GuestDriver } from './driver.js';
import { NetnsDriver } from './netns.js';
import { QemuDriver, type QemuSettings } from './qemu.js';
import { DEFAULT_RUN_ROOT } from './runtime.js';
import { XenDriver, type XlRunner } from './xen.js';
import { policyGuard, type GuestPolicy } from './policy.js';

export interface DriverOptions {
  /** Parent of the per-driver runtime directories. Default /run/cgw-sync. */
  runRoot?: string;
  /**
   * The node's network namespace when the node is itself a namespace (lab, tests): qemu runs in
   * it, netns guests attach to its bridge. Required for 'netns'.
   */
  nodeNs?: string;
  /** netns guests: namespace name prefix, unique per node. */
  netnsPrefix?: string;
  xl?: XlRunner;
  /** Host paths and commands guests may use (agent config guests.*); default DEFAULT_GUEST_POLICY. */
  policy?: GuestPolicy;
  /** qemu: accelerator, NIC and systemd scope (agent config guests.qemu). */
  qemu?: QemuSettings;
}

/** The qemu driver's runtime folder: one per node namespace, so lab nodes on one host do not see each other's guests. */
export function qemuRunDir(runRoot: string, nodeNs?: string): string {
  return nodeNs ? join(runRoot, 'qemu', nodeNs) : join(runRoot, 'qemu');
}

export function driverFor(node: NodeSpec, opts: DriverOptions = {}): GuestDriver {
  const root = opts.runRoot ?? DEFAULT_RUN_ROOT;
  const guard = policyGuard(opts.policy);
  switch (node.hypervisor) {
    case 'qemu':
      return new QemuDriver({
        runDir: qemuRunDir(root, opts.nodeNs),
        netns: opts.nodeNs,
        guard,
        accel: opts.qemu?.accel,
        nic: opts.qemu?.nic,
        systemd: opts.qemu?.systemd === undefined || opts.qemu.systemd === 'auto' ? 'auto' : opts.qemu.systemd === 'on',
      });
    case 'xen':
      return new XenDriver({ runDir: join(root, 'xen'), xl: opts.xl, guard });
    case 'netns':
      if (!opts.nodeNs) throw new Error(`node ${node.name}: the netns driver needs the node's namespace (nodeNs)`);
      return new NetnsDriver({ nodeNs: opts.nodeNs, prefix: opts.netnsPrefix, runDir: join(root, 'netns', opts.nodeNs), guard });
  }
}

export * from './driver.js';
export * from './policy.js';
export { QemuDriver, type QemuSettings } from './qemu.js';
export { XenDriver } from './xen.js';
export { NetnsDriver } from './netns.js';
