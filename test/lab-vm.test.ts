// The lab's VMs without booting one (the e2e test boots them: test/e2e-lab-qemu.test.ts): the image
// builder's parsers and the real cached image's contents, the serial shell framing, busybox arping
// output, the lab state and agent config for qemu guests, and the qemu driver's command: tap NIC,
// serial ports, and the systemd scope (built as data and detected; systemd is not PID 1 here).
import { gunzipSync } from 'node:zlib';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { debFilesFrom, ensureVmImage, kernelPackageFrom, libsFromLdd, moduleClosure, vmAppend, VM_MODULES } from '../src/lab/vm-image.js';
import { framedRequest, shellQuote } from '../src/lab/guest-exec.js';
import { initUp } from '../src/lab/vm-accel.js';
import { parseArpingMacs } from '../src/lab/probes.js';
import { LAB_VM_MEMORY_MIB, labAdjustments } from '../src/lab/repo.js';
import { agentConfigYaml } from '../src/lab/lab.js';
import { planLab } from '../src/lab/plan.js';
import { planChecks } from '../src/lab/check.js';
import { loadAgentConfig } from '../src/agent/config.js';
import { loadStateOrThrow } from '../src/state/index.js';
import { QemuDriver, guestTapName, guestUnitName, migrationUri, qemuArgs, systemdBooted, systemdRunArgs, tapMac } from '../src/guests/qemu.js';
import type { GuestSpec, NodeSpec } from '../src/state/types.js';

const STATE_DIR = join(import.meta.dirname, '..', 'state-example');

async function readState(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of ['cluster.yaml', 'nodes/node1.yaml', 'nodes/node2.yaml', 'guests/guest1.yaml', 'guests/guest2.yaml']) out[f] = await readFile(join(dir, f), 'utf8');
  return out;
}

