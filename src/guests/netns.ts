// Lab guests: a guest is a network namespace `<prefix><guest name>` whose eth0 is a veth whose
// peer sits on the node's guest bridge (inside the node's namespace: in the lab a node is itself a
// namespace). The guest gets its IP, MAC and a default route via the shared gateway IP, and
// optionally runs one command (a service) in the background.
//
// Runtime directory (default /run/cgw-sync/netns/<node namespace>):
//   <name>.meta.json  fingerprint, MAC, PID and start time of the command
//   <name>.log        the command's stdout and stderr
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import type { GuestSpec } from '../state/types.js';
import {
  addAddress,
  addVeth,
  createNamespace,
  deleteNamespace,
  linkUp,
  listNamespaces,
  run,
  runIn,
  setMaster,
} from '../netns/netns.js';
import {
  assertSafeGuestName,
  desiredFingerprint,
  prepareStart,
  type GuestDriver,
  type RunningGuest,
  type StartContext,
  type StopResult,
} from './driver.js';
import { DEFAULT_RUN_ROOT, RuntimeDir } from './runtime.js';
import { assertGuestAllowed, policyGuard, type GuestGuard } from './policy.js';
import { processAlive, processStartTime, signalIfSame, waitForExit, waitUntil } from '../proc/process.js';

export interface NetnsDriverOptions {
  /** The node's network namespace, which holds the guest bridge. */
  nodeNs: string;
  /** Guest namespaces are `<prefix><guest name>`; the prefix must be unique per node. Default `cgw-g-`. */
  prefix?: string;
  runDir?: string;
  /** Asked right before a guest starts (default: policyGuard(DEFAULT_GUEST_POLICY), see policy.ts). */
  guard?: GuestGuard;
}

/** Name of the guest's interface inside its namespace. */
const GUEST_IF = 'eth0';

export class NetnsDriver implements GuestDriver {
  readonly kind = 'netns' as const;
  readonly nodeNs: string;
  readonly prefix: string;
  readonly dir: RuntimeDir;
  private readonly guard: GuestGuard;

  constructor(opts: NetnsDriverOptions) {
    this.guard = opts.guard ?? policyGuard();
    this.nodeNs = opts.nodeNs;
    this.prefix = opts.prefix ?? 'cgw-g-';
    this.dir = new RuntimeDir(opts.runDir ?? join(DEFAULT_RUN_ROOT, 'netns', opts.nodeNs));
  }

  nsName(guest: string): string {
    return this.prefix + guest;
  }

  /** Node-side end of the guest's veth: derived from the guest name, within the 15-char limit. */
  hostIf(guest: string): string {
    return 'vg' + createHash('sha256').update(this.prefix + guest).digest('hex').slice(0, 10);
  }

  async start(guest: GuestSpec, ctx: StartContext): Promise<void> {
    assertSafeGuestName(guest.name);
    await assertGuestAllowed(guest, ctx.node, this.guard);
    const fp = desiredFingerprint(guest, ctx.node);
    if (await prepareStart(this, guest.name, fp)) return;
    const ns = this.nsName(guest.name);
    const hostIf = this.hostIf(guest.name);
    const prefixLen = ctx.cluster.guestSubnet.split('/')[1];
    await createNamespace(ns);
    try {
      await addVeth({ ns: this.nodeNs, name: hostIf }, { ns, name: GUEST_IF });
      await setMaster(this.nodeNs, hostIf, ctx.node.guestBridge.interface);
      await linkUp(this.nodeNs, hostIf);
      await runIn(ns, 'ip', ['link', 'set', GUEST_IF, 'address', guest.mac]);
      await addAddress(ns, GUEST_IF, `${guest.ip}/${prefixLen}`);
      await linkUp(ns, GUEST_IF);
      await runIn(ns, 'ip', ['route', 'add', 'default', 'via', ctx.cluster.gatewayIP]);
      if (guest.ipv6 !== undefined && ctx.cluster.ipv6) await addGuestIPv6(ns, GUEST_IF, guest.ipv6, ctx.cluster.ipv6);
      const proc = guest.netns?.command?.length ? await this.spawnCommand(guest.name, guest.netns.command) : undefined;
      await this.dir.writeMeta({
        name: guest.name,
        driver: 'netns',
        fingerprint: fp,
        mac: guest.mac,
        startedAt: new Date().toISOString(),
        pid: proc?.pid,
        pidStart: proc?.start,
      });
    } catch (e) {
      await this.stop(guest.name, { timeoutMs: 0 }).catch(() => undefined);
      throw e;
    }
  }

