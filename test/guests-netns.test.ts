// The netns guest driver, for real: a node namespace with bridge guestbr0 carrying the node IP and
// the shared gateway IP of a private test subnet, a guest namespace attached to it running a TCP
// responder (socat), reached from the node namespace. Nothing touches the root namespace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addAddress, addBridge, createNamespace, deleteNamespace, listNamespaces, runIn } from '../src/netns/netns.js';
import { desiredFingerprint } from '../src/guests/driver.js';
import { NetnsDriver } from '../src/guests/netns.js';
import { DEFAULT_GUEST_POLICY, policyGuard } from '../src/guests/policy.js';
import { processAlive, processCmdline, waitUntil } from '../src/proc/process.js';
import type { GuestSpec, NodeSpec } from '../src/state/types.js';

const id = `${process.pid % 100000}`;
const nodeNs = `cgwn${id}`;
const prefix = `cgwg${id}-`;
const net = `10.213.${process.pid % 250}`; // private test subnet, only inside these namespaces
const src = { file: 'test', line: 1, column: 1 };
const node: NodeSpec = {
  name: 'node1',
  uplink: { interface: 'eth0', publicIP: '192.0.2.1' },
  guestBridge: { interface: 'guestbr0', nodeIP: `${net}.251` },
  trunks: [],
  hypervisor: 'netns',
  source: src,
};
const ctx = { node, cluster: { guestSubnet: `${net}.0/24`, gatewayIP: `${net}.254` } };
const web: GuestSpec = {
  name: 'web1',
  node: 'node1',
  ip: `${net}.10`,
  mac: '52:54:00:05:05:0a',
  resources: { memoryMiB: 64, vcpus: 1 },
  netns: { command: ['socat', 'TCP-LISTEN:8080,fork,reuseaddr', 'SYSTEM:echo hello'] },
  restartOnChange: false,
  source: src,
};

let runDir: string;
let driver: NetnsDriver;

/** Ask the guest's responder from the node namespace; undefined while it does not answer. */
async function ask(ip: string): Promise<string | undefined> {
  try {
    const r = await runIn(nodeNs, 'socat', ['-T', '2', '-', `TCP:${ip}:8080,connect-timeout=2`], { input: '' });
    return r.stdout.trim();
  } catch {
    return undefined;
  }
}

async function bridgePorts(): Promise<string[]> {
  const r = await runIn(nodeNs, 'ip', ['-j', 'link', 'show', 'master', 'guestbr0']);
  return (JSON.parse(r.stdout || '[]') as Array<{ ifname: string }>).map((l) => l.ifname);
}

beforeAll(async () => {
  await createNamespace(nodeNs);
  await addBridge(nodeNs, 'guestbr0');
  await addAddress(nodeNs, 'guestbr0', `${net}.251/24`);
  await addAddress(nodeNs, 'guestbr0', `${net}.254/24`);
  runDir = await mkdtemp(join(tmpdir(), 'cgw-netns-'));
  // These guests run commands, as lab guests do: the node allows state commands.
  driver = new NetnsDriver({ nodeNs, prefix, runDir, guard: policyGuard({ ...DEFAULT_GUEST_POLICY, allowCommands: true }) });
});

afterAll(async () => {
  try {
    if (driver) for (const g of await driver.list()) await driver.stop(g.name, { timeoutMs: 0 });
  } finally {
    for (const ns of await listNamespaces()) if (ns.startsWith(prefix)) await deleteNamespace(ns);
    await deleteNamespace(nodeNs);
    if (runDir) await rm(runDir, { recursive: true, force: true });
  }
});

