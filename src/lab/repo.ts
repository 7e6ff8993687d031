// The lab's state repository: a bare Git repository seeded from a state directory (normally
// state-example/) in two commits, so `git log` shows exactly what the lab changed:
//   1. "seed": the state directory as it is;
//   2. "lab: ...": the lab's adjustments, explained in the commit message (labCommitMessage):
//      - nodes/*.yaml   hypervisor: netns (in the lab a node is a network namespace, and its guests
//                       are network namespaces on its guest bridge: the netns guest driver);
//      - guests/*.yaml  netns.command: the lab responder (HTTP :80, TCP :22, UDP :123);
//      - cluster.yaml   nat.mode, when `lab up --mode` asks for another one (stateless-nat
//                       also numbers the nodes' natTag where missing);
//      - nodes/*.yaml   statusKey: the public half of a key the lab made for each node, and
//                       cluster.yaml statusSignatures: required (the lab's reports are signed);
//      - with `--nodes N`: the added nodes, guests and forwards (src/lab/nodes.ts), and in
//                       cluster.yaml what more than two nodes need (a ct-sync multicast group, a
//                       stateless-nat port stride every tag fits in).
// The result stays an ordinary state repository that `cgw-sync validate` accepts.
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isMap, parseDocument, type Document, type Scalar, type YAMLMap } from 'yaml';
import type { NatMode } from '../state/types.js';
import { commitDirectory, createBareRepo } from '../git/bare-repo.js';
import { run } from '../netns/netns.js';
import { responderScriptCommand } from './responder.js';
import { vmAppend } from './vm-image.js';
import { dualStackFiles } from './ipv6.js';
import { LAB_MULTICAST_GROUP, labPortStride } from './nodes.js';
import { DEFAULT_PORT_STRIDE } from '../state/mode-checks.js';

export interface LabStateOptions {
  /** cluster.yaml nat.mode; unchanged when undefined. */
  mode?: NatMode;
  /** The responder script (writeResponderScript) every guest runs as its netns command. */
  responderScript: string;
  /**
   * `lab up --guests qemu`: nodes get hypervisor qemu and every guest boots this kernel and
   * initramfs (src/lab/vm-image.ts) with its IP and gateway on the kernel command line.
   */
  vm?: { kernel: string; initrd: string };
  /** Node -> the armored public key of the signing key the lab made for it (statusKey). */
  statusKeys?: Record<string, string>;
  /** Dual stack: IPv6 twins of the state's addresses (src/lab/ipv6.ts dualStackFiles). */
  ipv6?: boolean;
  /** `lab up --nodes N`: the files that add nodes, guests and forwards (src/lab/nodes.ts extensionFiles). */
  extraFiles?: TextFiles;
  /** The lab's node count (with the extra files'): more than two get the settings N nodes need. */
  nodes?: number;
}

/** The most memory a lab VM gets (the guest's resources.memoryMiB is lowered to it). */
export const LAB_VM_MEMORY_MIB = 256;

/** Relative path (forward slashes) -> file text. */
export type TextFiles = Record<string, string>;

const NOTE = ' lab: set by `cgw-sync lab up`';

/**
 * The lab's edits to a state's YAML files: returns only the files that change, comments and
 * layout of everything else kept. Pure.
 */
export function labAdjustments(original: TextFiles, opts: LabStateOptions): TextFiles {
  // Dual stack first: the other edits then work on (and keep) the IPv6 addresses.
  const changed: TextFiles = opts.ipv6 ? dualStackFiles(original) : {};
  const files = { ...original, ...changed };
  const edit = (file: string, change: (doc: Document) => boolean) => {
    const doc = parseDocument(files[file]);
    if (!isMap(doc.contents)) return;
    if (change(doc)) changed[file] = doc.toString({ flowCollectionPadding: false });
  };
  let tag = 0;
  const cluster = parseDocument(files['cluster.yaml'] ?? '');
  const subnet = String(cluster.get('guestSubnet') ?? '');
  const gateway = String(cluster.get('gatewayIP') ?? '');
  for (const file of Object.keys(files).sort()) {
    if (/^nodes\/[^/]+\.ya?ml$/.test(file)) {
      tag++;
      edit(file, (doc) => {
        const netns = setNoted(doc, ['hypervisor'], opts.vm ? 'qemu' : 'netns');
        // stateless-nat needs a tag per node (docs/nat-modes.md); number them in file order.
        const tagged = opts.mode === 'stateless-nat' && !doc.has('natTag') && setNoted(doc, ['natTag'], tag);
        const key = opts.statusKeys?.[String(doc.get('name'))];
        const keyed = key !== undefined && setNoted(doc, ['statusKey'], key);
        return netns || tagged || keyed;
      });
    } else if (/^guests\/[^/]+\.ya?ml$/.test(file)) {
      edit(file, (doc) => {
        const name = doc.get('name');
        if (typeof name !== 'string') return false;
        doc.delete('netns');
        if (opts.vm) return vmGuest(doc, name, opts.vm, subnet, gateway);
        const pair = doc.createPair('netns', { command: responderScriptCommand(opts.responderScript, name) });
        (pair.key as Scalar).commentBefore = NOTE;
        (doc.contents as YAMLMap).items.push(pair);
        return true;
      });
    } else if (file === 'cluster.yaml') {
      const mode = opts.mode;
      edit(file, (doc) => {
        const moded = !!mode && doc.getIn(['nat', 'mode']) !== mode && setNoted(doc, ['nat', 'mode'], mode);
        const strict = !!opts.statusKeys && doc.get('statusSignatures') !== 'required' && setNoted(doc, ['statusSignatures'], 'required');
        const sized = manyNodes(doc, opts.nodes ?? 0);
        return moded || strict || sized;
      });
    }
  }
  return changed;
}

