// What a guest spec may take from the node it runs on. The state comes from pull requests and
// cgw-sync runs as root, so a guest may only name host files the node's agent config allows
// (guests.imageDirs, guests.allowBlockDevices), and a state's netns.command only runs where the
// config allows state commands (guests.allowCommands; the lab sets it, production must not).
//
// Checked twice: at plan time, so the plan shows the refusal as data, and by each driver right
// before it starts a guest (the files may have changed in between).
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ClusterState, GuestSpec, NodeSpec } from '../state/types.js';

export interface GuestPolicy {
  /** Absolute folders; boot.disk/kernel/initrd must lie inside one of them, symlinks resolved. */
  imageDirs: readonly string[];
  /** Block devices named under an image folder (LVM volumes) are allowed. */
  allowBlockDevices: boolean;
  /** A netns guest's netns.command may run (lab only). */
  allowCommands: boolean;
}

/** The documented default image folder (agent config guests.imageDirs). */
export const DEFAULT_IMAGE_DIR = '/var/lib/cgw-sync/images';

export const DEFAULT_GUEST_POLICY: GuestPolicy = { imageDirs: [DEFAULT_IMAGE_DIR], allowBlockDevices: false, allowCommands: false };

/** The host paths a guest spec names, by field. */
export function guestHostPaths(guest: GuestSpec): Array<{ field: 'disk' | 'kernel' | 'initrd'; path: string }> {
  const boot = guest.boot ?? {};
  return (['disk', 'kernel', 'initrd'] as const).flatMap((field) => (boot[field] === undefined ? [] : [{ field, path: boot[field] as string }]));
}

/** Pure: the form every host path must have (absolute, normalised, no '..', one line). */
export function hostPathSyntaxProblem(p: string): string | undefined {
  if (/[\0\n\r]/.test(p)) return 'contains a NUL or line break';
  if (!p.startsWith('/')) return 'is not an absolute path';
  if (p.split('/').includes('..')) return "contains '..'";
  if (path.posix.normalize(p) !== p || (p.length > 1 && p.endsWith('/'))) return `is not normalised (${path.posix.normalize(p).replace(/(.)\/$/, '$1')})`;
  return undefined;
}

function inside(dir: string, p: string): boolean {
  const d = dir.endsWith('/') ? dir : `${dir}/`;
  return p.startsWith(d) && p.length > d.length;
}

async function resolvedDirs(dirs: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of dirs) out.push(await realpath(d).catch(() => path.resolve(d)));
  return out;
}

/** Why this host path must not be given to a guest (undefined: it may). Reads the file system. */
export async function hostPathProblem(p: string, policy: GuestPolicy): Promise<string | undefined> {
  const syntax = hostPathSyntaxProblem(p);
  if (syntax) return syntax;
  const dirs = policy.imageDirs.map((d) => path.resolve(d));
  const allowed = `allowed image directories: ${dirs.length ? dirs.join(', ') : 'none'} (agent config guests.imageDirs)`;
  if (!dirs.some((d) => inside(d, p))) return `is not under an allowed image directory; ${allowed}`;
  let real: string;
  try {
    real = await realpath(p);
  } catch (e) {
    return `cannot be resolved (${(e as NodeJS.ErrnoException).code ?? 'error'})`;
  }
  const st = await stat(real);
  if (st.isCharacterDevice()) return 'is a character device; guests never get those';
  if (st.isBlockDevice()) {
    if (!policy.allowBlockDevices) return 'is a block device, and this node does not allow them (agent config guests.allowBlockDevices)';
    // Device links such as /dev/vg0/web1 -> /dev/dm-3 point into /dev: that is where device nodes live.
    const realDirs = await resolvedDirs(dirs);
    return realDirs.some((d) => inside(d, real)) || inside('/dev', real) ? undefined : `resolves to ${real}, outside the image directories`;
  }
  if (!st.isFile()) return 'is not a regular file';
  const realDirs = await resolvedDirs(dirs);
  return realDirs.some((d) => inside(d, real)) ? undefined : `resolves to ${real} (through a symlink), outside the allowed image directories; ${allowed}`;
}

/**
 * Pure: values that end up inside qemu option strings, xl config values or `ip` arguments must not
 * carry syntax (a ',' adds a qemu option, a line break an xl setting, a leading '-' an ip option).
 */
function driverValueProblem(guest: GuestSpec, node: NodeSpec): string | undefined {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(guest.mac)) return `mac ${JSON.stringify(guest.mac)} is not a MAC address`;
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(guest.ip)) return `ip ${JSON.stringify(guest.ip)} is not an IPv4 address`;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/.test(node.guestBridge.interface)) return `guest bridge ${JSON.stringify(node.guestBridge.interface)} is not an interface name`;
  const append = guest.boot?.append;
  if (append !== undefined && /["\\]|[^\x20-\x7e]/.test(append)) return 'boot.append holds a quote, backslash or control character';
  return undefined;
}

/**
 * Why this guest must not be started on this node, as one line for plans and reports
 * ("guest web1 refused: disk /dev/sda is not under an allowed image directory; ..."), or undefined.
 */
export async function guestRefusal(guest: GuestSpec, node: NodeSpec, policy: GuestPolicy): Promise<string | undefined> {
  const problems: string[] = [];
  const values = driverValueProblem(guest, node);
  if (values) problems.push(values);
  if (node.hypervisor === 'netns') {
    if (guest.netns?.command?.length && !policy.allowCommands) {
      problems.push('netns.command would run a command from the state as root, and this node does not allow state commands (agent config guests.allowCommands)');
    }
  } else {
    for (const { field, path: p } of guestHostPaths(guest)) {
      const problem = await hostPathProblem(p, policy);
      if (problem) problems.push(`${field} ${JSON.stringify(p)} ${problem}`);
    }
  }
  return problems.length ? `guest ${guest.name} refused: ${problems.join('; ')}` : undefined;
}

/** The refusals of every guest placed on this node, for the planner (reconcile/guests.ts). */
export async function guestRefusals(state: ClusterState, nodeName: string, policy: GuestPolicy): Promise<Map<string, string>> {
  const node = state.nodes.find((n) => n.name === nodeName);
  const out = new Map<string, string>();
  if (!node) return out;
  for (const g of state.guests.filter((x) => x.node === nodeName)) {
    const refusal = await guestRefusal(g, node, policy);
    if (refusal) out.set(g.name, refusal);
  }
  return out;
}

export class GuestRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GuestRefused';
  }
}

/** What a driver asks right before it starts a guest: undefined, or why not. */
export type GuestGuard = (guest: GuestSpec, node: NodeSpec) => Promise<string | undefined>;

export function policyGuard(policy: GuestPolicy = DEFAULT_GUEST_POLICY): GuestGuard {
  return (guest, node) => guestRefusal(guest, node, policy);
}

/** The drivers' last check before a guest starts. */
export async function assertGuestAllowed(guest: GuestSpec, node: NodeSpec, guard: GuestGuard): Promise<void> {
  const refusal = await guard(guest, node);
  if (refusal) throw new GuestRefused(refusal);
}
