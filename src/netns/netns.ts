// Small, explicit wrappers around `ip netns` and `ip link`. Used by the lab, the netns guest
// driver and the tests. Every function acts inside a named namespace that the caller created;
// nothing here touches the root namespace's links, routes or ruleset.
import { execa, type Options } from 'execa';
import { waitUntil } from '../proc/process.js';

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/**
 * Run a command and return its output and exit code, whatever the exit code (probes read the
 * output of commands that fail, e.g. arping without answers). A command killed by a timeout has
 * exitCode -1.
 */
export async function runUnchecked(cmd: string, args: string[], opts: Options = {}): Promise<RunResult> {
  const r = await execa(cmd, args, { reject: false, ...opts, encoding: 'utf8' });
  return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? -1 };
}

/** Run a command and return its output; throws with stderr in the message when it fails. */
export async function run(cmd: string, args: string[], opts: Options = {}): Promise<RunResult> {
  const out = await runUnchecked(cmd, args, opts);
  if (out.exitCode !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${out.exitCode}): ${out.stderr.trim() || out.stdout.trim()}`);
  }
  return out;
}

/** Arguments that run `cmd args...` inside namespace `ns`. */
export function inNs(ns: string, cmd: string, args: string[]): [string, string[]] {
  return ['ip', ['netns', 'exec', ns, cmd, ...args]];
}

export async function runIn(ns: string, cmd: string, args: string[], opts: Options = {}): Promise<RunResult> {
  const [c, a] = inNs(ns, cmd, args);
  return run(c, a, opts);
}

export async function runInUnchecked(ns: string, cmd: string, args: string[], opts: Options = {}): Promise<RunResult> {
  const [c, a] = inNs(ns, cmd, args);
  return runUnchecked(c, a, opts);
}

/** PIDs of the processes whose network namespace is ns. */
export async function namespacePids(ns: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', ns]);
  return r.stdout
    .split('\n')
    .map((l) => Number.parseInt(l.trim(), 10))
    .filter((n) => Number.isInteger(n));
}

export async function listNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n);
}

export async function createNamespace(ns: string): Promise<void> {
  await run('ip', ['netns', 'add', ns]);
  await runIn(ns, 'ip', ['link', 'set', 'lo', 'up']);
  // A new namespace copies the host's IPv4 settings (net.core.devconf_inherit_init_net=0), so on a
  // host that routes (Docker, a hypervisor) it would start forwarding. Start from the kernel's
  // default instead: whoever needs forwarding (a lab node, a node's settings) turns it on.
  await sysctl(ns, 'net.ipv4.ip_forward', '0');
}

/** Delete a namespace if it exists. Processes still inside it keep it alive; callers stop theirs first. */
export async function deleteNamespace(ns: string): Promise<void> {
  if (!(await listNamespaces()).includes(ns)) return;
  await run('ip', ['netns', 'del', ns]);
}

/** Create a veth pair with one end in each namespace (both may be the same namespace). */
export async function addVeth(a: { ns: string; name: string }, b: { ns: string; name: string }): Promise<void> {
  // Created inside namespace a so no interface ever appears in the root namespace.
  await runIn(a.ns, 'ip', ['link', 'add', a.name, 'type', 'veth', 'peer', 'name', b.name, 'netns', b.ns]);
}

/**
 * A bridge whose MAC stays put. An unpinned Linux bridge takes the lowest MAC of its ports, so a
 * guest port coming or going would change the MAC of the node's IPs on it (the gateway's too),
 * and neighbours would send to the old one until their ARP entries expire. Setting its own
 * random address pins it (addr_assign_type "set"): production bridges want the same (docs).
 * `mac`: pin this one instead (a node's guestBridge.mac from the state).
 */
export async function addBridge(ns: string, name: string, mac?: string): Promise<void> {
  await runIn(ns, 'ip', ['link', 'add', name, 'type', 'bridge']);
  const pinned = mac ?? (await runIn(ns, 'cat', [`/sys/class/net/${name}/address`])).stdout.trim();
  await runIn(ns, 'ip', ['link', 'set', name, 'address', pinned]);
  await runIn(ns, 'ip', ['link', 'set', name, 'up']);
}

export async function setMaster(ns: string, dev: string, bridge: string): Promise<void> {
  await runIn(ns, 'ip', ['link', 'set', dev, 'master', bridge]);
}

export async function linkUp(ns: string, dev: string): Promise<void> {
  await runIn(ns, 'ip', ['link', 'set', dev, 'up']);
}

export async function addAddress(ns: string, dev: string, cidr: string): Promise<void> {
  await runIn(ns, 'ip', ['addr', 'add', cidr, 'dev', dev]);
}

export async function sysctl(ns: string, key: string, value: string): Promise<void> {
  await runIn(ns, 'sysctl', ['-q', '-w', `${key}=${value}`]);
}

/** One link as `ip -j -d link show` reports it (the fields readiness needs). */
interface LinkJson {
  ifname: string;
  flags: string[];
  operstate: string;
  linkinfo?: { info_slave_kind?: string; info_slave_data?: { state?: string } };
}

interface AddrJson {
  ifname: string;
  addr_info: Array<{ local: string; tentative?: boolean; dadfailed?: boolean }>;
}

/**
 * Why a link cannot carry a probe yet, or undefined when it can: administratively up with
 * carrier, operational (the kernel's link watcher has activated its queues; until then it drops
 * what is sent), in the `forwarding` state when it is a bridge port (a port learning or
 * listening drops frames), and no address still in duplicate address detection (`tentative`).
 */
export function linkNotReady(link: LinkJson, addrs: AddrJson['addr_info']): string | undefined {
  if (!link.flags.includes('UP')) return 'down';
  if (!link.flags.includes('LOWER_UP')) return 'no carrier';
  // UNKNOWN: devices without carrier reporting (lo, dummy) are operational once up.
  if (link.operstate !== 'UP' && link.operstate !== 'UNKNOWN') return `operstate ${link.operstate}`;
  const port = link.linkinfo?.info_slave_kind === 'bridge' ? link.linkinfo.info_slave_data?.state : undefined;
  if (port !== undefined && port !== 'forwarding') return `bridge port ${port}`;
  const tentative = addrs.filter((a) => a.tentative && !a.dadfailed).map((a) => a.local);
  if (tentative.length) return `tentative ${tentative.join(', ')}`;
  return undefined;
}

/**
 * Links of ns that are not ready (see linkNotReady), as "dev: why". devs default to every link
 * that is up and has carrier: a link left without a peer on purpose (a spare trunk) is no wait.
 */
export async function linksNotReady(ns: string, devs?: string[]): Promise<string[]> {
  const links = JSON.parse((await runIn(ns, 'ip', ['-j', '-d', 'link', 'show'])).stdout) as LinkJson[];
  const addrs = JSON.parse((await runIn(ns, 'ip', ['-j', 'addr', 'show'])).stdout) as AddrJson[];
  const byName = new Map(links.map((l) => [l.ifname, l]));
  const wanted = devs ?? links.filter((l) => l.flags.includes('UP') && l.flags.includes('LOWER_UP') && l.ifname !== 'lo').map((l) => l.ifname);
  const out: string[] = [];
  for (const dev of wanted) {
    const link = byName.get(dev);
    const why = link ? linkNotReady(link, addrs.find((a) => a.ifname === dev)?.addr_info ?? []) : 'missing';
    if (why) out.push(`${dev}: ${why}`);
  }
  return out;
}

/** How long a link may take to become ready (DAD alone takes about a second). */
const LINKS_READY_MS = 15_000;

/**
 * Wait until the links of ns can carry traffic (linkNotReady), polling their state with a
 * deadline: a probe sent earlier is lost and the test fails by chance. Throws naming the links
 * still not ready.
 */
export async function waitForLinks(ns: string, devs?: string[], timeoutMs = LINKS_READY_MS): Promise<void> {
  let pending: string[] = [];
  const ready = async () => {
    pending = await linksNotReady(ns, devs);
    return pending.length === 0;
  };
  if (!(await waitUntil(ready, timeoutMs))) {
    throw new Error(`links in ${ns} not ready after ${timeoutMs} ms: ${pending.join('; ')}`);
  }
}

/** Sockets listening in ns, as "tcp/80", "udp/123". */
export async function listeningPorts(ns: string): Promise<Set<string>> {
  const r = await runIn(ns, 'ss', ['-Hln', '-tu']);
  return new Set(
    r.stdout
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => {
        const cols = l.trim().split(/\s+/);
        return `${cols[0]}/${cols[4]?.split(':').pop()}`;
      }),
  );
}

/** Wait until ns listens on every one of ports ("tcp/80", "udp/123"); throws naming `what` after timeoutMs. */
export async function waitForListening(ns: string, ports: string[], what: string, timeoutMs = 15_000): Promise<void> {
  let missing: string[] = [];
  const listening = async () => {
    const open = await listeningPorts(ns);
    missing = ports.filter((p) => !open.has(p));
    return missing.length === 0;
  };
  if (!(await waitUntil(listening, timeoutMs))) throw new Error(`${what}: not listening on ${missing.join(', ')} after ${timeoutMs} ms`);
}
