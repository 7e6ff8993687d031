// The qemu guest driver against a real qemu-system-x86_64 (KVM when /dev/kvm works, TCG otherwise).
// qemu runs inside a network namespace this test creates, with a bridge `guestbr0` there, so the
// NIC (qemu-bridge-helper tap) never appears in the root namespace. No disk image is needed: a VM
// without a kernel sits in the BIOS, which ignores ACPI powerdown (-> forced stop); for the graceful
// path the test boots a 85-byte multiboot kernel that powers off on the ACPI power button.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addBridge, createNamespace, deleteNamespace, runIn } from '../src/netns/netns.js';
import { desiredFingerprint } from '../src/guests/driver.js';
import { Qmp } from '../src/guests/qmp.js';
import { DEFAULT_GUEST_POLICY, policyGuard } from '../src/guests/policy.js';
import { MigrationFailed, QemuDriver, identityFromCmdline, kvmUsable, qemuArgs, stateFromQmpStatus } from '../src/guests/qemu.js';
import { processAlive, processCmdline, waitForExit, waitUntil } from '../src/proc/process.js';
import type { GuestSpec, NodeSpec } from '../src/state/types.js';

const id = `${process.pid % 100000}`;
const ns = `cgwq${id}`;
const src = { file: 'test', line: 1, column: 1 };
const node: NodeSpec = {
  name: 'node1',
  uplink: { interface: 'eth0', publicIP: '192.0.2.1' },
  guestBridge: { interface: 'guestbr0', nodeIP: '10.5.5.251' },
  trunks: [],
  hypervisor: 'qemu',
  source: src,
};
const ctx = { node, cluster: { guestSubnet: '10.5.5.0/24', gatewayIP: '10.5.5.254' } };
/** The test's kernels are written to its runtime folder: that is the node's image folder here. */
const imagesInRunDir = () => policyGuard({ ...DEFAULT_GUEST_POLICY, imageDirs: [runDir] });

function guest(name: string, memoryMiB = 64): GuestSpec {
  return {
    name,
    node: 'node1',
    ip: '10.5.5.10',
    mac: '52:54:00:05:05:0a',
    resources: { memoryMiB, vcpus: 1 },
    restartOnChange: false,
    source: src,
  };
}

// qemu-bridge-helper reads only /etc/qemu/bridge.conf. Created here only if absent, removed after.
const BRIDGE_CONF = '/etc/qemu/bridge.conf';
let createdBridgeConf = false;
let createdEtcQemu = false;

let runDir: string;
let driver: QemuDriver;
const handPids: number[] = []; // qemu processes this test started outside the driver

async function tapsOnBridge(): Promise<string[]> {
  const r = await runIn(ns, 'ip', ['-j', 'link', 'show', 'master', 'guestbr0']);
  return (JSON.parse(r.stdout || '[]') as Array<{ ifname: string }>).map((l) => l.ifname);
}

/**
 * A tiny multiboot "kernel" that behaves like an OS on the ACPI power button: it finds the PIIX4
 * power-management I/O base (PCI 00:01.3, register 0x40), enables the power-button event, polls
 * its status bit and then powers off (SLP_EN with SLP_TYP 0 in PM1_CNT). Lets the test exercise
 * the graceful stop path without a disk image. Loaded by qemu -kernel at 1 MiB, 32-bit mode.
 */
