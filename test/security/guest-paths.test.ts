// Adversarial group "guest paths and commands": a state must not give a guest a host path the
// node did not allow, nor run a command on a node that does not allow state commands. Real files,
// symlinks, a FIFO and device nodes (mknod, never opened) in a scratch image folder; the checks
// at plan time (data in the plan) and again in each driver right before a start.
import { resolveNode } from '../../src/render/node-view.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { AgentConfigError, loadAgentConfig } from '../../src/agent/config.js';
import { DEFAULT_GUEST_POLICY, guestRefusal, guestRefusals, hostPathProblem, policyGuard, type GuestPolicy } from '../../src/guests/policy.js';
import { NetnsDriver } from '../../src/guests/netns.js';
import { QemuDriver } from '../../src/guests/qemu.js';
import { XenDriver, xlConfig, type XlRunner } from '../../src/guests/xen.js';
import { listNamespaces } from '../../src/netns/netns.js';
import { formatGuestPlanText, guestChanges, planGuests } from '../../src/reconcile/guests.js';
import { loadState, loadStateOrThrow } from '../../src/state/load.js';
import type { ClusterState, GuestSpec, NodeSpec } from '../../src/state/types.js';
import { editedState, EXAMPLE_DIR, scratchDir, type StateEdit } from '../helpers/hostile-state.js';
import { startTestAgent, stateExampleFiles } from '../helpers/agent-fixture.js';
import { startGitFixture } from '../helpers/git-server.js';

let scratch: Awaited<ReturnType<typeof scratchDir>>;
let images: string;
let state: ClusterState;

beforeAll(async () => {
  scratch = await scratchDir('sec-guests');
  images = join(scratch.dir, 'images');
  await mkdir(join(images, 'sub'), { recursive: true });
  await mkdir(join(images, 'adir'));
  await mkdir(join(scratch.dir, 'images-evil'));
  for (const f of ['guest.raw', 'vmlinuz', 'initrd.img', 'sub/x.raw']) await writeFile(join(images, f), 'image');
  await writeFile(join(scratch.dir, 'images-evil', 'x.raw'), 'image');
  await symlink('/etc/passwd', join(images, 'evil'));
  await symlink('/etc', join(images, 'dirlink'));
  await symlink(join(images, 'guest.raw'), join(images, 'inside-link'));
  await symlink('../guest.raw', join(images, 'sub', 'relative-link'));
  await symlink('/dev/loop0', join(images, 'blklink'));
  await execa('mkfifo', [join(images, 'fifo')]);
  // Device nodes of loop0 and /dev/null; only stat()ed, never opened.
  await execa('mknod', [join(images, 'blk'), 'b', '7', '0']);
  await execa('mknod', [join(images, 'chr'), 'c', '1', '3']);
  state = await loadStateOrThrow(EXAMPLE_DIR);
});
afterAll(async () => {
  await scratch?.remove();
});

const policy = (over: Partial<GuestPolicy> = {}): GuestPolicy => ({ ...DEFAULT_GUEST_POLICY, imageDirs: [images], ...over });
const img = (p: string) => () => join(images, p);
const abs = (p: string) => () => p;

interface PathCase {
  name: string;
  path: () => string;
  policy?: () => Partial<GuestPolicy>;
  /** undefined: allowed. */
  refused?: RegExp;
}

