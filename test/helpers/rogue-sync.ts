// A guest that speaks ct-sync's protocol: its own conntrackd inside the guest's namespace, aimed at
// the nodes' sync channel (a node's sync port, or the multicast group), so a forged message is
// well-formed. What it announces comes from its own conntrack table (forgeFlow). Used by the sync
// guard tests (ctsync-guard, lab-nodes): the nodes must never learn it.
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LabGuest } from '../../src/lab/plan.js';
import { runIn } from '../../src/netns/netns.js';
import { processStartTime, waitUntil } from '../../src/proc/process.js';
import { DEFAULT_SYNC_PORT } from '../../src/settings/conntrackd.js';

/** The invented flow a rogue announces (no such traffic ever exists). */
export const FORGED = { src: '198.51.100.7', dst: '203.0.113.9' };

export type RogueChannel = { unicastTo: string } | { multicastGroup: string };

export interface Rogue {
  pid: number;
  startTime: string | undefined;
  conf: string;
}

/** Start the rogue conntrackd in guest g's namespace; its files under dir. Resolves once it answers on its socket. */
export async function startRogue(g: LabGuest, channel: RogueChannel, dir: string): Promise<Rogue> {
  const base = join(dir, `rogue-${g.name}`);
  const conf = `${base}.conf`;
  const block =
    'unicastTo' in channel
      ? ['  UDP {', `    IPv4_address ${g.ip}`, `    IPv4_Destination_Address ${channel.unicastTo}`, `    Port ${DEFAULT_SYNC_PORT}`]
      : ['  Multicast {', `    IPv4_address ${channel.multicastGroup}`, `    Group ${DEFAULT_SYNC_PORT}`, `    IPv4_interface ${g.ip}`];
  await writeFile(
    conf,
    [
      'Sync {',
      '  Mode FTFW {',
      '    DisableExternalCache On',
      '  }',
      ...block,
      `    Interface ${g.dev}`,
      '    Checksum on',
      '  }',
      '}',
      'General {',
      '  HashSize 1024',
      '  HashLimit 4096',
      '  Syslog off',
      `  LogFile ${base}.log`,
      `  LockFile ${base}.lock`,
      '  UNIX {',
      `    Path ${base}.ctl`,
      '  }',
      '  Systemd off',
      '}',
      '',
    ].join('\n'),
  );
  const child = spawn('ip', ['netns', 'exec', g.ns, 'conntrackd', '-C', conf], { detached: true, stdio: 'ignore' });
  child.unref();
  const rogue = { pid: child.pid!, startTime: processStartTime(child.pid!), conf };
  const up = await waitUntil(async () => runIn(g.ns, 'conntrackd', ['-C', conf, '-s']).then(() => true, () => false), 5_000);
  if (!up) throw new Error(`the rogue conntrackd in ${g.ns} did not come up`);
  return rogue;
}

/** Create the invented flow in the guest's own table: its conntrackd sends it as a NEW message. */
export async function forgeFlow(g: LabGuest, sport: number): Promise<void> {
  await runIn(g.ns, 'conntrack', ['-I', '-p', 'udp', '-s', FORGED.src, '-d', FORGED.dst, '--sport', String(sport), '--dport', '53', '-t', '120', '-u', 'SEEN_REPLY']);
}

/** Sync packets the rogue has sent so far (its `conntrackd -s` statistics). */
export async function roguePacketsSent(g: LabGuest, rogue: Rogue): Promise<number> {
  const r = await runIn(g.ns, 'conntrackd', ['-C', rogue.conf, '-s']);
  const m = /traffic \(active device=[^)]*\):\s+\d+\s+Bytes sent\s+\d+\s+Bytes recv\s+(\d+)\s+Pckts sent/.exec(r.stdout);
  if (!m) throw new Error(`no traffic statistics in the rogue's conntrackd -s:\n${r.stdout}`);
  return Number(m[1]);
}