/** Names in a newc cpio archive (what `busybox cpio -o -H newc` writes). */
function cpioNames(archive: Buffer): string[] {
  const names: string[] = [];
  let off = 0;
  const pad4 = (n: number) => (n + 3) & ~3;
  while (off + 110 <= archive.length && archive.toString('ascii', off, off + 6) === '070701') {
    const field = (i: number) => Number.parseInt(archive.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const fileSize = field(6);
    const nameSize = field(11);
    const name = archive.toString('utf8', off + 110, off + 110 + nameSize - 1);
    if (name === 'TRAILER!!!') break;
    names.push(name.replace(/^\.\//, ''));
    off = pad4(pad4(off + 110 + nameSize) + fileSize);
  }
  return names;
}

describe('VM image builder (pure parts)', () => {
  it('finds the versioned kernel package and the .deb file names apt would download', () => {
    expect(kernelPackageFrom('linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n')).toBe('linux-image-6.1.0-57-amd64');
    expect(() => kernelPackageFrom('linux-image-amd64\n')).toThrow(/cannot find the kernel package/);
    const uris = [
      "'http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb' busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb 928188 SHA256:ab",
      "'http://deb.debian.org/debian-security/pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb' linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb 70591024 SHA256:cd",
    ].join('\n');
    expect(debFilesFrom(uris)).toEqual(['busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb', 'linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb']);
  });

  it('collects shared libraries from ldd and modules with their dependencies from modules.dep', () => {
    const ldd = '\tlinux-vdso.so.1 (0x00007ffd)\n\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x1)\n\t/lib64/ld-linux-x86-64.so.2 (0x2)\n';
    expect(libsFromLdd(ldd)).toEqual(['/lib/x86_64-linux-gnu/libssl.so.3', '/lib64/ld-linux-x86-64.so.2']);
    const dep = [
      'kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko',
      'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko',
      'kernel/net/core/failover.ko:',
      'kernel/drivers/net/e1000.ko:',
    ].join('\n');
    expect(moduleClosure(dep, ['virtio-net'])).toEqual(['kernel/drivers/net/net_failover.ko', 'kernel/drivers/net/virtio_net.ko', 'kernel/net/core/failover.ko']);
    expect(() => moduleClosure(dep, ['nf_tables'])).toThrow(/nf_tables is not in the kernel package/);
  });

  it('the kernel command line carries name, address and gateway; /init says when it is up', () => {
    expect(vmAppend('guest1', '10.5.5.201', 24, '10.5.5.254')).toBe('console=ttyS0 quiet panic=-1 cgw.name=guest1 cgw.ip=10.5.5.201/24 cgw.gw=10.5.5.254');
    expect(initUp('cgw-init: modprobe x failed\ncgw-init: guest1 up at 10.5.5.201/24 via 10.5.5.254\n')).toBe(true);
    expect(initUp('cgw-init: modprobe x failed\n')).toBe(false);
  });
});

describe('VM image builder (the real image, from the package registry, cached)', () => {
  it('holds /init, busybox, the modules and the host programs with their loader', async () => {
    const image = await ensureVmImage();
    expect(image.kernel.startsWith(image.dir)).toBe(true);
    expect(readFileSync(image.kernel).subarray(0x202, 0x206).toString('ascii')).toBe('HdrS'); // a bzImage
    const names = cpioNames(gunzipSync(readFileSync(image.initrd)));
    for (const f of ['init', 'bin/busybox', 'usr/bin/socat', 'usr/sbin/nft', 'lib64/ld-linux-x86-64.so.2']) expect(names).toContain(f);
    const modules = names.filter((n) => n.endsWith('.ko'));
    for (const m of [...VM_MODULES, 'failover', 'net_failover']) expect(modules.some((n) => n.endsWith(`/${m}.ko`)), m).toBe(true);
    expect(names).toContain(`lib/modules/${image.kernelVersion}/modules.dep`);
    // A second call comes from the cache.
    expect((await ensureVmImage()).built).toBe(false);
  }, 240_000);
});

describe('serial shell and busybox output', () => {
  it('frames a request with a nonce so stale output is skipped', () => {
    const { text, answer } = framedRequest('ip -o addr', 'abc123');
    expect(text).toBe('echo @@B:abc123@@; { ip -o addr\n} </dev/null 2>&1; echo "@@E:abc123:$?@@"\n');
    const stale = '@@B:old@@\nold output\n@@E:old:0@@\n';
    const m = answer.exec(`${stale}@@B:abc123@@\n2: eth0 inet 10.5.5.201/24\n@@E:abc123:0@@\n`);
    expect(m?.[1]).toBe('2: eth0 inet 10.5.5.201/24\n');
    expect(m?.[2]).toBe('0');
    expect(answer.exec(stale)).toBeNull();
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
  });

  it('reads MACs from busybox arping as from Habets arping', () => {
    const busybox = 'ARPING 10.5.5.254 from 10.5.5.201 eth0\nUnicast reply from 10.5.5.254 [FA:6F:06:A1:D2:92] 0.976ms\nUnicast reply from 10.5.5.254 [fa:6f:06:a1:d2:92] 0.188ms\nSent 3 probe(s) (3 broadcast(s))\n';
    expect(parseArpingMacs(busybox)).toEqual(['fa:6f:06:a1:d2:92']);
    expect(parseArpingMacs('60 bytes from 02:00:00:00:00:01 (10.5.5.254): index=0 time=1 usec\n')).toEqual(['02:00:00:00:00:01']);
  });
});

describe('the lab state and agent config for qemu guests', () => {
  const vm = { kernel: '/var/cache/cgw-sync/lab-images/k1/vmlinuz', initrd: '/var/cache/cgw-sync/lab-images/k1/initrd.gz' };

  it('nodes become qemu nodes, guests boot the lab image with their IP, at most 256 MiB; still a valid state', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cgw-lab-vm-'));
    try {
      await cp(STATE_DIR, dir, { recursive: true });
      const changed = labAdjustments(await readState(dir), { responderScript: '/x.cjs', vm });
      expect(parse(changed['guests/guest1.yaml']).boot).toEqual({ ...vm, append: vmAppend('guest1', '10.5.5.201', 24, '10.5.5.254') });
      expect(parse(changed['guests/guest1.yaml']).netns).toBeUndefined();
      for (const [f, text] of Object.entries(changed)) await writeFile(join(dir, f), text);
      const state = await loadStateOrThrow(dir);
      expect(state.nodes.map((n) => n.hypervisor)).toEqual(['qemu', 'qemu']);
      expect(state.guests.map((g) => g.resources.memoryMiB)).toEqual([LAB_VM_MEMORY_MIB, LAB_VM_MEMORY_MIB]);
      // The plan knows them as VMs: no namespace probes, the in-guest checks go through the serial socket.
      const plan = planLab(state, { prefix: 'cgwlab-', labDir: '/run/cgw-sync/lab/cgwlab-' });
      expect(plan.guests[0].vm).toEqual({ serial: '/run/cgw-sync/lab/cgwlab-/node1/run/qemu/cgwlab-node1/guest1.serial1' });
      const inGuest = planChecks(state, plan).filter((c) => c.name.startsWith('outbound') || c.name.startsWith('arp'));
      expect(inGuest).toHaveLength(4);
      expect(inGuest.every((c) => c.vm?.endsWith('.serial1'))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the agent config allows exactly the image folder and names the accelerator and tap NIC', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cgw-lab-vm-agent-'));
    try {
      await writeFile(join(dir, 'agent.yaml'), agentConfigYaml('node1', 'cgwlab-node1', 'http://127.0.0.1:1/state.git', { imageDir: '/var/cache/cgw-sync/lab-images/k1', accel: 'tcg' }));
      const c = await loadAgentConfig(join(dir, 'agent.yaml'));
      expect(c.guests.imageDirs).toEqual(['/var/cache/cgw-sync/lab-images/k1']);
      expect(c.guests.qemu).toEqual({ accel: 'tcg', nic: 'tap', systemd: 'auto' });
      await writeFile(join(dir, 'bad.yaml'), agentConfigYaml('node1', 'n', 'http://127.0.0.1:1/s.git').replace('allowCommands: true', 'allowCommands: true\n  qemu: { accel: fast }'));
      await expect(loadAgentConfig(join(dir, 'bad.yaml'))).rejects.toThrow(/bad\.yaml:\d+:\d+: .*accel/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('qemu driver: tap NIC, serial ports, systemd scope', () => {
  const src = { file: 't', line: 1, column: 1 };
  const node: NodeSpec = { name: 'node1', uplink: { interface: 'eth0', publicIP: '192.0.2.1' }, guestBridge: { interface: 'guestbr0', nodeIP: '10.5.5.251' }, trunks: [], hypervisor: 'qemu', source: src };
  const guest: GuestSpec = { name: 'web1', node: 'node1', ip: '10.5.5.10', mac: '52:54:00:05:05:0a', resources: { memoryMiB: 256, vcpus: 2 }, restartOnChange: false, source: src };

  it('tap NIC and serial ports on the command line', () => {
    const args = qemuArgs(guest, node, { runDir: '/run/x', accel: 'tcg', nic: 'tap' }).join(' ');
    expect(args).toContain(`-nic tap,ifname=${guestTapName('web1')},script=no,downscript=no,model=virtio-net-pci,mac=52:54:00:05:05:0a`);
    expect(args).toContain('-serial file:/run/x/web1.console -serial unix:/run/x/web1.serial1,server=on,wait=off');
    expect(guestTapName('web1')).toMatch(/^tq[0-9a-f]{10}$/);
    expect(tapMac('00:16:3E:05:05:C9')).toBe('fe:16:3e:05:05:c9');
    expect(guestTapName('web1')).not.toBe(guestTapName('web2'));
  });

  it('a migration destination listens with -incoming on an IPv4 address and port only', () => {
    const args = qemuArgs(guest, node, { runDir: '/run/x', accel: 'tcg', incoming: { host: '10.5.5.252', port: 4444 } });
    expect(args.slice(-2)).toEqual(['-incoming', 'tcp:10.5.5.252:4444']);
    expect(qemuArgs(guest, node, { runDir: '/run/x', accel: 'tcg' })).not.toContain('-incoming');
    expect(migrationUri({ host: '10.5.5.252', port: 4444 })).toBe('tcp:10.5.5.252:4444');
    expect(() => migrationUri({ host: '10.5.5.252,server=on', port: 4444 })).toThrow(/not an IPv4 address and port/);
    expect(() => migrationUri({ host: '10.5.5.252', port: 70000 })).toThrow(/not an IPv4 address and port/);
  });

  it('under systemd, qemu runs in its own scope with the guest resources as limits', () => {
    expect(systemdRunArgs(guest)).toEqual([
      'systemd-run',
      '--scope',
      '--quiet',
      '--collect',
      '--unit=cgw-guest-web1.scope',
      '--slice=cgw-guests.slice',
      '--description=cgw-sync guest web1',
      '--property=MemoryMax=384M',
      '--property=CPUQuota=200%',
      '--',
    ]);
    expect(guestUnitName('web1')).toBe('cgw-guest-web1.scope');
    const scoped = new QemuDriver({ runDir: '/run/x', netns: 'cgwlab-node1', systemd: true }).command(guest, ['-name', 'web1']);
    expect(scoped[0]).toBe('systemd-run');
    // The scope wraps the namespace switch, which execs qemu: the whole guest lives in the scope.
    expect(scoped[1].slice(scoped[1].indexOf('--') + 1)).toEqual(['ip', 'netns', 'exec', 'cgwlab-node1', 'qemu-system-x86_64', '-name', 'web1']);
    expect(new QemuDriver({ runDir: '/run/x', systemd: false }).command(guest, ['-name', 'web1'])).toEqual(['qemu-system-x86_64', ['-name', 'web1']]);
  });

  it('detects systemd as sd_booted() does, and here (no systemd as PID 1) runs qemu detached', async () => {
    const root = await mkdtemp(join(tmpdir(), 'cgw-sdroot-'));
    try {
      expect(systemdBooted(root)).toBe(false);
      await mkdir(join(root, 'run', 'systemd', 'system'), { recursive: true });
      expect(systemdBooted(root)).toBe(true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
    const pid1 = readFileSync('/proc/1/comm', 'utf8').trim();
    expect(systemdBooted()).toBe(pid1 === 'systemd' && existsSync('/run/systemd/system'));
    const auto = new QemuDriver({ runDir: '/run/x' }).command(guest, ['-name', 'web1']);
    expect(auto[0]).toBe(systemdBooted() ? 'systemd-run' : 'qemu-system-x86_64');
  });
});