const pathCases: PathCase[] = [
  { name: '/dev/sda', path: abs('/dev/sda'), refused: /not under an allowed image directory/ },
  { name: '/etc', path: abs('/etc'), refused: /not under an allowed image directory/ },
  { name: '/etc/shadow', path: abs('/etc/shadow'), refused: /not under an allowed image directory/ },
  { name: "'..' out of the image folder", path: () => `${images}/../../etc/passwd`, refused: /contains '\.\.'/ },
  { name: "'..' staying inside", path: () => `${images}/sub/../guest.raw`, refused: /contains '\.\.'/ },
  { name: "'.' part", path: () => `${images}/./guest.raw`, refused: /not normalised/ },
  { name: 'double slash', path: () => `${images}//guest.raw`, refused: /not normalised/ },
  { name: 'trailing slash', path: () => `${images}/sub/`, refused: /not normalised/ },
  { name: 'relative', path: abs('images/guest.raw'), refused: /not an absolute path/ },
  { name: 'NUL', path: () => `${images}/guest.raw\0/etc/shadow`, refused: /NUL or line break/ },
  { name: 'newline', path: () => `${images}/guest.raw\nkernel = "/etc/shadow"`, refused: /NUL or line break/ },
  { name: 'symlink to /etc/passwd', path: img('evil'), refused: /resolves to \/etc\/passwd .*outside/ },
  { name: 'symlinked folder to /etc', path: img('dirlink/passwd'), refused: /resolves to \/etc\/passwd/ },
  { name: 'sibling folder sharing the prefix', path: () => join(scratch.dir, 'images-evil', 'x.raw'), refused: /not under an allowed image directory/ },
  { name: 'the image folder itself', path: () => images, refused: /not under an allowed image directory/ },
  { name: 'a folder inside', path: img('adir'), refused: /not a regular file/ },
  { name: 'a FIFO', path: img('fifo'), refused: /not a regular file/ },
  { name: 'a character device', path: img('chr'), policy: () => ({ allowBlockDevices: true }), refused: /character device/ },
  { name: '/dev/null with /dev allowed', path: abs('/dev/null'), policy: () => ({ imageDirs: ['/dev'], allowBlockDevices: true }), refused: /character device/ },
  { name: 'a block device, not allowed', path: img('blk'), refused: /block device.*guests\.allowBlockDevices/ },
  { name: 'a block device, allowed', path: img('blk'), policy: () => ({ allowBlockDevices: true }) },
  { name: 'a link to /dev/loop0 (like /dev/vg0/x), not allowed', path: img('blklink'), refused: /block device/ },
  { name: 'a link to /dev/loop0 (like /dev/vg0/x), allowed', path: img('blklink'), policy: () => ({ allowBlockDevices: true }) },
  { name: '/dev/loop0 under an allowed /dev, block devices off', path: abs('/dev/loop0'), policy: () => ({ imageDirs: ['/dev'] }), refused: /block device/ },
  { name: 'missing file', path: img('nothing.raw'), refused: /cannot be resolved \(ENOENT\)/ },
  { name: 'no image folders at all', path: img('guest.raw'), policy: () => ({ imageDirs: [] }), refused: /allowed image directories: none/ },
  { name: 'the default folder only', path: img('guest.raw'), policy: () => ({ imageDirs: DEFAULT_GUEST_POLICY.imageDirs }), refused: /\/var\/lib\/cgw-sync\/images \(agent config guests\.imageDirs\)/ },
  { name: 'an image file', path: img('guest.raw') },
  { name: 'an image in a subfolder', path: img('sub/x.raw') },
  { name: 'a symlink staying inside', path: img('inside-link') },
  { name: 'a relative symlink staying inside', path: img('sub/relative-link') },
];

describe('host paths a guest may name', () => {
  it.each(pathCases)('$name', async ({ path, policy: over, refused }) => {
    const problem = await hostPathProblem(path(), policy(over?.()));
    if (refused) expect(problem).toMatch(refused);
    else expect(problem).toBeUndefined();
  });
});

const node = (hypervisor: NodeSpec['hypervisor']): NodeSpec => ({ ...state.nodes[0]!, hypervisor });
const guest = (over: Partial<GuestSpec>): GuestSpec => ({ ...state.guests[0]!, boot: {}, ...over });

