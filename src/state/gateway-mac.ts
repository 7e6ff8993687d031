// Checks of the shared gateway MAC (cluster.yaml gatewayMAC) and the nodes' bridge MACs
// (guestBridge.mac). Listed in `checks` in semantic.ts; pure. The state is untrusted input: a
// gatewayMAC that is multicast, all zeros, or some guest's or node's MAC would make every node
// take that station's frames as its own (or flood them), so it is refused, not warned about.
import type { Check } from './semantic.js';

/** The group bit (lowest bit of the first octet): set on multicast and broadcast MACs. */
export function isMulticastMac(mac: string): boolean {
  return (parseInt(mac.slice(0, 2), 16) & 1) === 1;
}

/** The locally administered bit (second-lowest of the first octet): never a vendor's address. */
export function isLocallyAdministered(mac: string): boolean {
  return (parseInt(mac.slice(0, 2), 16) & 2) === 2;
}

const ZERO_MAC = '00:00:00:00:00:00';

/** Why a MAC cannot be a station's address (undefined: it can). */
export function stationMacProblem(mac: string): string | undefined {
  if (isMulticastMac(mac)) return `${mac} is a multicast address (odd first octet); it must be a unicast MAC`;
  if (mac === ZERO_MAC) return `${mac} is not a usable address`;
  return undefined;
}

/** Node bridge MACs are stations; the shared MAC is a station no guest or node is (uniqueness among those: semantic.ts). */
export const gatewayMacSettings: Check = (ctx) => {
  const { cluster, nodes, guests } = ctx.input;
  for (const n of nodes) {
    const mac = n.guestBridge.mac;
    const problem = mac && stationMacProblem(mac);
    if (problem) ctx.report(n, ['guestBridge', 'mac'], problem);
  }
  const shared = cluster?.gatewayMAC;
  if (!cluster || shared === undefined) return;
  const problem = stationMacProblem(shared);
  if (problem) ctx.report(cluster, ['gatewayMAC'], `${problem}: every node answers ARP for ${cluster.gatewayIP} with it`);
  const node = nodes.find((n) => n.guestBridge.mac === shared);
  const guest = guests.find((g) => g.mac === shared);
  const taken = node ? `guestBridge.mac of node "${node.name}" (${ctx.where(node, ['guestBridge', 'mac'])})` : guest && `mac of guest "${guest.name}" (${ctx.where(guest, ['mac'])})`;
  if (taken) ctx.report(cluster, ['gatewayMAC'], `${shared} is already used as ${taken}; the shared gateway MAC must belong to no guest and no node`);
  for (const n of nodes) {
    if (n.guestBridge.mac === undefined) {
      ctx.report(n, ['guestBridge', 'mac'], `missing: the cluster has a shared gatewayMAC (${ctx.where(cluster, ['gatewayMAC'])}), so every node needs its guest bridge's pinned MAC here (frames to the shared MAC are rewritten to it)`);
    }
  }
};