function powerButtonKernel(): Buffer {
  const MAGIC = 0x1badb002;
  const FLAGS = 0x00010000; // addresses below are valid (not an ELF file)
  const BASE = 0x100000;
  const code = [
    0xb8, 0x40, 0x0b, 0x00, 0x80, //        mov eax, 0x80000b40  ; PCI config 00:01.3 reg 0x40
    0x66, 0xba, 0xf8, 0x0c, 0xef, //        mov dx, 0xcf8 ; out dx, eax
    0x66, 0xba, 0xfc, 0x0c, 0xed, //        mov dx, 0xcfc ; in eax, dx
    0x25, 0xc0, 0xff, 0x00, 0x00, //        and eax, 0xffc0      ; PM I/O base
    0x89, 0xc6, //                          mov esi, eax
    0x8d, 0x56, 0x02, 0x66, 0xb8, 0x00, 0x01, 0x66, 0xef, // PM1_EN (base+2) = PWRBTN_EN
    0x89, 0xf2, 0x66, 0xed, 0x66, 0xa9, 0x00, 0x01, 0x74, 0xf6, // wait: until PM1_STS & PWRBTN_STS
    0x8d, 0x56, 0x04, 0x66, 0xb8, 0x00, 0x20, 0x66, 0xef, // PM1_CNT (base+4) = SLP_EN -> power off
    0xf4, 0xeb, 0xfd, //                    hlt ; jmp hlt
  ];
  const header = Buffer.alloc(32);
  for (const [i, w] of [MAGIC, FLAGS, -(MAGIC + FLAGS), BASE, BASE, 0, 0, BASE + 32].entries()) header.writeUInt32LE(w >>> 0, i * 4);
  return Buffer.concat([header, Buffer.from(code)]);
}
/** The power-button kernel's polling loop is at these guest addresses. */
const LOOP_START = 0x100020 + 31; // header (32 bytes) at 0x100000, then 31 bytes of setup
const LOOP_END = LOOP_START + 10;

/** Wait until the guest CPU runs the polling loop (it has booted and enabled the power button). */
async function waitForPowerButtonLoop(qmpPath: string): Promise<boolean> {
  return waitUntil(async () => {
    const qmp = await Qmp.connect(qmpPath);
    try {
      const regs = await qmp.execute<string>('human-monitor-command', { 'command-line': 'info registers' });
      const eip = Number.parseInt(regs.match(/EIP=([0-9a-f]+)/)?.[1] ?? '0', 16);
      return eip >= LOOP_START && eip < LOOP_END;
    } finally {
      qmp.close();
    }
  }, 45_000, 100);
}

beforeAll(async () => {
  if (!existsSync(BRIDGE_CONF)) {
    if (!existsSync('/etc/qemu')) {
      await mkdir('/etc/qemu');
      createdEtcQemu = true;
    }
    await writeFile(BRIDGE_CONF, 'allow guestbr0\n', { flag: 'wx' });
    createdBridgeConf = true;
  } else if (!/^\s*allow\s+(guestbr0|all)\s*$/m.test(await readFile(BRIDGE_CONF, 'utf8'))) {
    throw new Error(`${BRIDGE_CONF} exists but does not allow guestbr0; not changing it`);
  }
  await createNamespace(ns);
  await addBridge(ns, 'guestbr0');
  runDir = await mkdtemp(join(tmpdir(), 'cgw-qemu-'));
  driver = new QemuDriver({ runDir, netns: ns, guard: imagesInRunDir() });
});

afterAll(async () => {
  try {
    if (driver) for (const g of await driver.list()) await driver.stop(g.name, { timeoutMs: 0 });
    for (const pid of handPids) {
      if (processAlive(pid)) process.kill(pid, 'SIGKILL');
      await waitForExit(pid, undefined, 5_000);
    }
  } finally {
    await deleteNamespace(ns);
    if (runDir) await rm(runDir, { recursive: true, force: true });
    if (createdBridgeConf) await rm(BRIDGE_CONF, { force: true });
    if (createdEtcQemu) await rmdir('/etc/qemu').catch(() => undefined);
  }
});

