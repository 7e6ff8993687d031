// Pure parts of the guest driver interface: what goes into a fingerprint, and guest name checks.
import { describe, expect, it } from 'vitest';
import { driverFor } from '../src/guests/index.js';
import { appliedConfig, assertSafeGuestName, desiredFingerprint, fingerprint } from '../src/guests/driver.js';
import type { GuestSpec, NodeSpec } from '../src/state/types.js';

const src = { file: 'test', line: 1, column: 1 };
const node = (hypervisor: NodeSpec['hypervisor']): NodeSpec => ({
  name: 'node1',
  uplink: { interface: 'xenbr0', publicIP: '192.0.2.1' },
  guestBridge: { interface: 'guestbr0', nodeIP: '10.5.5.251' },
  trunks: [],
  hypervisor,
  source: src,
});
const g: GuestSpec = {
  name: 'web1',
  node: 'node1',
  ip: '10.5.5.201',
  mac: '52:54:00:05:05:c9',
  resources: { memoryMiB: 512, vcpus: 2 },
  boot: { kernel: '/k' },
  netns: { command: ['socat', 'TCP-LISTEN:80', 'SYSTEM:echo hi'] },
  restartOnChange: false,
  source: src,
};

describe('desiredFingerprint', () => {
  it('is stable, and ignores key order and absent vs empty values', () => {
    expect(desiredFingerprint(g, node('qemu'))).toBe(desiredFingerprint({ ...g }, node('qemu')));
    expect(desiredFingerprint(g, node('qemu'))).toMatch(/^sha256:[0-9a-f]{16}$/);
    const a = appliedConfig(g, node('qemu'));
    const reordered = Object.fromEntries(Object.entries(a).reverse()) as typeof a;
    expect(fingerprint(reordered)).toBe(fingerprint(a));
    expect(fingerprint({ ...a, append: '' })).toBe(fingerprint(a));
    expect(desiredFingerprint({ ...g, mac: g.mac.toUpperCase() }, node('qemu'))).toBe(desiredFingerprint(g, node('qemu')));
  });

  it('covers only what the hypervisor applies', () => {
    const q = node('qemu');
    // qemu: the IP lives inside the guest; memory, boot and bridge are the VM's.
    expect(desiredFingerprint({ ...g, ip: '10.5.5.99' }, q)).toBe(desiredFingerprint(g, q));
    expect(desiredFingerprint({ ...g, resources: { memoryMiB: 1024, vcpus: 2 } }, q)).not.toBe(desiredFingerprint(g, q));
    expect(desiredFingerprint({ ...g, boot: { kernel: '/k2' } }, q)).not.toBe(desiredFingerprint(g, q));
    expect(desiredFingerprint(g, { ...q, guestBridge: { interface: 'br1', nodeIP: '10.5.5.251' } })).not.toBe(desiredFingerprint(g, q));
    // netns: IP and command are applied by the driver; memory is not.
    const n = node('netns');
    expect(desiredFingerprint({ ...g, ip: '10.5.5.99' }, n)).not.toBe(desiredFingerprint(g, n));
    expect(desiredFingerprint({ ...g, netns: { command: ['true'] } }, n)).not.toBe(desiredFingerprint(g, n));
    expect(desiredFingerprint({ ...g, resources: { memoryMiB: 1024, vcpus: 2 } }, n)).toBe(desiredFingerprint(g, n));
    // The same guest under another hypervisor is another configuration.
    expect(desiredFingerprint(g, node('xen'))).not.toBe(desiredFingerprint(g, q));
  });
});

describe('assertSafeGuestName', () => {
  it('accepts plain names and refuses anything needing quoting', () => {
    for (const ok of ['web1', 'db-2', 'a.b_c']) expect(() => assertSafeGuestName(ok)).not.toThrow();
    for (const bad of ['', '-x', 'a b', 'a,b', '../x', 'x/y', 'a'.repeat(64)]) expect(() => assertSafeGuestName(bad)).toThrow();
  });
});

describe('driverFor', () => {
  it('picks the driver the node names; netns needs the node namespace', () => {
    expect(driverFor(node('qemu')).kind).toBe('qemu');
    expect(driverFor(node('xen')).kind).toBe('xen');
    expect(driverFor(node('netns'), { nodeNs: 'n1' }).kind).toBe('netns');
    expect(() => driverFor(node('netns'))).toThrow(/nodeNs/);
  });
});