/**
 * More than two nodes, whatever mode the lab switches to later: ct-sync's channel needs a
 * multicast group (a unicast UDP block has one peer), stateless-nat every tag below port 65536.
 */
function manyNodes(doc: Document, nodes: number): boolean {
  if (nodes <= 2) return false;
  const group = !doc.hasIn(['nat', 'ctSync', 'multicastGroup']) && setNoted(doc, ['nat', 'ctSync', 'multicastGroup'], LAB_MULTICAST_GROUP);
  const stride = Number(doc.getIn(['nat', 'portStride']) ?? DEFAULT_PORT_STRIDE);
  const fits = labPortStride(nodes, stride);
  const strided = fits !== stride && setNoted(doc, ['nat', 'portStride'], fits);
  return group || strided;
}

/** A guest as a lab VM: the lab's kernel and initramfs, its network on the kernel command line. */
function vmGuest(doc: Document, name: string, vm: { kernel: string; initrd: string }, subnet: string, gateway: string): boolean {
  const ip = String(doc.get('ip') ?? '');
  const prefixLen = Number(subnet.split('/')[1]);
  doc.delete('boot');
  const pair = doc.createPair('boot', { kernel: vm.kernel, initrd: vm.initrd, append: vmAppend(name, ip, prefixLen, gateway) });
  (pair.key as Scalar).commentBefore = NOTE;
  (doc.contents as YAMLMap).items.push(pair);
  const mem = doc.getIn(['resources', 'memoryMiB']);
  if (typeof mem !== 'number' || mem > LAB_VM_MEMORY_MIB) setNoted(doc, ['resources', 'memoryMiB'], LAB_VM_MEMORY_MIB);
  return true;
}

/** Set a scalar and mark it as the lab's; false when it already had that value. */
function setNoted(doc: Document, at: string[], value: string | number): boolean {
  if (doc.getIn(at) === value) return false;
  const node = doc.createNode(value);
  node.comment = NOTE;
  doc.setIn(at, node);
  return true;
}