describe('qemu command line and parsing (pure)', () => {
  it('builds the design command with KVM and the TCG fallback', () => {
    const g = { ...guest('web1', 512), boot: { disk: '/var/lib/img/a,b.raw', kernel: '/k', initrd: '/i', append: 'console=ttyS0' } };
    const kvm = qemuArgs(g, node, { runDir: '/run/x', accel: 'kvm' });
    expect(kvm.slice(0, 3)).toEqual(['-enable-kvm', '-cpu', 'host,-arch-capabilities']);
    expect(kvm).toContain('-daemonize');
    expect(kvm.join(' ')).toContain('-name web1 -m 512 -smp 1 -drive file=/var/lib/img/a,,b.raw,if=virtio -kernel /k -initrd /i -append console=ttyS0');
    expect(kvm.join(' ')).toContain('-nic bridge,br=guestbr0,model=virtio-net-pci,mac=52:54:00:05:05:0a');
    expect(kvm.join(' ')).toContain('-pidfile /run/x/web1.pid -qmp unix:/run/x/web1.qmp,server=on,wait=off -display none');
    const tcg = qemuArgs(g, node, { runDir: '/run/x', accel: 'tcg' });
    expect(tcg.slice(0, 2)).toEqual(['-accel', 'tcg']);
    expect(tcg).not.toContain('-enable-kvm');
  });

  it('maps QMP status and reads identity from a command line', () => {
    expect(stateFromQmpStatus('running')).toBe('running');
    expect(stateFromQmpStatus('paused')).toBe('paused');
    expect(stateFromQmpStatus('shutdown')).toBe('shutdown');
    expect(stateFromQmpStatus('guest-panicked')).toBe('crashed');
    expect(identityFromCmdline(['qemu', '-name', 'guest=web1,debug-threads=on', '-nic', 'bridge,mac=52:54:00:AA:bb:cc'])).toEqual({
      name: 'web1',
      mac: '52:54:00:aa:bb:cc',
    });
  });
});