describe('guests, commands and values that reach a command line', () => {
  const cases: Array<{ name: string; guest: () => GuestSpec; hypervisor: NodeSpec['hypervisor']; policy?: Partial<GuestPolicy>; refused?: RegExp }> = [
    { name: 'netns.command without allowCommands', hypervisor: 'netns', guest: () => guest({ netns: { command: ['sh', '-c', 'cat /etc/shadow'] } }), refused: /netns\.command .*agent config guests\.allowCommands/ },
    { name: 'netns.command with allowCommands (lab)', hypervisor: 'netns', policy: { allowCommands: true }, guest: () => guest({ netns: { command: ['true'] } }) },
    { name: 'netns guest without a command', hypervisor: 'netns', guest: () => guest({}) },
    { name: 'kernel allowed, initrd /etc/shadow', hypervisor: 'qemu', guest: () => guest({ boot: { kernel: join(images, 'vmlinuz'), initrd: '/etc/shadow' } }), refused: /^guest guest1 refused: initrd "\/etc\/shadow" is not under/ },
    { name: 'disk /dev/sda (xen)', hypervisor: 'xen', guest: () => guest({ boot: { kernel: join(images, 'vmlinuz'), disk: '/dev/sda' } }), refused: /disk "\/dev\/sda" is not under an allowed image directory/ },
    { name: 'everything inside the image folder', hypervisor: 'qemu', guest: () => guest({ boot: { disk: join(images, 'guest.raw'), kernel: join(images, 'vmlinuz'), initrd: join(images, 'initrd.img'), append: 'console=ttyS0' } }) },
    { name: 'qemu option injection through the MAC', hypervisor: 'qemu', guest: () => guest({ mac: '52:54:00:05:05:c9,script=/tmp/x' }), refused: /mac .* is not a MAC address/ },
    { name: 'xl config injection through append', hypervisor: 'xen', guest: () => guest({ boot: { kernel: join(images, 'vmlinuz'), append: 'quiet"\nkernel = "/etc/shadow' } }), refused: /boot\.append holds a quote/ },
    { name: 'ip argument injection through the address (netns)', hypervisor: 'netns', guest: () => guest({ ip: '-force' }), refused: /ip "-force" is not an IPv4 address/ },
    { name: 'option injection through the bridge name', hypervisor: 'qemu', guest: () => guest({}), refused: /guest bridge .* is not an interface name/ },
  ];

  it.each(cases)('$name', async (c) => {
    const n = node(c.hypervisor);
    const nodeSpec = c.name.includes('bridge name') ? { ...n, guestBridge: { ...n.guestBridge, interface: 'br0,helper=/tmp/x' } } : n;
    const refusal = await guestRefusal(c.guest(), nodeSpec, policy(c.policy));
    if (c.refused) expect(refusal).toMatch(c.refused);
    else expect(refusal).toBeUndefined();
  });

  it.each([
    ['append with a line break', { append: 'quiet\nkernel = "/etc/shadow"' }],
    ['append with a quote', { append: 'quiet" kernel="/etc/shadow' }],
    ['append with a backslash', { append: 'quiet\\' }],
    ['disk with a quote', { disk: '/srv/x".raw' }],
    ['kernel with a line break', { kernel: '/k\nextra = "x"' }],
  ])('the xl config refuses %s (config injection)', (_, boot) => {
    expect(() => xlConfig(guest({ boot: { kernel: '/k', ...boot } }), node('xen'), { uuid: 'u' })).toThrow(/without quotes or backslashes/);
  });
});

