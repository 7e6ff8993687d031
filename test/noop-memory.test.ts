// What the running agent trusts between full reads, as pure functions: the one-process sysctl
// answer, and when the last health round still stands for a cycle that changes nothing.
import { describe, expect, it } from 'vitest';
import { heldHealth, type HeldHealth } from '../src/rollout/checkpoint.js';
import { parseSysctlLines } from '../src/settings/host.js';

describe('parseSysctlLines', () => {
  it('reads `name = value` lines as sysctl -n prints the value (tabs kept), and skips error lines', () => {
    const m = parseSysctlLines('net.ipv4.ip_forward = 1\nnet.ipv4.ip_local_port_range = 32768\t60999\nsysctl: cannot stat /proc/sys/net/nope: No such file\n');
    expect(Object.fromEntries(m)).toEqual({ 'net.ipv4.ip_forward': '1', 'net.ipv4.ip_local_port_range': '32768\t60999' });
  });
});

describe('heldHealth', () => {
  const held: HeldHealth = { at: 1_000, revision: 'r1', report: { state: 'unhealthy', checks: 2, failing: [{ name: 'gateway', ok: false, detail: 'x' }] } };
  it('stands for the same revision while younger than the interval, healthy or not', () => {
    expect(heldHealth(held, 'r1', 1_000 + 299_999, 300_000)).toBe(held.report);
  });
  it('runs a round when the interval has passed, for another revision, with no round yet, or with interval 0', () => {
    expect(heldHealth(held, 'r1', 1_000 + 300_000, 300_000)).toBeUndefined();
    expect(heldHealth(held, 'r2', 1_001, 300_000)).toBeUndefined();
    expect(heldHealth(undefined, 'r1', 1_001, 300_000)).toBeUndefined();
    expect(heldHealth(held, 'r1', 1_000, 0)).toBeUndefined();
  });
});