describe('netns guest driver (real namespaces, veth, bridge, socat)', () => {
  it('starts a guest namespace on the node bridge that answers from the node namespace', async () => {
    await driver.start(web, ctx);
    const guestNs = `${prefix}web1`;
    expect(await listNamespaces()).toContain(guestNs);

    // Address, MAC and default route via the shared gateway.
    const addr = await runIn(guestNs, 'ip', ['-j', 'addr', 'show', 'eth0']);
    const [eth0] = JSON.parse(addr.stdout) as Array<{ address: string; addr_info: Array<{ family: string; local: string; prefixlen: number }> }>;
    expect(eth0.address).toBe(web.mac);
    expect(eth0.addr_info.filter((a) => a.family === 'inet')).toEqual([expect.objectContaining({ local: web.ip, prefixlen: 24 })]);
    const route = await runIn(guestNs, 'ip', ['-j', 'route', 'show', 'default']);
    expect(JSON.parse(route.stdout)).toEqual([expect.objectContaining({ dst: 'default', gateway: `${net}.254` })]);
    expect(await bridgePorts()).toEqual([driver.hostIf('web1')]);

    // The responder needs a moment to listen: poll with a deadline.
    expect(await waitUntil(async () => (await ask(web.ip)) === 'hello', 10_000, 100)).toBe(true);
    // And the guest reaches the gateway address through the bridge.
    await runIn(guestNs, 'ping', ['-c', '1', '-W', '2', `${net}.254`]);
  });

  it('list() reports it running and managed, with the desired fingerprint and the command PID', async () => {
    const all = await driver.list();
    expect(all).toHaveLength(1);
    expect(all[0]).toMatchObject({ name: 'web1', mac: web.mac, state: 'running', managed: true });
    expect(all[0].fingerprint).toBe(desiredFingerprint(web, node));
    expect(processCmdline(all[0].pid!)?.[0]).toBe('socat'); // `ip netns exec` exec'd in place
  });

  it('a second identical start is a no-op; another configuration is refused', async () => {
    const before = (await driver.list())[0].pid;
    await driver.start(web, ctx);
    expect((await driver.list())[0].pid).toBe(before);
    await expect(driver.start({ ...web, ip: `${net}.11` }, ctx)).rejects.toThrow(/another configuration/);
  });

  it('a guest namespace created by hand is listed as unmanaged and not replaced', async () => {
    const hand = `${prefix}hand`;
    await createNamespace(hand);
    try {
      const g = (await driver.list()).find((x) => x.name === 'hand');
      expect(g).toMatchObject({ name: 'hand', managed: false });
      expect(g?.fingerprint).toBeUndefined();
      await expect(driver.start({ ...web, name: 'hand', ip: `${net}.12` }, ctx)).rejects.toThrow(/not started by cgw-sync/);
    } finally {
      await deleteNamespace(hand);
    }
  });

  it('a guest whose command died is reported crashed', async () => {
    const g = { ...web, name: 'short', ip: `${net}.13`, mac: '52:54:00:05:05:0d', netns: { command: ['true'] } };
    await driver.start(g, ctx);
    expect(await waitUntil(async () => (await driver.list()).find((x) => x.name === 'short')?.state === 'crashed', 5_000)).toBe(true);
    expect(await driver.stop('short', { timeoutMs: 1_000 })).toBe('clean');
    expect(await listNamespaces()).not.toContain(`${prefix}short`);
  });

  it('stop: SIGTERM ends socat (clean); namespace, veth and runtime files are gone', async () => {
    const pid = (await driver.list())[0].pid!;
    expect(await driver.stop('web1', { timeoutMs: 5_000 })).toBe('clean');
    expect(processAlive(pid)).toBe(false);
    expect(await driver.list()).toEqual([]);
    expect((await listNamespaces()).filter((n) => n.startsWith(prefix))).toEqual([]);
    expect(await bridgePorts()).toEqual([]);
    expect(existsSync(join(runDir, 'web1.meta.json'))).toBe(false);
    expect(existsSync(join(runDir, 'web1.log'))).toBe(false);
    expect(await ask(web.ip)).toBeUndefined();
  });

  it('stop is forced when a process ignores SIGTERM', async () => {
    const script = 'trap "" TERM; echo ready; while :; do sleep 0.2; done';
    const g = { ...web, name: 'stubborn', ip: `${net}.14`, netns: { command: ['sh', '-c', script] } };
    await driver.start(g, ctx);
    const pid = (await driver.list()).find((x) => x.name === 'stubborn')!.pid!;
    // The shell says "ready" (into the guest's log) once its trap is in place.
    const log = join(runDir, 'stubborn.log');
    expect(await waitUntil(async () => existsSync(log) && (await readFile(log, 'utf8')).includes('ready'), 5_000)).toBe(true);
    expect(await driver.stop('stubborn', { timeoutMs: 500 })).toBe('forced');
    expect(processAlive(pid)).toBe(false);
    expect(await driver.list()).toEqual([]);
  });
});
