// Stale connections after a forward changes. conntrack keeps DNATing an existing flow to the old
// target for as long as its packets keep the entry alive, so a UDP client that sends every few
// seconds from one port never reaches a retargeted forward's new guest (kube-proxy met the same:
// kubernetes #19029; its reconciler deletes only the stale UDP entries, since deleting more broke
// QUIC and graceful TCP shutdown). After the nft transaction the applier deletes exactly the
// entries whose original destination is the forward's public IP:port and whose reply source is the
// OLD target: UDP always, TCP only for forwards with `conntrackCleanup: true`. Planning is pure and
// reads only the nft plan (the live and desired forward maps); the deletion is filtered in the
// kernel by the `conntrack` tool (src/conntrack/cli.ts).
import type { Protocol } from '../state/types.js';
import { elementKey, jsonEqual, tableId, type Json, type MapElement, type NftTable } from '../nft/model.js';
import type { NftPlanned } from '../reconcile/nft.js';
import { knownPortOrdered } from '../nft/lineage.js';
import type { NodeView } from '../render/node-view.js';
import { forwardMapName, PROTOCOLS } from '../render/render.js';

export interface Endpoint {
  ip: string;
  port: number;
}

/** One public port whose DNAT target was removed or changed: its entries to `from` are stale. */
export interface StaleForward {
  protocol: Protocol;
  /** The forward's name in the desired state; absent when the forward was removed. */
  forward?: string;
  /** The original destination of the stale entries (this node's public IP and the public port). */
  publicIP: string;
  port: number;
  /** The target the live map still names: the reply source of the stale entries. */
  from: Endpoint;
  /** The desired target; absent when the forward no longer enters this node. */
  to?: Endpoint;
}

/** What the applier deleted for one stale forward. */
export interface CleanupOutcome extends StaleForward {
  deleted: number;
}

/** `ip . port` as a forward map stores it. */
function endpoint(value: Json): Endpoint | undefined {
  const parts = (value as { concat?: Json[] }).concat;
  if (!Array.isArray(parts) || typeof parts[0] !== 'string' || typeof parts[1] !== 'number') return undefined;
  return { ip: parts[0], port: parts[1] };
}

function mapElements(table: NftTable | undefined, name: string): MapElement[] {
  return table?.maps.find((m) => m.name === name)?.elements ?? [];
}

/**
 * The public ports whose conntrack entries the apply of this nft plan makes stale: live forward map
 * elements that the desired tables drop or point elsewhere, whatever the depth of the change
 * (element update, table replaced, table deleted by a mode switch). TCP only where the desired
 * forward asks for it; a removed TCP forward's connections are left to finish (its option left
 * with it). Pure. `nft.plan` is planNft(nft.desired, nft.live): when it updates the nat table's
 * elements, only the live elements it removes are looked at (the same answer as
 * planConntrackCleanupFull, without a key string per element of a 50,000-element map).
 */
export function planConntrackCleanup(view: NodeView, nft: NftPlanned): StaleForward[] {
  const id = tableId({ family: 'ip', name: view.state.cluster.tables.nat });
  const changes = nft.plan.changes.filter((c) => tableId(c.table) === id);
  // A stale entry needs a live element the plan changes: nothing planned for the table, nothing stale.
  if (changes.length === 0) return [];
  const live = nft.live.tables.find((t) => tableId(t) === id);
  const update = changes.length === 1 && changes[0]!.action === 'update' && changes[0]!.live === live ? changes[0]! : undefined;
  if (!update) return planConntrackCleanupFull(view, nft);
  return PROTOCOLS.flatMap((protocol) => {
    const change = update.maps.find((m) => m.map === forwardMapName(protocol));
    if (!change) return [];
    // Every live element the diff did not remove has its key desired with an equal value: never stale.
    const elements = mapElements(live, forwardMapName(protocol));
    // The removed ones in live order: by port where the live map is known port-ordered, else by a pass over it.
    const removed = new Set(change.remove);
    const candidates = knownPortOrdered(elements) ? [...change.remove].sort((a, b) => (a.key as number) - (b.key as number)) : elements.filter((e) => removed.has(e));
    return staleElements(view, protocol, candidates, change.add);
  });
}

/** planConntrackCleanup from the whole maps: every live element against the desired one of its key. */
export function planConntrackCleanupFull(view: NodeView, nft: NftPlanned): StaleForward[] {
  const id = tableId({ family: 'ip', name: view.state.cluster.tables.nat });
  if (!nft.plan.changes.some((c) => tableId(c.table) === id)) return [];
  const live = nft.live.tables.find((t) => tableId(t) === id);
  const desired = nft.desired.tables.find((t) => tableId(t) === id);
  return PROTOCOLS.flatMap((protocol) => staleElements(view, protocol, mapElements(live, forwardMapName(protocol)), mapElements(desired, forwardMapName(protocol))));
}

/** Of the live elements `olds`, the stale ones: dropped from `desired` (by key) or pointing elsewhere there. */
function staleElements(view: NodeView, protocol: Protocol, olds: MapElement[], desired: MapElement[]): StaleForward[] {
  const want = new Map(desired.map((e) => [elementKey(e), e]));
  return olds.flatMap((old): StaleForward[] => {
    const now = want.get(elementKey(old));
    const from = endpoint(old.value);
    if (typeof old.key !== 'number' || !from || (now && jsonEqual(now.value, old.value))) return [];
    const forward = view.forwards.find((f) => f.protocol === protocol && f.port === old.key);
    if (protocol === 'tcp' && !forward?.conntrackCleanup) return [];
    const to = now && endpoint(now.value);
    return [{ protocol, ...(forward && { forward: forward.name }), publicIP: view.node.uplink.publicIP, port: old.key, from, ...(to && { to }) }];
  });
}

/** `conntrack -D` arguments that select exactly the stale entries of one forward (kernel-side filters). */
export function cleanupArgs(s: StaleForward): string[] {
  return ['-D', '-p', s.protocol, '--orig-dst', s.publicIP, '--orig-port-dst', String(s.port), '--reply-src', s.from.ip, '--reply-port-src', String(s.from.port)];
}

export function describeStale(s: StaleForward): string {
  const name = s.forward ? `forward ${s.forward}` : 'removed forward';
  const to = s.to ? `${s.to.ip}:${s.to.port}` : 'nothing';
  return `${name} (${s.protocol} ${s.publicIP}:${s.port}): entries to ${s.from.ip}:${s.from.port} (now ${to})`;
}

/** Human plan lines. */
export function formatCleanupPlanText(stale: StaleForward[]): string {
  if (stale.length === 0) return '';
  return ['conntrack: stale entries deleted after the transaction:', ...stale.map((s) => `  - ${describeStale(s)}`)].join('\n') + '\n';
}

/** Report lines: what was deleted, per forward. */
export function formatCleanupOutcomes(outcomes: CleanupOutcome[]): string[] {
  return outcomes.map((o) => `conntrack: ${describeStale(o)}: ${o.deleted} deleted`);
}
