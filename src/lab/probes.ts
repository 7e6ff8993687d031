// Probes: one bounded network request from inside a lab namespace, reported as {name, ok, detail}.
// `ok` means an answer came back (and matched `expect`, when given); `reply` is the raw answer.
// Every probe is bounded by a timeout (seconds, default 3), so a broken path costs seconds, not
// minutes.
import { runInUnchecked } from '../netns/netns.js';
import { askCommand } from './responder.js';

export interface ProbeResult {
  name: string;
  ok: boolean;
  /** The answer (trimmed) when there is one, else what went wrong. */
  detail: string;
  reply?: string;
}

export interface ProbeOptions {
  /** Name in the result; default describes the probe, e.g. "http 192.168.122.11:80". */
  name?: string;
  timeoutS?: number;
  /** The answer must contain this string (or match this pattern) for ok. */
  expect?: string | RegExp;
}

export interface ArpProbeResult extends ProbeResult {
  /** Distinct MAC addresses that answered, lower case, sorted. */
  macs: string[];
}

const DEFAULT_TIMEOUT_S = 3;
/**
 * Grace on top of a probe's own timeout before the command itself is killed. Once running, a
 * probe is bounded by its own timeout (curl --max-time, the ask program's timer, arping -w), so
 * this only stops one that hangs; it must cover starting `ip netns exec` and the program, which
 * took over 2 s with the load average at 16 on 2 cores (a probe killed holding its answer).
 */
export const KILL_GRACE_MS = 20_000;

/** GET http://ip:port/ from namespace ns with curl; the reply is the body. */
export async function httpProbe(ns: string, ip: string, port: number, opts: ProbeOptions = {}): Promise<ProbeResult> {
  const t = opts.timeoutS ?? DEFAULT_TIMEOUT_S;
  const host = ip.includes(':') ? `[${ip}]` : ip; // an IPv6 literal in a URL is bracketed
  const r = await runInUnchecked(ns, 'curl', ['-sS', '--max-time', String(t), `http://${host}:${port}/`], {
    timeout: t * 1000 + KILL_GRACE_MS,
  });
  return probeResult(opts.name ?? `http ${ip}:${port}`, r.exitCode === 0, r.stdout, r.stderr, r.exitCode, opts.expect);
}

/** Connect over TCP from namespace ns and read until the server closes (a banner). */
export async function tcpProbe(ns: string, ip: string, port: number, opts: ProbeOptions = {}): Promise<ProbeResult> {
  return ask('tcp', ns, ip, port, opts);
}

/** Send one UDP datagram from namespace ns; the reply is the first datagram that comes back. */
export async function udpProbe(ns: string, ip: string, port: number, opts: ProbeOptions = {}): Promise<ProbeResult> {
  return ask('udp', ns, ip, port, opts);
}

async function ask(protocol: 'tcp' | 'udp', ns: string, ip: string, port: number, opts: ProbeOptions): Promise<ProbeResult> {
  const t = opts.timeoutS ?? DEFAULT_TIMEOUT_S;
  const [cmd, ...args] = askCommand(protocol, ip, port, t * 1000);
  const r = await runInUnchecked(ns, cmd, args, { timeout: t * 1000 + KILL_GRACE_MS });
  return probeResult(opts.name ?? `${protocol} ${ip}:${port}`, r.exitCode === 0, r.stdout, r.stderr, r.exitCode, opts.expect);
}

/** The probe result for an answer (or none), checked against `expect`. */
export function probeResult(
  name: string,
  answered: boolean,
  stdout: string,
  stderr: string,
  exitCode: number,
  expect: string | RegExp | undefined,
): ProbeResult {
  const reply = stdout.trim();
  if (!answered) {
    return { name, ok: false, detail: `no answer (exit ${exitCode}): ${stderr.trim() || reply || 'no output'}` };
  }
  if (expect !== undefined && !(typeof expect === 'string' ? reply.includes(expect) : expect.test(reply))) {
    return { name, ok: false, detail: `unexpected answer ${JSON.stringify(reply)} (wanted ${String(expect)})`, reply };
  }
  return { name, ok: true, detail: reply, reply };
}

export interface ArpProbeOptions {
  name?: string;
  /** ARP requests to send (default 3). */
  count?: number;
  /** Overall deadline in seconds (default 3). */
  timeoutS?: number;
  /** ok only when exactly these MACs answered (any case); default: ok when any MAC answered. */
  expectMacs?: string[];
}

