// A node namespace with what the health checks look at: the guest bridge carrying the node IP,
// the shared gateway IP and (standing in for guests on the bridge) guest addresses, with the lab
// responder serving them (HTTP :80, banner :22, UDP echo :123) inside the namespace. Built on
// nft-netns.ts; the responder is stopped by its PID.
import { spawn, type ChildProcess } from 'node:child_process';
import { addAddress, addBridge, linkUp } from '../../src/netns/netns.js';
import { responderCommand } from '../../src/lab/responder.js';
import { commandProber } from '../../src/health/runner.js';
import { waitUntil } from '../../src/proc/process.js';
import type { NftNamespace } from './nft-netns.js';

export interface ServedNode {
  prober: ReturnType<typeof commandProber>;
  stop(): Promise<void>;
}

/** Give `ns` a guestbr0 with these addresses (/24) and serve `guest`'s services on them. */
export async function serveGuestsIn(ns: NftNamespace, addresses: string[], guest = 'guest1'): Promise<ServedNode> {
  await addBridge(ns.ns, 'guestbr0');
  for (const a of addresses) await addAddress(ns.ns, 'guestbr0', `${a}/24`);
  await linkUp(ns.ns, 'lo');
  const [cmd, ...args] = responderCommand(guest);
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ns.ns, cmd!, ...args], { stdio: 'ignore' });
  const prober = commandProber(['ip', 'netns', 'exec', ns.ns]);
  const up = await waitUntil(async () => (await prober({ type: 'tcp', ip: addresses[0]!, port: 22, timeoutSeconds: 1 })).ok, 10_000, 200);
  const stop = async () => {
    if (child.exitCode === null && child.pid) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
  };
  if (!up) {
    await stop();
    throw new Error(`the responder in ${ns.ns} did not come up`);
  }
  return { prober, stop };
}

/** The check window of checkedState (seconds). */
export const WINDOW_S = 3;
const GUEST1_TARGET = 'target: { guest: guest1, port: 22 }';

/** state-example with a check window and a health check on the forward ssh-guest1, aimed at `port`; `cluster` is appended to cluster.yaml. */
export function checkedState(files: Record<string, string>, port = 22, cluster = ''): Record<string, string> {
  const ssh = files['forwards/ssh.yaml']!.replace(GUEST1_TARGET, `target: { guest: guest1, port: ${port} }\n    health: { type: tcp, expect: "this is guest1" }`);
  return { ...files, 'cluster.yaml': `${files['cluster.yaml']}health:\n  windowSeconds: ${WINDOW_S}\n${cluster}`, 'forwards/ssh.yaml': ssh };
}