/** The lab commit's message: what was changed and why, for `git log` readers. */
export function labCommitMessage(prefix: string, changed: TextFiles, opts: LabStateOptions): string {
  const files = Object.keys(changed);
  const lines = [`lab: run this state in the cgw-sync lab (prefix ${prefix})`, ''];
  if (files.some((f) => f.startsWith('nodes/')) && opts.vm) {
    lines.push('- nodes/*.yaml: hypervisor qemu. In the lab a node is a network namespace; its guests are');
    lines.push('  qemu VMs running in it, each with a tap on its guest bridge (lab up --guests qemu).');
  } else if (files.some((f) => f.startsWith('nodes/'))) {
    lines.push('- nodes/*.yaml: hypervisor netns. In the lab a node is a network namespace, and its guests');
    lines.push('  are network namespaces attached to its guest bridge (the netns guest driver).');
  }
  if (files.some((f) => f.startsWith('guests/')) && opts.vm) {
    lines.push(`- guests/*.yaml: boot the lab's Debian kernel and busybox initramfs (${path.dirname(opts.vm.kernel)}),`);
    lines.push('  IP and gateway on the kernel command line, at most 256 MiB; its /init runs the lab responder');
    lines.push('  (HTTP :80, TCP :22, UDP :123: "this is <guest> OK from <source> via <service>").');
  } else if (files.some((f) => f.startsWith('guests/'))) {
    lines.push('- guests/*.yaml: netns.command runs the lab responder: HTTP on :80, a banner on TCP :22 and');
    lines.push('  a UDP echo on :123, each answering "this is <guest> OK from <source> via <service>".');
  }
  if (files.includes('cluster.yaml') && opts.mode) lines.push(`- cluster.yaml: nat.mode ${opts.mode} (lab up --mode).`);
  if (opts.ipv6) {
    lines.push('- dual stack (lab up --ipv6): cluster.yaml ipv6 (fd05:5:5::/64, gateway twin of gatewayIP,');
    lines.push('  link-local fe80::1), nodes publicIPv6/nodeIPv6 and guests ipv6: the IPv6 twin of each IPv4');
    lines.push('  address, its last octet as the last group (10.5.5.201 -> fd05:5:5::201).');
  }
  const added = Object.keys(opts.extraFiles ?? {}).sort();
  if (added.length) {
    lines.push(`- ${added.join(', ')}: added by lab up --nodes ${opts.nodes} (copies of the first node and guest with`);
    lines.push("  the next free addresses; forwards so every node's traffic reaches guests on other nodes).");
  }
  if ((opts.nodes ?? 0) > 2 && files.includes('cluster.yaml')) {
    lines.push(`- cluster.yaml: what ${opts.nodes} nodes need: nat.ctSync.multicastGroup (ct-sync) and a nat.portStride every natTag fits in (stateless-nat), where missing.`);
  }
  if (opts.statusKeys) {
    lines.push('- nodes/*.yaml: statusKey, the public key of a signing key the lab made for each node (its');
    lines.push('  agent signs its status commits with it); cluster.yaml: statusSignatures: required.');
  }
  if (Object.entries(changed).some(([f, text]) => f.startsWith('nodes/') && /^natTag: .*# lab:/m.test(text))) {
    lines.push('- nodes/*.yaml: natTag 1, 2, ... in file order, where missing (stateless-nat needs one per node).');
  }
  return `${lines.join('\n')}\n`;
}

/** Every regular file under dir, relative paths with forward slashes (.git excluded). */
async function readTextFiles(dir: string): Promise<TextFiles> {
  const out: TextFiles = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const rel = path.relative(dir, path.join(e.parentPath ?? e.path, e.name)).split(path.sep).join('/');
    if (rel.startsWith('.git/')) continue;
    out[rel] = await readFile(path.join(dir, rel), 'utf8');
  }
  return out;
}

export interface SeededRepo {
  /** Path of the bare repository. */
  repo: string;
  /** The seed commit (the state as it is) and the lab commit on top (main's tip). */
  seed: string;
  revision: string;
}

/**
 * Create `<projectRoot>/<name>` seeded from `stateDir` plus the lab's adjustments (two commits on
 * main). The adjustments are made in a scratch copy under projectRoot, removed before returning.
 */
export async function seedLabRepo(
  projectRoot: string,
  name: string,
  stateDir: string,
  prefix: string,
  opts: LabStateOptions,
): Promise<SeededRepo> {
  const repo = await createBareRepo(projectRoot, name, { seedDir: stateDir, message: `seed: ${path.basename(path.resolve(stateDir))} as it is` });
  const seed = (await run('git', ['--git-dir', repo, 'rev-parse', 'refs/heads/main'])).stdout.trim();
  const work = await mkdtemp(path.join(projectRoot, '.seed-'));
  try {
    await cp(stateDir, work, { recursive: true });
    for (const [file, text] of Object.entries(opts.extraFiles ?? {})) {
      await mkdir(path.dirname(path.join(work, file)), { recursive: true });
      await writeFile(path.join(work, file), text);
    }
    const changed = labAdjustments(await readTextFiles(work), opts);
    for (const [file, text] of Object.entries(changed)) await writeFile(path.join(work, file), text);
    const revision = await commitDirectory(repo, work, { message: labCommitMessage(prefix, changed, opts) });
    return { repo, seed, revision };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Check out `ref` of the bare repository into a new directory under `parent` (caller removes it). */
export async function checkoutRepo(repo: string, ref: string, parent: string): Promise<{ dir: string; revision: string }> {
  const dir = await mkdtemp(path.join(parent, 'cgw-lab-state-'));
  const revision = (await run('git', ['--git-dir', repo, 'rev-parse', '--verify', `${ref}^{commit}`])).stdout.trim();
  // A throw-away index keeps the bare repository untouched.
  const env = { GIT_INDEX_FILE: path.join(dir, '.index'), GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' };
  await run('git', ['--git-dir', repo, '--work-tree', dir, 'read-tree', revision], { env });
  await run('git', ['--git-dir', repo, '--work-tree', dir, 'checkout-index', '--all'], { env });
  await rm(env.GIT_INDEX_FILE, { force: true });
  return { dir, revision };
}