  /** Start the guest's command in its namespace, detached, output to <name>.log. */
  private async spawnCommand(name: string, command: string[]): Promise<{ pid: number; start: string }> {
    await this.dir.ensure();
    const log = openSync(this.dir.file(name, '.log'), 'a');
    try {
      // `ip netns exec` execs the command in place, so the PID is the command's own.
      const child = spawn('ip', ['netns', 'exec', this.nsName(name), ...command], { detached: true, stdio: ['ignore', log, log] });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
      child.unref();
      const start = processStartTime(child.pid!);
      if (start === undefined) throw new Error(`command of netns guest ${name} exited immediately (see ${this.dir.file(name, '.log')})`);
      return { pid: child.pid!, start };
    } finally {
      closeSync(log);
    }
  }

  async list(): Promise<RunningGuest[]> {
    const present = new Set(
      (await listNamespaces()).filter((n) => n.startsWith(this.prefix)).map((n) => n.slice(this.prefix.length)),
    );
    const names = new Set([...present, ...(await this.dir.names('.meta.json'))]);
    const out: RunningGuest[] = [];
    for (const name of [...names].sort()) {
      const meta = await this.dir.readMeta(name);
      if (!present.has(name)) {
        // Recorded by us, but the namespace is gone: the guest died without stop().
        if (meta) out.push({ name, mac: meta.mac, fingerprint: meta.fingerprint, state: 'crashed', managed: true });
        continue;
      }
      const mac = await this.liveMac(name);
      if (!meta) {
        out.push({ name, mac, state: 'running', managed: false });
        continue;
      }
      const alive = meta.pid === undefined || processAlive(meta.pid, meta.pidStart);
      out.push({
        name,
        mac: mac ?? meta.mac,
        fingerprint: meta.fingerprint,
        // A guest whose service command died is a crashed guest.
        state: alive ? 'running' : 'crashed',
        pid: alive ? meta.pid : undefined,
        managed: true,
      });
    }
    return out;
  }

  private async liveMac(name: string): Promise<string | undefined> {
    try {
      const r = await runIn(this.nsName(name), 'ip', ['-j', 'link', 'show', GUEST_IF]);
      return (JSON.parse(r.stdout) as Array<{ address?: string }>)[0]?.address;
    } catch {
      return undefined;
    }
  }

  /**
   * Shut the guest down like a machine: SIGTERM to every process in its namespace, SIGKILL to
   * those still there after timeoutMs ('forced'), then remove its veth and namespace.
   */
  async stop(name: string, opts: { timeoutMs: number }): Promise<StopResult> {
    const ns = this.nsName(name);
    let result: StopResult = 'clean';
    if ((await listNamespaces()).includes(ns)) {
      const procs = await this.processesIn(ns);
      for (const p of procs) signalIfSame(p.pid, p.start, 'SIGTERM');
      const allGone = () => procs.every((p) => !processAlive(p.pid, p.start));
      if (!(await waitUntil(allGone, opts.timeoutMs))) {
        result = 'forced';
        for (const p of procs) signalIfSame(p.pid, p.start, 'SIGKILL');
        for (const p of procs) {
          if (!(await waitForExit(p.pid, p.start, 5_000))) throw new Error(`process ${p.pid} in ${ns} survived SIGKILL`);
        }
      }
      // Deleting one end of a veth deletes both; done explicitly so it is gone now, not whenever
      // the kernel gets to clean up the namespace.
      const hostIf = this.hostIf(name);
      if (await this.linkExists(this.nodeNs, hostIf)) await runIn(this.nodeNs, 'ip', ['link', 'del', hostIf]);
      await deleteNamespace(ns);
    }
    await this.dir.remove(name, ['.log']);
    return result;
  }

  /** Every process whose network namespace is ns (the guest's own processes), with start times. */
  private async processesIn(ns: string): Promise<Array<{ pid: number; start: string }>> {
    const r = await run('ip', ['netns', 'pids', ns]);
    const out: Array<{ pid: number; start: string }> = [];
    for (const line of r.stdout.split('\n')) {
      const pid = Number.parseInt(line.trim(), 10);
      const start = Number.isInteger(pid) && pid !== process.pid ? processStartTime(pid) : undefined;
      if (start !== undefined) out.push({ pid, start });
    }
    return out;
  }

  private async linkExists(ns: string, dev: string): Promise<boolean> {
    try {
      await runIn(ns, 'ip', ['link', 'show', dev]);
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * Dual stack: the guest's IPv6 address (without duplicate address detection, so it is usable at
 * once) and its default route via the shared link-local gateway, as a router advertisement of the
 * gateway would set it.
 */
async function addGuestIPv6(ns: string, dev: string, address: string, v6: NonNullable<StartContext['cluster']['ipv6']>): Promise<void> {
  await runIn(ns, 'ip', ['-6', 'addr', 'add', `${address}/${v6.guestSubnet.split('/')[1]}`, 'dev', dev, 'nodad']);
  await runIn(ns, 'ip', ['-6', 'route', 'add', 'default', 'via', v6.gatewayLinkLocal, 'dev', dev]);
}
