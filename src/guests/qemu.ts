// KVM guests run by plain qemu-system-x86_64, without libvirt.
//
// Per guest the runtime directory holds:
//   <name>.pid        written by qemu (-pidfile)
//   <name>.qmp        the QMP control socket
//   <name>.meta.json  written by us after a successful start: the fingerprint it was started with.
// A qemu with a pidfile or QMP socket but no metadata was not started by cgw-sync (by hand, or by
// a run that crashed before writing it): list() reports it with managed=false and no fingerprint.
import { closeSync, constants, openSync } from 'node:fs';
import { join } from 'node:path';
import type { GuestSpec, NodeSpec } from '../state/types.js';
import { inNs, run } from '../netns/netns.js';
import {
  assertSafeGuestName,
  desiredFingerprint,
  prepareStart,
  type GuestDriver,
  type GuestState,
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
}

const FILES = ['.pid', '.qmp'];
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

/** Pure: the qemu command line for a guest (the design's KVM command, plus -no-shutdown). */
export function qemuArgs(guest: GuestSpec, node: NodeSpec, opts: { runDir: string; accel: Accel }): string[] {
  const boot = guest.boot ?? {};
  const args = ['-name', guest.name, '-m', String(guest.resources.memoryMiB), '-smp', String(guest.resources.vcpus)];
  // -cpu host / -cpu max crash on this kind of machine (MSR 0x10a); without arch-capabilities it works.
  if (opts.accel === 'kvm') args.unshift('-enable-kvm', '-cpu', 'host,-arch-capabilities');
  else args.unshift('-accel', 'tcg');
  if (boot.disk) args.push('-drive', `file=${optValue(boot.disk)},if=virtio`);
  if (boot.kernel) args.push('-kernel', boot.kernel);
  if (boot.initrd) args.push('-initrd', boot.initrd);
  if (boot.append) args.push('-append', boot.append);
  args.push(
    '-nic',
    `bridge,br=${node.guestBridge.interface},model=virtio-net-pci,mac=${guest.mac}`,
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
  return args;
}

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

export class QemuDriver implements GuestDriver {
  readonly kind = 'qemu' as const;
  readonly dir: RuntimeDir;
  private readonly netns?: string;
  private readonly accelOpt: 'auto' | Accel;
  private readonly binary: string;
  private readonly guard: GuestGuard;

  constructor(opts: QemuDriverOptions = {}) {
    this.guard = opts.guard ?? policyGuard();
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
    assertSafeGuestName(guest.name);
    await assertGuestAllowed(guest, ctx.node, this.guard);
    const fp = desiredFingerprint(guest, ctx.node);
    if (await prepareStart(this, guest.name, fp)) return;
    await this.dir.ensure();
    const args = qemuArgs(guest, ctx.node, { runDir: this.dir.dir, accel: this.accel() });
    const [cmd, cmdArgs] = this.netns ? inNs(this.netns, this.binary, args) : [this.binary, args];
    try {
      // -daemonize: returns once the VM is set up and the pidfile is written.
      await run(cmd, cmdArgs);
    } catch (e) {
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
    });
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
      const state = (await this.queryState(name)) ?? 'unknown';
      return { name, mac: meta.mac, fingerprint: meta.fingerprint, state, pid: proc.pid, managed: true };
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
    let qmp: Qmp | undefined;
    try {
      qmp = await Qmp.connect(this.dir.file(name, '.qmp'), 2_000);
      const st = await qmp.execute<{ status: string }>('query-status');
      return stateFromQmpStatus(st.status);
    } catch {
      return undefined;
    } finally {
      qmp?.close();
    }
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
    await this.dir.remove(name, FILES);
    return result;
  }
}