/**
 * From namespace ns, send ARP requests for ip out of dev (`arping -c N -w T -i dev ip`; this is
 * Thomas Habets' arping, which broadcasts every request) and collect the distinct MACs answering.
 */
export async function arpProbe(ns: string, dev: string, ip: string, opts: ArpProbeOptions = {}): Promise<ArpProbeResult> {
  const name = opts.name ?? `arp ${ip} on ${ns}/${dev}`;
  const t = opts.timeoutS ?? DEFAULT_TIMEOUT_S;
  const r = await runInUnchecked(ns, 'arping', ['-c', String(opts.count ?? 3), '-w', String(t), '-i', dev, ip], {
    timeout: t * 1000 + KILL_GRACE_MS,
  });
  // Exit 1 only means "no reply"; anything else without output is a failure to run.
  const macs = parseArpingMacs(r.stdout);
  if (r.exitCode !== 0 && r.exitCode !== 1) {
    return { name, ok: false, detail: `arping failed (exit ${r.exitCode}): ${r.stderr.trim()}`, macs };
  }
  return arpResult(name, macs, opts.expectMacs);
}

/** ok when exactly expectMacs answered (any case), or without expectMacs when any MAC answered. */
export function arpResult(name: string, macs: string[], expectMacs?: string[]): ArpProbeResult {
  const detail = macs.length ? `answered by ${macs.join(', ')}` : 'no answer';
  if (expectMacs) {
    const want = [...new Set(expectMacs.map((m) => m.toLowerCase()))].sort();
    const ok = want.length === macs.length && want.every((m, i) => m === macs[i]);
    return { name, ok, detail: ok ? detail : `${detail} (wanted ${want.join(', ') || 'none'})`, macs };
  }
  return { name, ok: macs.length > 0, detail, macs };
}

/**
 * Distinct MACs from arping reply lines: Habets' arping ("60 bytes from 02:..:ff (10.5.5.254): ...")
 * and busybox arping inside the lab VMs ("Unicast reply from 10.5.5.254 [02:..:ff] 0.9ms").
 */
export function parseArpingMacs(output: string): string[] {
  const macs = new Set<string>();
  for (const m of output.matchAll(/\b(?:from|reply from \S+) \[?((?:[0-9a-f]{2}:){5}[0-9a-f]{2})\b/gi)) macs.add(m[1].toLowerCase());
  return [...macs].sort();
}

/**
 * From namespace ns, solicit the IPv6 address ip on dev (`ndisc6 -m`: neighbour solicitations to
 * its solicited-node multicast group, every answer displayed) and collect the distinct MACs that
 * answered: the NDP twin of arpProbe, with the same verdict (arpResult).
 */
export async function ndpProbe(ns: string, dev: string, ip: string, opts: ArpProbeOptions = {}): Promise<ArpProbeResult> {
  const name = opts.name ?? `ndp ${ip} on ${ns}/${dev}`;
  const t = opts.timeoutS ?? DEFAULT_TIMEOUT_S;
  const count = opts.count ?? 3;
  const waitMs = Math.max(100, Math.floor((t * 1000) / count));
  const r = await runInUnchecked(ns, 'ndisc6', ['-m', '-n', '-r', String(count), '-w', String(waitMs), ip, dev], { timeout: t * 1000 + KILL_GRACE_MS });
  const macs = parseNdisc6Macs(r.stdout);
  // ndisc6 exits 0 with answers, 2 without; anything else without answers is a failure to run.
  if (macs.length === 0 && r.exitCode !== 0 && r.exitCode !== 2) {
    return { name, ok: false, detail: `ndisc6 failed (exit ${r.exitCode}): ${r.stderr.trim()}`, macs };
  }
  return arpResult(name, macs, opts.expectMacs);
}

/** Distinct MACs from ndisc6's "Target link-layer address: 02:..:FF" lines, lower case, sorted. */
export function parseNdisc6Macs(output: string): string[] {
  const macs = new Set<string>();
  for (const m of output.matchAll(/Target link-layer address: ((?:[0-9a-f]{2}:){5}[0-9a-f]{2})\b/gi)) macs.add((m[1] as string).toLowerCase());
  return [...macs].sort();
}
