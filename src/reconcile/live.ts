// The one edge step before planning: read what a node runs now. Everything planNode needs from
// the node comes through here (nft tables, sysctls and conntrackd, the guest driver's list).
import type { NftBackend } from '../nft/backend.js';
import type { TableRef } from '../nft/transaction.js';
import type { GuestDriver } from '../guests/driver.js';
import { DEFAULT_GUEST_POLICY, guestRefusals, type GuestPolicy } from '../guests/policy.js';
import type { NodeView } from '../render/node-view.js';
import { ownedTables } from '../render/render.js';
import type { SettingsPort } from '../settings/reconcile.js';
import type { NodeLive } from '../plan/plan.js';

export interface LiveReaders {
  nft: NftBackend;
  settings: SettingsPort;
  /** The node's guest driver; a string says why guests are not planned. */
  guests: GuestDriver | string;
  /** Host paths and commands this node lets guests use (agent config guests.*). */
  guestPolicy?: GuestPolicy;
  /** The tables to list (planNode must plan the same); default the state's owned tables. */
  owned?: TableRef[];
}

export async function readLiveNode(view: NodeView, r: LiveReaders): Promise<NodeLive> {
  const [nft, baseChains, settings, guests] = await Promise.all([
    r.nft.list(r.owned ?? ownedTables(view.state)),
    r.nft.listBaseChains(),
    r.settings.readLive(view.settings, view.conntrackdPaths),
    typeof r.guests === 'string' ? { note: r.guests } : r.guests.list().catch((e: Error) => ({ note: `the ${view.node.hypervisor} driver could not list guests: ${e.message}` })),
  ]);
  // Guests the node's policy refuses (their host paths are checked on this node's disk).
  const refusals = Array.isArray(guests) ? await guestRefusals(view.state, view.node.name, r.guestPolicy ?? DEFAULT_GUEST_POLICY) : new Map<string, string>();
  return { nft, baseChains, settings, guests, ...(refusals.size > 0 && { guestRefusals: Object.fromEntries(refusals) }) };
}
