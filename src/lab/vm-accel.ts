// KVM or TCG for the lab's VMs, decided by booting, not by /dev/kvm existing: on nested
// virtualisation a Linux kernel can hang under KVM right after "Probing EDD" and never print
// (FACTS), while a multiboot toy kernel runs. The probe boots the lab image under KVM without a
// NIC and waits for its /init to say it is up; TCG otherwise. The verdict is cached in the image
// cache root per guest kernel and host kernel (what decides it), so labs after the first, and new
// images of the same kernel, do not pay for the probe.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import path from 'node:path';
import { kvmUsable, type Accel } from '../guests/qemu.js';
import { run } from '../netns/netns.js';
import { processStartTime, terminate, waitUntil } from '../proc/process.js';
import type { VmImage } from './vm-image.js';

/** A working KVM boots the lab image to /init in 1-3 s; a hanging one never does. */
const PROBE_BOOT_MS = 20_000;

/** Pure: the console line the lab's /init prints once the guest is up. */
export function initUp(consoleText: string): boolean {
  return /cgw-init: \S+ up at /.test(consoleText);
}

export interface AccelVerdict {
  accel: Accel;
  why: string;
  /** True when it came from the cache. */
  cached: boolean;
}

export async function labAccel(image: VmImage, opts: { qemu?: string } = {}): Promise<AccelVerdict> {
  if (!kvmUsable()) return { accel: 'tcg', why: '/dev/kvm cannot be opened', cached: false };
  const cache = path.join(path.dirname(image.dir), `accel-${image.kernelVersion}-on-${release()}.json`);
  if (existsSync(cache)) return { ...(JSON.parse(await readFile(cache, 'utf8')) as Omit<AccelVerdict, 'cached'>), cached: true };
  const booted = await probeBoot(image, opts.qemu ?? 'qemu-system-x86_64');
  const verdict = booted
    ? { accel: 'kvm' as const, why: `the lab kernel booted under KVM within ${PROBE_BOOT_MS} ms` }
    : { accel: 'tcg' as const, why: `the lab kernel did not reach /init under KVM within ${PROBE_BOOT_MS} ms (nested virtualisation?)` };
  await writeFile(cache, `${JSON.stringify(verdict)}\n`);
  return { ...verdict, cached: false };
}

async function probeBoot(image: VmImage, qemu: string): Promise<boolean> {
  const dir = await mkdtemp(path.join(image.dir, '.probe-'));
  const consoleFile = path.join(dir, 'console');
  const pidFile = path.join(dir, 'pid');
  let pid: number | undefined;
  try {
    await run(qemu, [
      ...['-enable-kvm', '-cpu', 'host,-arch-capabilities', '-m', '128', '-smp', '1', '-nic', 'none'],
      ...['-kernel', image.kernel, '-initrd', image.initrd, '-append', 'console=ttyS0 quiet panic=-1 cgw.name=kvm-probe cgw.ip=192.0.2.1/32 cgw.gw=192.0.2.1'],
      ...['-display', 'none', '-serial', `file:${consoleFile}`, '-no-reboot', '-daemonize', '-pidfile', pidFile],
    ]);
    pid = Number.parseInt(await readFile(pidFile, 'utf8'), 10);
    return await waitUntil(async () => initUp(await readFile(consoleFile, 'utf8').catch(() => '')), PROBE_BOOT_MS, 250);
  } catch {
    return false;
  } finally {
    if (pid) await terminate(pid, processStartTime(pid), 2_000);
    await rm(dir, { recursive: true, force: true });
  }
}