describe('plan time: a refused guest is data in the plan', () => {
  it('guest1 with disk /dev/sda is planned as refused, not started, with the reason', async () => {
    const hostile: ClusterState = { ...state, guests: state.guests.map((g) => (g.name === 'guest1' ? { ...g, boot: { ...g.boot, disk: '/dev/sda' } } : g)) };
    const refusals = await guestRefusals(hostile, 'node1', policy());
    const plan = planGuests(resolveNode(hostile, 'node1'), [], undefined, refusals);
    expect(plan.actions).toEqual([{ guest: 'guest1', action: 'refused', reason: expect.stringMatching(/^guest guest1 refused: disk "\/dev\/sda" is not under an allowed image directory/) }]);
    expect(guestChanges(plan)).toEqual([]);
    expect(formatGuestPlanText(plan)).toMatch(/x guest1: refused \(guest guest1 refused: disk "\/dev\/sda" is not under/);
  });
});

describe('the agent: a refused guest is reported, not started', () => {
  it('a qemu node with guest1 on /dev/sda: the report says why, no qemu runs, the network is still applied', async () => {
    const files = await stateExampleFiles();
    files['nodes/node1.yaml'] = files['nodes/node1.yaml']!.replace('hypervisor: xen', 'hypervisor: qemu');
    files['guests/guest1.yaml'] = files['guests/guest1.yaml']!.replace('disk: /dev/vg0/guest1', 'disk: /dev/sda');
    const fx = await startGitFixture({ files });
    const runDir = join(scratch.dir, 'agent-run');
    const agent = await startTestAgent(fx, 'node1', { guests: { enabled: true, runDir } });
    try {
      const status = await agent.cycle();
      expect(status.guests).toEqual([
        { name: 'guest1', state: 'absent', detail: expect.stringMatching(/^refused: guest guest1 refused: disk "\/dev\/sda" is not under an allowed image directory/) },
      ]);
      expect(status.outcome).not.toBe('failed');
      expect(await agent.tables()).toContain('ip cgw_nat');
      expect(existsSync(join(runDir, 'qemu')) ? await readdir(join(runDir, 'qemu'), { recursive: true }) : []).toEqual([]);
    } finally {
      await agent.destroy();
      await fx.cleanup();
    }
  });
});

describe('defence in depth: each driver checks again right before it starts', () => {
  const ctx = (hypervisor: NodeSpec['hypervisor']) => ({ node: node(hypervisor), cluster: state.cluster });

  it('netns: a command is refused without allowCommands; no namespace is made', async () => {
    const prefix = `cgwt-secg-${process.pid}-`;
    const driver = new NetnsDriver({ nodeNs: `cgwt-secg-node-${process.pid}`, prefix, runDir: join(scratch.dir, 'run-netns') });
    await expect(driver.start(guest({ netns: { command: ['sh', '-c', 'id'] } }), ctx('netns'))).rejects.toThrow(/guests\.allowCommands/);
    expect((await listNamespaces()).filter((n) => n.startsWith(prefix))).toEqual([]);
  });

  it('qemu: /dev/sda as disk is refused before qemu runs; nothing is written', async () => {
    const runDir = join(scratch.dir, 'run-qemu');
    const driver = new QemuDriver({ runDir, binary: '/nonexistent/qemu', guard: policyGuard(policy()) });
    await expect(driver.start(guest({ boot: { disk: '/dev/sda' } }), ctx('qemu'))).rejects.toThrow(/disk "\/dev\/sda" is not under/);
    expect(existsSync(runDir) ? await readdir(runDir) : []).toEqual([]);
  });

  it('xen: a symlink escaping the image folder is refused before `xl create`', async () => {
    const calls: string[][] = [];
    const xl: XlRunner = async (args) => {
      calls.push(args);
      return { stdout: args[1] === '-l' ? '[]' : '', stderr: '', exitCode: 0, timedOut: false };
    };
    const driver = new XenDriver({ runDir: join(scratch.dir, 'run-xen'), xl, guard: policyGuard(policy()) });
    await expect(driver.start(guest({ boot: { kernel: join(images, 'evil') } }), ctx('xen'))).rejects.toThrow(/resolves to \/etc\/passwd/);
    expect(calls.filter((a) => a[0] === 'create')).toEqual([]);
  });
});

describe('the schema: host paths are absolute, normalised, one line', () => {
  const disk = (to: string): StateEdit => ['guests/guest1.yaml', 'disk: /dev/vg0/guest1', `disk: ${to}`];
  it.each([
    ['..', disk('/var/lib/cgw-sync/images/../../../etc/shadow'), 'boot.disk'],
    ['relative', disk('images/guest1.raw'), 'boot.disk'],
    ['line break', disk('"/var/lib/x\\nkernel = /etc/shadow"'), 'boot.disk'],
    ['NUL', disk('"/var/lib/x\\0"'), 'boot.disk'],
    ['double slash', disk('/var//lib/x'), 'boot.disk'],
    ["'.' part", ['guests/guest1.yaml', 'kernel: /var/lib/cgw-sync/images/vmlinuz', 'kernel: /var/lib/./x'] as StateEdit, 'boot.kernel'],
    ['trailing slash', ['guests/guest1.yaml', 'initrd: /var/lib/cgw-sync/images/initrd.img', 'initrd: /var/lib/'] as StateEdit, 'boot.initrd'],
    ['append with a line break', ['guests/guest1.yaml', 'append: "root=/dev/vda ro console=hvc0"', 'append: "ro\\nkernel = x"'] as StateEdit, 'boot.append'],
  ] as Array<[string, StateEdit, string]>)('%s: file:line:column and field', async (_, edit, field) => {
    const { diagnostics } = await loadState(await editedState(scratch.dir, [edit]));
    expect(diagnostics).toEqual([expect.objectContaining({ file: 'guests/guest1.yaml', field, line: expect.any(Number), column: expect.any(Number) })]);
    expect(diagnostics[0]!.line).toBeGreaterThan(1);
  });

  it('the agent config: image folders must be absolute; the defaults are strict', async () => {
    const file = join(scratch.dir, 'agent.yaml');
    const base = 'apiVersion: cgw-sync/v1\nkind: AgentConfig\nsource: { url: https://git.example.org/s.git }\n';
    await writeFile(file, `${base}guests:\n  imageDirs: [images]\n`);
    const e = await loadAgentConfig(file).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AgentConfigError);
    expect((e as AgentConfigError).message).toMatch(/agent\.yaml:5:\d+: guests\.imageDirs\[0\]: must be an absolute path/);
    await writeFile(file, base);
    expect((await loadAgentConfig(file)).guests).toMatchObject({ imageDirs: ['/var/lib/cgw-sync/images'], allowBlockDevices: false, allowCommands: false });
  });
});
