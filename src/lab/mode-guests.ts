// The lab's guests configured for the cluster's NAT mode, the way docs/nat-modes.md tells a
// guest's administrator to: in stateless-nat each guest loads the snippet `cgw-sync render
// --guest <name>` prints (an nft redirect from its tagged ports); in the other modes that table is
// removed again. Idempotent, so `lab up` and `lab check` can run it after every mode change.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterState } from '../state/types.js';
import { runIn } from '../netns/netns.js';
import { GUEST_TABLE, guestSnippet } from '../render/stateless.js';
import type { LabPlan } from './plan.js';
import { serialExec, writeFileScript } from './guest-exec.js';

/** A VM's serial shell is slow under TCG: generous. */
const VM_NFT_TIMEOUT_MS = 30_000;

export async function configureLabGuests(state: ClusterState, plan: LabPlan): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-lab-guest-'));
  try {
    for (const g of plan.guests) {
      const spec = state.guests.find((s) => s.name === g.name);
      if (!spec) continue;
      const file = join(dir, `${g.name}.nft`);
      // `nft -f -` cannot read Node's stdin (FACTS): a file. Not stateless: an empty replace, then delete.
      const text = state.cluster.nat.mode === 'stateless-nat' ? guestSnippet(state, spec) : `table ip ${GUEST_TABLE}\ndelete table ip ${GUEST_TABLE}\n`;
      if (g.vm) {
        // Inside the VM: the same file, loaded by the nft the lab image carries.
        const r = await serialExec(g.vm.serial, `${writeFileScript('/tmp/cgw-guest.nft', text)} && nft -f /tmp/cgw-guest.nft`, VM_NFT_TIMEOUT_MS);
        if (r.exitCode !== 0) throw new Error(`loading the guest snippet in VM ${g.name} failed (exit ${r.exitCode}): ${r.output.trim()}`);
        continue;
      }
      await writeFile(file, text);
      await runIn(g.ns, 'nft', ['-f', file]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