describe(`qemu driver with a real qemu (${kvmUsable() ? 'KVM' : 'TCG'})`, () => {
  const name = `vm${id}`;
  let firstPid: number | undefined;

  it('starts a guest that list() reports running, managed, with the desired fingerprint', async () => {
    await driver.start(guest(name), ctx);
    const all = await driver.list();
    expect(all).toHaveLength(1);
    const g = all[0];
    expect(g).toMatchObject({ name, mac: '52:54:00:05:05:0a', state: 'running', managed: true });
    expect(g.fingerprint).toBe(desiredFingerprint(guest(name), node));
    expect(g.pid && processAlive(g.pid)).toBe(true);
    expect(processCmdline(g.pid!)).toContain(driver.accel() === 'kvm' ? '-enable-kvm' : 'tcg');
    // Its NIC is a tap on the namespace's guestbr0.
    expect(await tapsOnBridge()).toHaveLength(1);
    firstPid = g.pid;
  });

  it('a second identical start is a no-op; a different configuration is refused', async () => {
    await driver.start(guest(name), ctx);
    const [g] = await driver.list();
    expect(g.pid).toBe(firstPid);
    await expect(driver.start(guest(name, 96), ctx)).rejects.toThrow(/another configuration/);
    expect(desiredFingerprint(guest(name, 96), node)).not.toBe(g.fingerprint);
  });

  it('reports a paused guest', async () => {
    const qmp = await Qmp.connect(join(runDir, `${name}.qmp`));
    try {
      await qmp.execute('stop');
    } finally {
      qmp.close();
    }
    expect((await driver.list())[0].state).toBe('paused');
    const qmp2 = await Qmp.connect(join(runDir, `${name}.qmp`));
    try {
      await qmp2.execute('cont');
    } finally {
      qmp2.close();
    }
    expect((await driver.list())[0].state).toBe('running');
  });

  it('stop: the BIOS ignores ACPI powerdown, so after the timeout it is forced; nothing is left', async () => {
    const t0 = Date.now();
    expect(await driver.stop(name, { timeoutMs: 1_000 })).toBe('forced');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_000);
    expect(processAlive(firstPid!)).toBe(false);
    expect(await driver.list()).toEqual([]);
    expect(existsSync(join(runDir, `${name}.pid`))).toBe(false);
    expect(existsSync(join(runDir, `${name}.meta.json`))).toBe(false);
    expect(await tapsOnBridge()).toEqual([]);
    // Stopping an absent guest is fine.
    expect(await driver.stop(name, { timeoutMs: 100 })).toBe('clean');
  });

  it('a guest whose qemu died is reported crashed, and start() replaces it', async () => {
    await driver.start(guest(name), ctx);
    const [g] = await driver.list();
    process.kill(g.pid!, 'SIGKILL'); // the qemu this test just started through the driver
    expect(await waitForExit(g.pid!, undefined, 5_000)).toBe(true);
    const [crashed] = await driver.list();
    expect(crashed).toMatchObject({ name, state: 'crashed', managed: true });
    expect(crashed.pid).toBeUndefined();
    await driver.start(guest(name), ctx);
    const [again] = await driver.list();
    expect(again.state).toBe('running');
    expect(again.pid).not.toBe(g.pid);
    expect(await driver.stop(name, { timeoutMs: 0 })).toBe('forced');
    expect(await driver.list()).toEqual([]);
  });

  it('the TCG fallback starts and stops the same way', async () => {
    const tcg = new QemuDriver({ runDir, netns: ns, accel: 'tcg', guard: imagesInRunDir() });
    await tcg.start(guest(`tcg${id}`), ctx);
    const [g] = await tcg.list();
    expect(g).toMatchObject({ name: `tcg${id}`, state: 'running', managed: true });
    expect(processCmdline(g.pid!)).toEqual(expect.arrayContaining(['-accel', 'tcg']));
    expect(processCmdline(g.pid!)).not.toContain('-enable-kvm');
    expect(await tcg.stop(`tcg${id}`, { timeoutMs: 0 })).toBe('forced');
    expect(processAlive(g.pid!)).toBe(false);
  });

  it('a live-migration destination is listed paused with its listener; stopIncoming quits it, and leaves a running guest alone', async () => {
    await runIn(ns, 'ip', ['link', 'set', 'lo', 'up']);
    const dest = `in${id}`;
    const listen = { host: '127.0.0.1', port: 47123, attempt: 1, revision: 'r1' };
    await driver.startIncoming(guest(dest), ctx, listen);
    const [waiting] = await driver.list();
    expect(waiting).toMatchObject({ name: dest, state: 'paused', managed: true, incoming: listen });
    expect(processCmdline(waiting.pid!)).toEqual(expect.arrayContaining(['-incoming', 'tcp:127.0.0.1:47123']));
    expect(await driver.stopIncoming(dest)).toBe(true);
    expect(processAlive(waiting.pid!)).toBe(false);
    expect(await driver.list()).toEqual([]);

    await driver.start(guest(name), ctx);
    const [running] = await driver.list();
    expect(running.incoming).toBeUndefined();
    expect(await driver.stopIncoming(name)).toBe(false);
    expect(processAlive(running.pid!)).toBe(true);
    expect(await driver.stop(name, { timeoutMs: 0 })).toBe('forced');
  });

  it('live migration between two nodes\' drivers: refused, it fails and the guest still runs here; to a waiting destination, the source is gone and the destination runs it', async () => {
    await runIn(ns, 'ip', ['link', 'set', 'lo', 'up']);
    const mig = `mig${id}`;
    const destDir = await mkdtemp(join(tmpdir(), 'cgw-qemu-dest-'));
    const dest = new QemuDriver({ runDir: destDir, netns: ns, guard: imagesInRunDir() });
    try {
      await driver.start(guest(mig), ctx);
      const [source] = await driver.list();
      // Nothing listens there: the connection is refused.
      const refused = { host: '127.0.0.1', port: 47200 };
      await expect(driver.migrateOut(mig, refused, { timeoutMs: 20_000 })).rejects.toThrow(MigrationFailed);
      await expect(driver.migrateOut(mig, refused, { timeoutMs: 20_000 })).rejects.toThrow(/failed.*still runs here/);
      expect(await driver.list()).toMatchObject([{ name: mig, state: 'running', pid: source.pid }]);

      const listen = { host: '127.0.0.1', port: 47201, attempt: 0, revision: 'r1' };
      await dest.startIncoming(guest(mig), ctx, listen);
      const result = await driver.migrateOut(mig, listen, { timeoutMs: 60_000 });
      expect(result.totalMs).toBeGreaterThan(0);
      expect(processAlive(source.pid!)).toBe(false);
      expect(await driver.list()).toEqual([]);
      const [moved] = await dest.list();
      expect(moved).toMatchObject({ name: mig, state: 'running', managed: true, fingerprint: source.fingerprint });
      expect(moved.incoming).toBeUndefined();
      expect(await dest.stopIncoming(mig)).toBe(false); // it runs the guest now: left alone
    } finally {
      for (const g of await dest.list()) await dest.stop(g.name, { timeoutMs: 0 });
      await rm(destDir, { recursive: true, force: true });
    }
  }, 90_000);

  it('stop is clean when the guest powers off on the ACPI power button', async () => {
    const kernel = join(runDir, 'powerbutton.bin');
    await writeFile(kernel, powerButtonKernel());
    const g = { ...guest(`pb${id}`), boot: { kernel } };
    await driver.start(g, ctx);
    expect(await waitForPowerButtonLoop(join(runDir, `${g.name}.qmp`))).toBe(true);
    const [running] = await driver.list();
    const t0 = Date.now();
    expect(await driver.stop(g.name, { timeoutMs: 20_000 })).toBe('clean');
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(processAlive(running.pid!)).toBe(false);
    expect(await driver.list()).toEqual([]);
  }, 90_000);

  it('a guest that powered off is reported shutdown, and start() boots it again', async () => {
    const kernel = join(runDir, 'powerbutton.bin');
    await writeFile(kernel, powerButtonKernel());
    const g = { ...guest(`pb${id}`), boot: { kernel } };
    await driver.start(g, ctx);
    const qmpPath = join(runDir, `${g.name}.qmp`);
    expect(await waitForPowerButtonLoop(qmpPath)).toBe(true);
    const qmp = await Qmp.connect(qmpPath);
    try {
      await qmp.execute('system_powerdown'); // the power button, pressed from outside the driver
      expect(await qmp.waitForEvent(['SHUTDOWN'], 20_000)).toMatchObject({ event: 'SHUTDOWN', data: { guest: true } });
    } finally {
      qmp.close();
    }
    const [off] = await driver.list();
    expect(off).toMatchObject({ name: g.name, state: 'shutdown', managed: true });
    expect(processAlive(off.pid!)).toBe(true); // -no-shutdown: the process stays
    await driver.start(g, ctx);
    const [again] = await driver.list();
    expect(again.state).toBe('running');
    expect(again.pid).not.toBe(off.pid);
    expect(processAlive(off.pid!)).toBe(false);
    expect(await driver.stop(g.name, { timeoutMs: 0 })).toBe('forced');
  }, 90_000);

  it('detects a qemu started by hand (pidfile and QMP socket, no metadata)', async () => {
    const hand = `hand${id}`;
    const args = ['-accel', 'tcg', '-name', hand, '-m', '32', '-nic', 'none', '-display', 'none', '-daemonize'];
    args.push('-pidfile', join(runDir, `${hand}.pid`), '-qmp', `unix:${join(runDir, `${hand}.qmp`)},server=on,wait=off`);
    await execa('qemu-system-x86_64', args);
    const pid = Number((await readFile(join(runDir, `${hand}.pid`), 'utf8')).trim());
    handPids.push(pid);

    const [g] = (await driver.list()).filter((x) => x.name === hand);
    expect(g).toMatchObject({ name: hand, state: 'running', managed: false, pid });
    expect(g.fingerprint).toBeUndefined();
    await expect(driver.start(guest(hand), ctx)).rejects.toThrow(/not started by cgw-sync/);
    expect(processAlive(pid)).toBe(true); // refused start left it alone

    // The driver can still stop it (quit over QMP), by the PID its pidfile names.
    expect(await driver.stop(hand, { timeoutMs: 0 })).toBe('forced');
    expect(processAlive(pid)).toBe(false);
    expect(await driver.list()).toEqual([]);
  });
});
