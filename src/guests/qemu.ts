// KVM guests run by plain qemu-system-x86_64, without libvirt.
//
// Per guest the runtime directory holds:
//   <name>.pid        written by qemu (-pidfile)
//   <name>.qmp        the QMP control socket
//   <name>.meta.json  written by us after a successful start: the fingerprint it was started with.
//   <name>.console    the guest's first serial port (ttyS0: its console), as a log file
//   <name>.serial1    the second serial port (ttyS1) as a unix socket, for whoever administers the
//                     guest (the lab's VMs run a shell there: src/lab/guest-exec.ts)
//
// NIC: `nic: 'bridge-helper'` (default) lets qemu-bridge-helper make the tap (/etc/qemu/bridge.conf
// must allow the bridge); `nic: 'tap'` makes the driver create the tap itself on the guest bridge
// (named from the guest name, inside the node namespace in the lab) and remove it on stop.
//
// Process placement: on a host booted with systemd, qemu runs in its own transient scope
// (`systemd-run --scope`, unit cgw-guest-<name>.scope in cgw-guests.slice, with the guest's memory
// and CPUs as limits), so restarting or upgrading the agent, whose service cgroup is killed on
// stop, never touches a running guest. Without systemd (containers, the lab, CI) qemu daemonizes
// on its own as before.
// A qemu with a pidfile or QMP socket but no metadata was not started by cgw-sync (by hand, or by
// a run that crashed before writing it): list() reports it with managed=false and no fingerprint.
import { closeSync, constants, existsSync, openSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { GuestSpec, NodeSpec } from '../state/types.js';
import { inNs, run, runIn, runInUnchecked, runUnchecked } from '../netns/netns.js';
import {
  assertSafeGuestName,
  desiredFingerprint,
  prepareStart,
  type GuestDriver,
  type GuestState,
  type IncomingListen,
  type LiveMigrator,
  type MigrationResult,
  type MigrationTarget,
  type RunningGuest,
  type StartContext,
  type StopResult,
} from './driver.js';
import { Qmp } from './qmp.js';
import { DEFAULT_RUN_ROOT, RuntimeDir, type GuestMeta } from './runtime.js';
import { assertGuestAllowed, policyGuard, type GuestGuard } from './policy.js';
import { processAlive, processCmdline, processStartTime, terminate, waitForExit } from '../proc/process.js';

export type Accel = 'kvm' | 'tcg';

export interface QemuDriverOptions {
  /** Default /run/cgw-sync/qemu. */
  runDir?: string;
  /** Run qemu inside this network namespace (the lab's node namespaces, tests). */
  netns?: string;
  /** 'auto' (default): KVM when /dev/kvm can be opened, TCG otherwise. */
  accel?: 'auto' | Accel;
  binary?: string;
  /** Asked right before a guest starts (default: policyGuard(DEFAULT_GUEST_POLICY), see policy.ts). */
  guard?: GuestGuard;
  /** How the NIC reaches the guest bridge (see the header). Default 'bridge-helper'. */
  nic?: QemuNic;
  /** Run qemu in a transient systemd scope: 'auto' (default) when the host runs systemd. */
  systemd?: 'auto' | boolean;
}

export type QemuNic = 'bridge-helper' | 'tap';

/** The agent config's `guests.qemu` section (schema/agent.schema.json). */
export interface QemuSettings {
  accel?: 'auto' | Accel;
  nic?: QemuNic;
  systemd?: 'auto' | 'on' | 'off';
}

const FILES = ['.pid', '.qmp', '.console', '.serial1'];
/** How long qemu gets to exit after `quit` before SIGKILL. */
const QUIT_GRACE_MS = 5_000;

export function kvmUsable(): boolean {
  try {
    closeSync(openSync('/dev/kvm', constants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}

/** qemu's option syntax uses ',' as separator; a literal comma in a value is written ',,'. */
function optValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/** systemd is PID 1 on this host (sd_booted(): /run/systemd/system exists). */
export function systemdBooted(root = '/'): boolean {
  return existsSync(`${root.replace(/\/$/, '')}/run/systemd/system`);
}

/** The transient unit a guest's qemu runs in on a systemd host. */
export function guestUnitName(name: string): string {
  return `cgw-guest-${name}.scope`;
}

/**
 * Pure: the `systemd-run` prefix that puts qemu into its own scope with the guest's resources as
 * limits. qemu's own overhead (device emulation, TCG translation cache) on top of the guest RAM:
 * an eighth, at least 128 MiB.
 */
export function systemdRunArgs(guest: GuestSpec): string[] {
  const mem = guest.resources.memoryMiB;
  const overhead = Math.max(128, Math.ceil(mem / 8));
  return [
    'systemd-run',
    '--scope',
    '--quiet',
    '--collect',
    `--unit=${guestUnitName(guest.name)}`,
    '--slice=cgw-guests.slice',
    `--description=cgw-sync guest ${guest.name}`,
    `--property=MemoryMax=${mem + overhead}M`,
    `--property=CPUQuota=${guest.resources.vcpus * 100}%`,
    '--',
  ];
}

/** The tap device the driver creates for a guest (nic 'tap'): derived from the name, <= 15 chars. */
export function guestTapName(name: string): string {
  return 'tq' + createHash('sha256').update(name).digest('hex').slice(0, 10);
}

/** The host side of a guest's tap: the guest MAC with 0xfe first (never the bridge's lowest MAC). */
export function tapMac(guestMac: string): string {
  return `fe${guestMac.toLowerCase().slice(2)}`;
}

/** Pure: the qemu command line for a guest (the design's KVM command, plus -no-shutdown). */
export function qemuArgs(guest: GuestSpec, node: NodeSpec, opts: { runDir: string; accel: Accel; nic?: QemuNic; incoming?: MigrationTarget }): string[] {
  const boot = guest.boot ?? {};
  const args = ['-name', guest.name, '-m', String(guest.resources.memoryMiB), '-smp', String(guest.resources.vcpus)];
  // -cpu host / -cpu max crash on this kind of machine (MSR 0x10a); without arch-capabilities it works.
  if (opts.accel === 'kvm') args.unshift('-enable-kvm', '-cpu', 'host,-arch-capabilities');
  else args.unshift('-accel', 'tcg');
  if (boot.disk) args.push('-drive', `file=${optValue(boot.disk)},if=virtio`);
  if (boot.kernel) args.push('-kernel', boot.kernel);
  if (boot.initrd) args.push('-initrd', boot.initrd);
  if (boot.append) args.push('-append', boot.append);
  const nic =
    opts.nic === 'tap'
      ? `tap,ifname=${guestTapName(guest.name)},script=no,downscript=no,model=virtio-net-pci,mac=${guest.mac}`
      : `bridge,br=${node.guestBridge.interface},model=virtio-net-pci,mac=${guest.mac}`;
  args.push(
    '-nic',
    nic,
    '-serial',
    `file:${optValue(join(opts.runDir, `${guest.name}.console`))}`,
    '-serial',
    `unix:${optValue(join(opts.runDir, `${guest.name}.serial1`))},server=on,wait=off`,
    '-daemonize',
    '-pidfile',
    join(opts.runDir, `${guest.name}.pid`),
    '-qmp',
    `unix:${optValue(join(opts.runDir, `${guest.name}.qmp`))},server=on,wait=off`,
    '-display',
    'none',
    // A guest that powers off stays as a process in state 'shutdown' instead of vanishing, so a
    // process that disappears on its own really is a crash, and stop() can tell clean from forced.
    '-no-shutdown',
  );
  if (opts.incoming) args.push('-incoming', migrationUri(opts.incoming));
  return args;
}

export function migrationUri(t: MigrationTarget): string {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(t.host) || !Number.isInteger(t.port) || t.port < 1 || t.port > 65535) {
    throw new Error(`migration target ${JSON.stringify(t)} is not an IPv4 address and port`);
  }
  return `tcp:${t.host}:${t.port}`;
}

/** The live migration did not complete; the guest still runs on the source. */
export class MigrationFailed extends Error {
  override name = 'MigrationFailed';
}

/** How long a guest may stay paused at the end of a migration (qemu's downtime-limit). */
const MIGRATION_DOWNTIME_LIMIT_MS = 300;
const MIGRATION_POLL_MS = 50;

/** QMP `query-status` status -> our coarse state. */
export function stateFromQmpStatus(status: string): GuestState {
  switch (status) {
    case 'running':
      return 'running';
    case 'shutdown':
      return 'shutdown';
    case 'guest-panicked':
    case 'internal-error':
      return 'crashed';
    default:
      // paused, prelaunch, suspended, inmigrate, postmigrate, io-error, watchdog, debug, ...: the
      // VM exists but its CPUs do not run.
      return 'paused';
  }
}

/** The guest name and MAC a qemu process was started with, read from its command line. */
export function identityFromCmdline(argv: string[]): { name?: string; mac?: string } {
  const i = argv.indexOf('-name');
  // -name accepts "guest=<name>,..." as well as "<name>,...".
  const name = i >= 0 ? argv[i + 1]?.split(',')[0].replace(/^guest=/, '') : undefined;
  const mac = argv.join(' ').match(/mac=([0-9a-fA-F:]{17})/)?.[1]?.toLowerCase();
  return { name, mac };
}

export type { MigrationResult, MigrationTarget } from './driver.js';

export class QemuDriver implements GuestDriver, LiveMigrator {
  readonly kind = 'qemu' as const;
  readonly dir: RuntimeDir;
  private readonly netns?: string;
  private readonly accelOpt: 'auto' | Accel;
  private readonly binary: string;
  private readonly guard: GuestGuard;
  private readonly nic: QemuNic;
  private readonly systemd: boolean;

  constructor(opts: QemuDriverOptions = {}) {
    this.guard = opts.guard ?? policyGuard();
    this.nic = opts.nic ?? 'bridge-helper';
    this.systemd = opts.systemd === undefined || opts.systemd === 'auto' ? systemdBooted() : opts.systemd;
    this.dir = new RuntimeDir(opts.runDir ?? join(DEFAULT_RUN_ROOT, 'qemu'));
    this.netns = opts.netns;
    this.accelOpt = opts.accel ?? 'auto';
    this.binary = opts.binary ?? 'qemu-system-x86_64';
  }

  accel(): Accel {
    if (this.accelOpt !== 'auto') return this.accelOpt;
    return kvmUsable() ? 'kvm' : 'tcg';
  }

  async start(guest: GuestSpec, ctx: StartContext): Promise<void> {
    return this.launch(guest, ctx);
  }

  /**
   * Start the guest as the destination of a live migration: qemu waits (state 'paused', QMP
   * 'inmigrate') for the running guest's state on `listen`, then runs it. Same configuration,
   * same fingerprint as start(); the disk must be storage both nodes see.
   */
  async startIncoming(guest: GuestSpec, ctx: StartContext, listen: MigrationTarget | IncomingListen): Promise<void> {
    return this.launch(guest, ctx, listen);
  }

  /** Quit a destination that still waits ('inmigrate'); a qemu that runs the guest is left alone. */
  async stopIncoming(name: string): Promise<boolean> {
    const status = await this.qmpStatus(name);
    if (status !== undefined && status !== 'inmigrate') return false;
    await this.stop(name, { timeoutMs: 0 });
    return true;
  }

  private async launch(guest: GuestSpec, ctx: StartContext, incoming?: MigrationTarget | IncomingListen): Promise<void> {
    assertSafeGuestName(guest.name);
    await assertGuestAllowed(guest, ctx.node, this.guard);
    const fp = desiredFingerprint(guest, ctx.node);
    if (await prepareStart(this, guest.name, fp)) return;
    await this.dir.ensure();
    const args = qemuArgs(guest, ctx.node, { runDir: this.dir.dir, accel: this.accel(), nic: this.nic, incoming });
    const [cmd, cmdArgs] = this.command(guest, args);
    if (this.nic === 'tap') await this.addTap(guest.name, guest.mac, ctx.node.guestBridge.interface);
    try {
      // -daemonize: returns once the VM is set up and the pidfile is written.
      await run(cmd, cmdArgs);
    } catch (e) {
      if (this.nic === 'tap') await this.removeTap(guest.name);
      const hint = /bridge\.conf|access denied by acl/i.test(String(e))
        ? ` (qemu-bridge-helper needs "allow ${ctx.node.guestBridge.interface}" in /etc/qemu/bridge.conf)`
        : '';
      throw new Error(`starting qemu guest ${guest.name} failed${hint}: ${(e as Error).message}`);
    }
    const pid = await this.dir.readPid(guest.name);
    const pidStart = pid === undefined ? undefined : processStartTime(pid);
    if (pid === undefined || pidStart === undefined) {
      throw new Error(`qemu guest ${guest.name} exited right after start (pidfile ${this.dir.file(guest.name, '.pid')})`);
    }
    await this.dir.writeMeta({
      name: guest.name,
      driver: 'qemu',
      fingerprint: fp,
      mac: guest.mac,
      startedAt: new Date().toISOString(),
      pid,
      pidStart,
      ...(incoming && { incoming: { host: incoming.host, port: incoming.port, attempt: 'attempt' in incoming ? incoming.attempt : 0, revision: 'revision' in incoming ? incoming.revision : '' } }),
    });
  }

  /** The whole command: qemu, in the node namespace when there is one, in a scope under systemd. */
  command(guest: GuestSpec, args: string[]): [string, string[]] {
    const [cmd, cmdArgs] = this.netns ? inNs(this.netns, this.binary, args) : [this.binary, args];
    if (!this.systemd) return [cmd, cmdArgs];
    const [sd, ...sdArgs] = systemdRunArgs(guest);
    return [sd, [...sdArgs, cmd, ...cmdArgs]];
  }

  private async addTap(name: string, mac: string, bridge: string): Promise<void> {
    const tap = guestTapName(name);
    const ip = (args: string[]) => (this.netns ? runIn(this.netns, 'ip', args) : run('ip', args));
    await this.removeTap(name); // a leftover of a crashed qemu
    await ip(['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    // A bridge takes the lowest MAC of its ports: a tap with a random, lower MAC would change the
    // guest bridge's MAC, and every guest's ARP entry for the gateway would go stale. Like
    // libvirt: the guest's MAC with a first byte of 0xfe, above any real NIC.
    await ip(['link', 'set', tap, 'address', tapMac(mac)]);
    await ip(['link', 'set', tap, 'master', bridge]);
    await ip(['link', 'set', tap, 'up']);
  }

  private async removeTap(name: string): Promise<void> {
    const args = ['link', 'del', guestTapName(name)];
    await (this.netns ? runInUnchecked(this.netns, 'ip', args) : runUnchecked('ip', args));
  }

  async list(): Promise<RunningGuest[]> {
    const names = new Set<string>();
    for (const suffix of [...FILES, '.meta.json']) for (const n of await this.dir.names(suffix)) names.add(n);
    const out: RunningGuest[] = [];
    for (const name of [...names].sort()) {
      const g = await this.inspect(name);
      if (g) out.push(g);
    }
    return out;
  }

  private async inspect(name: string): Promise<RunningGuest | undefined> {
    const meta = await this.dir.readMeta(name);
    const proc = await this.findProcess(name, meta);
    if (meta) {
      // Ours, but the process is gone without stop(): it crashed or was killed.
      if (!proc) return { name, mac: meta.mac, fingerprint: meta.fingerprint, state: 'crashed', managed: true };
      const status = await this.qmpStatus(name);
      const state = status === undefined ? 'unknown' : stateFromQmpStatus(status);
      const incoming = status === 'inmigrate' && meta.incoming ? { incoming: meta.incoming } : {};
      return { name, mac: meta.mac, fingerprint: meta.fingerprint, state, pid: proc.pid, managed: true, ...incoming };
    }
    // Not started by us: report it if it is alive (process or answering QMP socket).
    const state = await this.queryState(name);
    if (!proc && state === undefined) return undefined; // stale files of a qemu that is gone
    const mac = proc ? identityFromCmdline(processCmdline(proc.pid) ?? []).mac : undefined;
    return { name, mac, state: state ?? 'unknown', pid: proc?.pid, managed: false };
  }

  /**
   * The live qemu process of a guest: the PID recorded in the metadata (checked by start time) or
   * in the pidfile (checked by its command line naming this guest).
   */
  private async findProcess(name: string, meta: GuestMeta | undefined): Promise<{ pid: number; start: string } | undefined> {
    if (meta?.pid !== undefined && meta.pidStart !== undefined) {
      return processAlive(meta.pid, meta.pidStart) ? { pid: meta.pid, start: meta.pidStart } : undefined;
    }
    const pid = await this.dir.readPid(name);
    if (pid === undefined || identityFromCmdline(processCmdline(pid) ?? []).name !== name) return undefined;
    const start = processStartTime(pid);
    return start !== undefined && processAlive(pid, start) ? { pid, start } : undefined;
  }

  /** State over QMP; undefined when the socket does not answer. */
  private async queryState(name: string): Promise<GuestState | undefined> {
    const status = await this.qmpStatus(name);
    return status === undefined ? undefined : stateFromQmpStatus(status);
  }

  /** QMP's own status word (running, inmigrate, postmigrate, ...); undefined when the socket does not answer. */
  private async qmpStatus(name: string): Promise<string | undefined> {
    let qmp: Qmp | undefined;
    try {
      qmp = await Qmp.connect(this.dir.file(name, '.qmp'), 2_000);
      const st = await qmp.execute<{ status: string }>('query-status');
      return st.status;
    } catch {
      return undefined;
    } finally {
      qmp?.close();
    }
  }

  /**
   * Live-migrate a running guest to a destination started with startIncoming(), over QMP
   * (`migrate`, then `query-migrate` until it completes). On success the source qemu, now paused
   * in 'postmigrate', is quit and its files and tap removed. On failure or timeout the migration
   * is cancelled, the guest keeps running here (resumed if qemu left it paused) and
   * MigrationFailed says why.
   */
  async migrateOut(name: string, to: MigrationTarget, opts: { timeoutMs: number }): Promise<MigrationResult> {
    const proc = await this.findProcess(name, await this.dir.readMeta(name));
    if (!proc) throw new MigrationFailed(`qemu guest ${name} does not run here; nothing to migrate`);
    const uri = migrationUri(to);
    let qmp: Qmp | undefined;
    type MigrateInfo = { status: string; 'total-time'?: number; downtime?: number; 'error-desc'?: string };
    let info: MigrateInfo | undefined;
    try {
      qmp = await Qmp.connect(this.dir.file(name, '.qmp'), 5_000);
      await qmp.execute('migrate-set-parameters', { 'downtime-limit': MIGRATION_DOWNTIME_LIMIT_MS });
      await qmp.execute('migrate', { uri });
      const deadline = Date.now() + opts.timeoutMs;
      for (;;) {
        info = await qmp.execute<MigrateInfo>('query-migrate');
        if (['completed', 'failed', 'cancelled'].includes(info.status)) break;
        if (Date.now() > deadline) {
          await qmp.execute('migrate_cancel');
          info = { status: 'failed', 'error-desc': `did not complete within ${opts.timeoutMs} ms (cancelled)` };
          break;
        }
        await new Promise((r) => setTimeout(r, MIGRATION_POLL_MS));
      }
      if (info.status !== 'completed') {
        // The source goes on: make sure its CPUs run again.
        const { status } = await qmp.execute<{ status: string }>('query-status');
        if (status !== 'running') await qmp.execute('cont').catch(() => undefined);
        throw new MigrationFailed(`live migration of ${name} to ${uri} ${info.status}: ${info['error-desc'] ?? 'no reason given'}; it still runs here`);
      }
    } catch (e) {
      if (e instanceof MigrationFailed) throw e;
      throw new MigrationFailed(`live migration of ${name} to ${uri} failed: ${(e as Error).message}; it still runs here`);
    } finally {
      qmp?.close();
    }
    // Handed over: the paused source goes away without a guest shutdown.
    await this.stop(name, { timeoutMs: 0 });
    return { totalMs: info['total-time'] ?? 0, downtimeMs: info.downtime ?? 0 };
  }

  /**
   * ACPI power button (system_powerdown), wait up to timeoutMs for the guest to power off
   * (SHUTDOWN event), then `quit`. 'forced' when the guest did not power off in time or QMP
   * did not answer; SIGKILL by PID is the last resort.
   */
  async stop(name: string, opts: { timeoutMs: number }): Promise<StopResult> {
    const proc = await this.findProcess(name, await this.dir.readMeta(name));
    if (!proc) {
      if ((await this.queryState(name)) !== undefined) {
        throw new Error(`qemu guest ${name} answers on QMP but has no identifiable process (no pidfile); not stopping it`);
      }
      if (this.nic === 'tap') await this.removeTap(name);
      await this.dir.remove(name, FILES); // leftovers of a qemu that is gone
      return 'clean';
    }
    let result: StopResult = 'forced';
    let quitSent = false;
    let qmp: Qmp | undefined;
    try {
      qmp = await Qmp.connect(this.dir.file(name, '.qmp'), 2_000);
      const { status } = await qmp.execute<{ status: string }>('query-status');
      if (status === 'shutdown') {
        result = 'clean'; // already powered off
      } else if (opts.timeoutMs > 0) {
        await qmp.execute('system_powerdown');
        const ev = await qmp.waitForEvent(['SHUTDOWN'], opts.timeoutMs);
        if (ev !== 'timeout') result = 'clean';
      }
      await qmp.quit();
      quitSent = true;
    } catch {
      // QMP unusable: signals below.
    } finally {
      qmp?.close();
    }
    if (!quitSent || !(await waitForExit(proc.pid, proc.start, QUIT_GRACE_MS))) {
      result = 'forced';
      await terminate(proc.pid, proc.start, QUIT_GRACE_MS); // SIGTERM, then SIGKILL
    }
    if (this.nic === 'tap') await this.removeTap(name);
    await this.dir.remove(name, FILES);
    return result;
  }
}
