// `migration: live` (guests/<name>.yaml) is only accepted where it can work: cgw-sync live-migrates
// with qemu (the destination started with -incoming, the source migrating over QMP), so the guest's
// node must run the qemu driver. Xen's `xl migrate` and netns lab guests (a namespace has no state
// to move) are refused with the reason. Listed in `checks` in semantic.ts; pure.
import type { Check } from './semantic.js';
import type { HypervisorDriver } from './types.js';

/** Why a node with this hypervisor cannot take part in a live migration; undefined when it can. */
export function liveMigrationProblem(hypervisor: HypervisorDriver): string | undefined {
  switch (hypervisor) {
    case 'qemu':
      return undefined;
    case 'xen':
      return "cgw-sync's xen driver has no live migration (xl migrate is not driven by it)";
    case 'netns':
      return 'a netns guest is a network namespace with processes, not a VM: there is no running state to migrate';
  }
}

export const liveMigrationGuests: Check = (ctx) => {
  const { nodes, guests } = ctx.input;
  for (const guest of guests) {
    if (guest.migration !== 'live') continue;
    const node = nodes.find((n) => n.name === guest.node);
    const problem = node && liveMigrationProblem(node.hypervisor);
    if (problem) {
      ctx.report(guest, ['migration'], `live migration needs a qemu node, and node ${node.name} (${ctx.where(node, ['hypervisor'])}) is ${node.hypervisor}: ${problem}; use migration: stop-start`);
    }
  }
};
