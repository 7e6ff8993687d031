// Announcing the shared gateway to a guest that has just started (or arrived) on this node.
//
// Without a shared gateway MAC (cluster.yaml gatewayMAC) every node answers for the gateway IP
// with its own bridge MAC. A guest that moved here (a live migration keeps its neighbour table)
// would still send to the old node's MAC, across the trunk, until its entry expires. A gratuitous
// ARP from the gateway IP, sent by this node onto its guest bridge right after the guest starts,
// overrides that entry at once (Linux takes a gratuitous ARP as an override of an existing entry).
// Dual stack: an unsolicited neighbour advertisement (override flag, target link-layer address)
// for each of the gateway's IPv6 addresses does the same for the guest's IPv6 entries (RFC 4861
// 7.2.6). Neither crosses a trunk: the netdev table drops ARP and NDP for the gateway there
// (render.ts, render/ipv6.ts). With a shared gateway MAC there is nothing to announce: the
// guest's entries are valid everywhere.
//
// The applier calls this after its guest starts, or arrives by live migration
// (src/reconcile/apply.ts). The programs are Debian's `arping` (package arping) and
// `ndptool` (package libndp-tools), run in the node's namespace through the node's command
// prefix, like nft.
import type { ClusterState, GuestSpec } from '../state/types.js';
import type { NodeView } from '../render/node-view.js';
import { runUnchecked } from '../netns/netns.js';
import { gatewayIPv6Addresses } from '../render/ipv6.js';

export type GatewayFamily = 'ipv4' | 'ipv6';

/** One address of the shared gateway, as a guest's neighbour table holds it. */
export interface GatewayAddress {
  family: GatewayFamily;
  ip: string;
}

/** The gateway addresses a guest keeps neighbour entries for: the IPv4 one, and in dual stack the global and link-local IPv6 ones. */
export function gatewayAddresses(state: ClusterState): GatewayAddress[] {
  return [{ family: 'ipv4', ip: state.cluster.gatewayIP }, ...gatewayIPv6Addresses(state).map((ip): GatewayAddress => ({ family: 'ipv6', ip }))];
}

/** What to send: one gateway address, onto the node's guest bridge, for one guest. */
export interface AnnounceRequest extends GatewayAddress {
  bridge: string;
  guestMac: string;
}

/** Sends one announcement; resolves with how it was sent, throws when it could not be sent. */
export interface GatewayAnnouncer {
  announce(r: AnnounceRequest): Promise<string>;
}

/** One announcement's outcome, for the apply result and the report. */
export interface Announcement extends GatewayAddress {
  guest: string;
  ok: boolean;
  /** How it was sent, why it was not needed, or why it failed. */
  detail: string;
}

/** arping's arguments for an unsolicited ARP (sender IP = target IP = the gateway), one frame. */
export function arpingArgs(r: AnnounceRequest): string[] {
  return ['-q', '-U', '-c', '1', '-i', r.bridge, '-S', r.ip, r.ip];
}

/** ndptool's arguments for one unsolicited neighbour advertisement of the gateway address, to all nodes (ff02::1). */
export function ndptoolArgs(r: AnnounceRequest): string[] {
  return ['-t', 'na', '-U', '-T', r.ip, '-i', r.bridge, 'send'];
}

/** The real announcer: `arping` (IPv4) and `ndptool` (IPv6) in the node's namespace (prefix e.g. `ip netns exec <node>`). */
export class CommandAnnouncer implements GatewayAnnouncer {
  constructor(private readonly opts: { prefix?: string[]; arping?: string; ndptool?: string } = {}) {}

  async announce(r: AnnounceRequest): Promise<string> {
    const [program, args, ok, how] =
      r.family === 'ipv4'
        ? [this.opts.arping ?? 'arping', arpingArgs(r), ARPING_OK, 'gratuitous ARP']
        : [this.opts.ndptool ?? 'ndptool', ndptoolArgs(r), NDPTOOL_OK, 'unsolicited neighbour advertisement'];
    const argv = [...(this.opts.prefix ?? []), program, ...args];
    const res = await runUnchecked(argv[0] as string, argv.slice(1), { timeout: 5000 });
    if (!ok.has(res.exitCode)) {
      throw new Error(`${argv.join(' ')} failed (exit ${res.exitCode}): ${res.stderr.trim() || res.stdout.trim()}`);
    }
    return `${how} on ${r.bridge}`;
  }
}

// arping exits 1 when it got no reply; nothing answers an unsolicited ARP.
const ARPING_OK = new Set([0, 1]);
const NDPTOOL_OK = new Set([0]);

/**
 * Announce the gateway to one guest that now runs on this node (just started, or arrived by
 * migration). Never throws: every address has an outcome. With a shared gateway MAC nothing is
 * sent (every node is already the guest's gateway at that MAC).
 */
export async function announceGateway(view: NodeView, guest: Pick<GuestSpec, 'name' | 'mac'>, announcer: GatewayAnnouncer): Promise<Announcement[]> {
  const { state, node } = view;
  const out: Announcement[] = [];
  for (const a of gatewayAddresses(state)) {
    if (state.cluster.gatewayMAC !== undefined) {
      out.push({ ...a, guest: guest.name, ok: true, detail: `not needed: shared gateway MAC ${state.cluster.gatewayMAC}` });
      continue;
    }
    try {
      const how = await announcer.announce({ ...a, bridge: node.guestBridge.interface, guestMac: guest.mac });
      out.push({ ...a, guest: guest.name, ok: true, detail: how });
    } catch (e) {
      out.push({ ...a, guest: guest.name, ok: false, detail: (e as Error).message });
    }
  }
  return out;
}

/** Announce to every guest the applier started, restarted, or saw arrive by live migration (in that order). */
export async function announceStarted(started: readonly { guest: string; action: string; ok: boolean }[], view: NodeView, announcer: GatewayAnnouncer): Promise<Announcement[]> {
  const out: Announcement[] = [];
  for (const o of started) {
    const spec = view.guests.find((g) => g.name === o.guest);
    if (o.ok && spec && (o.action === 'start' || o.action === 'restart' || o.action === 'arrived')) out.push(...(await announceGateway(view, spec, announcer)));
  }
  return out;
}

/** Report lines: what was announced (notes) and what failed (errors). */
export function announcementLines(list: readonly Announcement[]): { notes: string[]; errors: string[] } {
  const sent = list.filter((a) => a.ok);
  return {
    notes: sent.map((a) => `gateway ${a.ip} announced to guest ${a.guest}: ${a.detail}`),
    errors: list.filter((a) => !a.ok).map((a) => `gateway ${a.ip} could not be announced to guest ${a.guest}: ${a.detail}`),
  };
}
