// Checks of settings a NAT mode cannot honour (docs/nat-modes.md). Listed in `checks` in
// semantic.ts like every other cross-document check; pure.
import { ipv4ToNumber } from './ipv4.js';
import type { Check } from './semantic.js';

/** stateless-nat defaults, shared with the renderer (src/render/stateless.ts re-exports it). */
export const DEFAULT_PORT_STRIDE = 10000;
const MAX_PORT = 65535;

/** Every node needs a unique natTag; every tagged port must fit; every reply must map back to one forward. */
export const statelessNatSettings: Check = (ctx) => {
  const { cluster, nodes, forwards } = ctx.input;
  if (cluster?.nat.mode !== 'stateless-nat') return;
  const stride = cluster.nat.portStride ?? DEFAULT_PORT_STRIDE;
  const tagged = nodes.filter((n) => n.natTag !== undefined);
  for (const n of nodes) {
    if (n.natTag === undefined) {
      ctx.report(n, ['natTag'], `missing: nat.mode is stateless-nat (${ctx.where(cluster, ['nat', 'mode'])}), so every node needs a unique natTag (an integer from 1)`);
    }
  }
  const firstByTag = new Map<number, (typeof nodes)[number]>();
  for (const n of tagged) {
    const first = firstByTag.get(n.natTag as number);
    if (first) ctx.report(n, ['natTag'], `natTag ${n.natTag} is already used by node "${first.name}" (${ctx.where(first, ['natTag'])}); each node needs its own`);
    else firstByTag.set(n.natTag as number, n);
  }

  const allNodes = nodes.map((n) => n.name);
  const replies = new Map<string, { forward: (typeof forwards)[number]; port: number }>();
  for (const f of forwards) {
    if (f.target.port >= stride) {
      ctx.report(f, ['target', 'port'], `${f.target.port} must be below nat.portStride ${stride} in stateless-nat: the port towards the guest carries the entering node's tag as port + natTag * ${stride}`);
      continue;
    }
    for (const name of f.nodes ?? allNodes) {
      const n = tagged.find((x) => x.name === name);
      if (!n) continue;
      const port = f.target.port + (n.natTag as number) * stride;
      if (port > MAX_PORT) {
        ctx.report(f, ['target', 'port'], `entering node "${n.name}" (natTag ${n.natTag}) would reach the guest on port ${f.target.port} + ${n.natTag} * ${stride} = ${port} > ${MAX_PORT}; use a smaller natTag or nat.portStride`);
        continue;
      }
      // The reply from (guest, tagged port) must name exactly one public port of this node.
      const key = `${f.protocol} ${f.target.guest} ${port}`;
      const first = replies.get(key);
      if (first && first.forward.port !== f.port) {
        ctx.report(f, ['port'], `in stateless-nat a guest port can be forwarded only once per node: ${f.protocol} ${f.target.guest}:${f.target.port} entering "${n.name}" is already forward "${first.forward.name}" (${ctx.where(first.forward, ['port'])}), so replies could not tell the two apart`);
      } else if (!first) replies.set(key, { forward: f, port: f.port });
    }
  }
};

/** ct-sync: a conntrackd UDP channel has one peer, so more than two nodes need a multicast group. */
export const ctSyncSettings: Check = (ctx) => {
  const { cluster, nodes } = ctx.input;
  if (cluster?.nat.mode !== 'ct-sync') return;
  const group = cluster.nat.ctSync?.multicastGroup;
  if (group !== undefined) {
    const first = ipv4ToNumber(group) >>> 28;
    if (first !== 0xe) ctx.report(cluster, ['nat', 'ctSync', 'multicastGroup'], `${group} is not a multicast address (224.0.0.0/4)`);
  } else if (nodes.length > 2) {
    ctx.report(cluster, ['nat', 'mode'], `ct-sync with ${nodes.length} nodes needs nat.ctSync.multicastGroup (e.g. 225.0.0.50): conntrackd's unicast UDP channel has exactly one peer`);
  }
};
