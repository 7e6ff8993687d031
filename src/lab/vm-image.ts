// What the lab's qemu guests boot (`lab up --guests qemu`): Debian's kernel and an initramfs built
// here, from Debian packages only and without a kernel installed on the host:
//   - `apt-get download` of linux-image-<ver>-amd64 (the version linux-image-amd64 depends on) and
//     busybox-static, unpacked with `dpkg-deb -x`;
//   - an initramfs assembled with that busybox (`busybox cpio -o -H newc | busybox gzip`): busybox,
//     the modules the VM needs with everything they depend on (virtio_pci, virtio_net with
//     net_failover and failover, the ACPI button, nf_tables with nat and redirect), and /init
//     (VM_INIT below);
//   - two programs copied from this host's own Debian packages with their shared libraries:
//     socat (package socat), because busybox's nc speaks no UDP and tells no peer address, and the
//     responder must answer "this is <guest> OK from <source> via <service>" on TCP and UDP; and
//     nft (package nftables), so the guest-side snippet of `cgw-sync render --guest` (stateless-nat)
//     runs inside the VM as the real nft, the same way a guest administrator would load it.
// Everything is cached under a root (default /var/cache/cgw-sync/lab-images) in a folder named by a
// hash of the package file names (which carry the versions), the init script and the copied
// programs, so labs share it and a package upgrade builds a new one.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../netns/netns.js';

export const DEFAULT_IMAGE_CACHE = '/var/cache/cgw-sync/lab-images';

/** Kernel modules /init loads (modprobe pulls in what they depend on). */
export const VM_MODULES = ['virtio_pci', 'virtio_net', 'evdev', 'button', 'crc32c_generic', 'nf_tables', 'nft_chain_nat', 'nft_redir'];
/** Host programs shipped into the initramfs (with their libraries). */
export const VM_HOST_PROGRAMS = ['socat', 'nft'];

/** The VM's serial ports: ttyS0 is the console (a log file), ttyS1 the lab's control shell. */
export const CONTROL_TTY = 'ttyS1';

/**
 * /init of the lab VM. Configuration from the kernel command line (boot.append in the state):
 *   cgw.name=<guest>  cgw.ip=<ip>/<prefix>  cgw.gw=<gateway>
 * It starts the responder on TCP :80 (HTTP), TCP :22 (a banner) and UDP :123, each answering like
 * the lab's netns responder, an echo on TCP and UDP :7, a shell on ttyS1 for the lab's checks (src/lab/guest-exec.ts), and
 * powers off on the ACPI power button (busybox acpid), so `stop` is a clean shutdown.
 */
export const VM_INIT = String.raw`#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /var/run /var/log /etc/acpi/PWRF
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${VM_MODULES.join(' ')}; do modprobe $m || echo "cgw-init: modprobe $m failed"; done
for kv in $(cat /proc/cmdline); do
  case "$kv" in
    cgw.name=*) NAME=$(echo "$kv" | cut -d= -f2) ;;
    cgw.ip=*) ADDR=$(echo "$kv" | cut -d= -f2) ;;
    cgw.gw=*) GW=$(echo "$kv" | cut -d= -f2) ;;
  esac
done
echo "$NAME" > /etc/guest-name
hostname "$NAME"
sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip link set lo up
ip link set eth0 up
ip addr add "$ADDR" dev eth0
ip route add default via "$GW"
# Announce the MAC (gratuitous ARP), as a real guest's network setup does: the bridges on the way
# learn where it is now, also when it was last seen behind another node's trunk port.
arping -U -c 2 -I eth0 "$(echo "$ADDR" | cut -d/ -f1)" > /dev/null 2>&1 &
# One small handler per service; socat passes the peer in SOCAT_PEERADDR.
cat > /bin/cgw-answer <<'EOF'
#!/bin/sh
echo "this is $(cat /etc/guest-name) OK from $SOCAT_PEERADDR via $1"
EOF
cat > /bin/cgw-http <<'EOF'
#!/bin/sh
cr=$(printf '\r')
while read -r line; do [ "$line" = "$cr" ] || [ -z "$line" ] && break; done
body=$(cgw-answer http/80)
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n' $(($(printf %s "$body" | wc -c) + 1)) "$body"
EOF
cat > /bin/cgw-banner <<'EOF'
#!/bin/sh
printf '%s\r\n' "$(cgw-answer tcp/22)"
EOF
chmod 755 /bin/cgw-answer /bin/cgw-http /bin/cgw-banner
socat TCP4-LISTEN:80,fork,reuseaddr EXEC:/bin/cgw-http &
socat TCP4-LISTEN:22,fork,reuseaddr EXEC:/bin/cgw-banner &
socat UDP4-RECVFROM:123,fork EXEC:'/bin/cgw-answer udp/123' &
# Echo on TCP and UDP :7 without a process per packet: a long-lived connection and a 10-ms UDP
# stream through a forward measure a live migration (test/e2e-lab-qemu.test.ts). UDP: one child
# per peer (without fork, UDP4-LISTEN answers its first peer only, for the VM's whole life), gone
# after 30 s of silence.
socat TCP4-LISTEN:7,fork,reuseaddr PIPE &
socat -T 30 UDP4-LISTEN:7,fork,reuseaddr PIPE &
printf '#!/bin/sh\npoweroff -f\n' > /etc/acpi/PWRF/00000080
chmod 755 /etc/acpi/PWRF/00000080
acpid -c /etc/acpi
echo "cgw-init: $NAME up at $ADDR via $GW"
stty -F /dev/${CONTROL_TTY} raw -echo
# Through a pipe, so the shell is not interactive (no prompt, no line editing echo).
while :; do cat /dev/${CONTROL_TTY} | sh > /dev/${CONTROL_TTY} 2>&1; done &
while :; do sleep 3600; done
`;

/** The kernel command line of a lab VM (the state's boot.append). */
export function vmAppend(name: string, ip: string, prefixLen: number, gateway: string): string {
  return `console=ttyS0 quiet panic=-1 cgw.name=${name} cgw.ip=${ip}/${prefixLen} cgw.gw=${gateway}`;
}

export interface VmImage {
  kernel: string;
  initrd: string;
  /** The cache folder they live in (an allowed image folder for the lab's agents). */
  dir: string;
  /** Kernel version, e.g. 6.1.0-57-amd64. */
  kernelVersion: string;
  /** True when this call built it, false when it came from the cache. */
  built: boolean;
}

/** Pure: the versioned kernel package from `apt-cache depends linux-image-amd64`. */
export function kernelPackageFrom(aptCacheDepends: string): string {
  const m = /Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b/.exec(aptCacheDepends);
  if (!m) throw new Error(`cannot find the kernel package in \`apt-cache depends linux-image-amd64\`:\n${aptCacheDepends.trim()}`);
  return m[1];
}

/** Pure: the .deb file names of `apt-get download --print-uris` ('URL' file size hash), in order. */
export function debFilesFrom(printUris: string): string[] {
  return printUris
    .split('\n')
    .map((l) => /^'[^']+'\s+(\S+\.deb)\s/.exec(l)?.[1])
    .filter((f): f is string => f !== undefined);
}

/** Pure: the shared-library paths in `ldd` output (including the dynamic loader). */
export function libsFromLdd(ldd: string): string[] {
  const out = new Set<string>();
  for (const line of ldd.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) out.add(m[1]);
  }
  return [...out].sort();
}

/**
 * Pure: the modules (paths relative to lib/modules/<ver>/, as in modules.dep) that `wanted` need,
 * dependencies included. Names compare with '-' and '_' alike, as modprobe does.
 */
export function moduleClosure(modulesDep: string, wanted: string[]): string[] {
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of modulesDep.split('\n')) {
    const [file, rest] = line.split(':');
    if (!file || rest === undefined) continue;
    deps.set(file, rest.trim().split(/\s+/).filter(Boolean));
    byName.set(moduleName(file), file);
  }
  const out = new Set<string>();
  const visit = (file: string) => {
    if (out.has(file)) return;
    out.add(file);
    for (const d of deps.get(file) ?? []) visit(d);
  };
  for (const w of wanted) {
    const file = byName.get(w.replaceAll('-', '_'));
    if (!file) throw new Error(`kernel module ${w} is not in the kernel package (modules.dep)`);
    visit(file);
  }
  return [...out].sort();
}

function moduleName(file: string): string {
  return path.basename(file).replace(/\.ko(\.[a-z]+)?$/, '').replaceAll('-', '_');
}

/** A program's absolute path from PATH (plus the sbin folders root has). */
async function whichProgram(name: string): Promise<string> {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin'].filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, name);
    if (existsSync(p)) return realpath(p);
  }
  throw new Error(`${name} is not installed (scripts/install.sh installs it)`);
}

/** Pure: the cache key of an image. */
export function imageKey(parts: string[]): string {
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 16);
}

/**
 * The lab VM image, from the cache when it is there, else downloaded and built (about 10-20 s, the
 * kernel package is ~70 MB). Safe against concurrent builders: each builds in its own folder and
 * renames it into place; the loser uses the winner's.
 */
export async function ensureVmImage(opts: { cacheRoot?: string; progress?: (line: string) => void } = {}): Promise<VmImage> {
  const root = opts.cacheRoot ?? DEFAULT_IMAGE_CACHE;
  const say = opts.progress ?? (() => {});
  const kernelPkg = kernelPackageFrom((await run('apt-cache', ['depends', 'linux-image-amd64'])).stdout);
  const packages = [kernelPkg, 'busybox-static'];
  const files = debFilesFrom((await run('apt-get', ['download', '--print-uris', ...packages])).stdout);
  // apt orders them as it likes: match each package to its file (<package>_<version>_<arch>.deb).
  const debs = packages.map((p) => {
    const f = files.find((x) => x.startsWith(`${p}_`));
    if (!f) throw new Error(`apt-get download --print-uris ${packages.join(' ')} named no file for ${p} (got ${files.join(', ')})`);
    return f;
  });
  const programs = await Promise.all(VM_HOST_PROGRAMS.map(whichProgram));
  const programStamps = await Promise.all(programs.map(async (p) => `${p} ${(await stat(p)).size} ${(await stat(p)).mtimeMs}`));
  const key = imageKey([...debs, VM_INIT, ...VM_MODULES, ...programStamps]);
  const kernelVersion = kernelPkg.replace(/^linux-image-/, '');
  const dir = path.join(root, key);
  const image = { kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.gz'), dir, kernelVersion };
  if (existsSync(image.initrd) && existsSync(image.kernel)) return { ...image, built: false };

  const debDir = path.join(root, 'debs');
  await mkdir(debDir, { recursive: true });
  const missing = packages.filter((_, i) => !existsSync(path.join(debDir, debs[i])));
  if (missing.length) {
    say(`vm image: apt-get download ${missing.join(' ')}`);
    await run('apt-get', ['download', ...missing], { cwd: debDir });
  }
  const work = await mkdtemp(path.join(root, '.build-'));
  try {
    say(`vm image: building ${key} (kernel ${kernelVersion})`);
    const [kdeb, bdeb] = debs.map((f) => path.join(debDir, f));
    const kx = path.join(work, 'kernel');
    const bx = path.join(work, 'busybox');
    await run('dpkg-deb', ['-x', kdeb, kx]);
    await run('dpkg-deb', ['-x', bdeb, bx]);
    const busybox = path.join(bx, 'bin', 'busybox');
    const out = path.join(work, 'out');
    await mkdir(out);
    await copyFile(path.join(kx, 'boot', `vmlinuz-${kernelVersion}`), path.join(out, 'vmlinuz'));
    const initramfs = path.join(work, 'root');
    await assembleInitramfs({ initramfs, kernelTree: kx, kernelVersion, busybox, programs });
    await run('sh', ['-c', 'cd "$1" && "$2" find . | "$2" cpio -o -H newc 2>/dev/null | "$2" gzip -9 > "$3"', 'sh', initramfs, busybox, path.join(out, 'initrd.gz')]);
    await rename(out, dir).catch((e: NodeJS.ErrnoException) => {
      // Another builder was faster: its image is the same.
      if (e.code !== 'ENOTEMPTY' && e.code !== 'EEXIST') throw e;
    });
    return { ...image, built: true };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function assembleInitramfs(o: { initramfs: string; kernelTree: string; kernelVersion: string; busybox: string; programs: string[] }): Promise<void> {
  const r = o.initramfs;
  for (const d of ['bin', 'dev', 'etc', 'proc', 'sys', 'tmp', 'run']) await mkdir(path.join(r, d), { recursive: true });
  await copyFile(o.busybox, path.join(r, 'bin', 'busybox'));
  await chmod(path.join(r, 'bin', 'busybox'), 0o755);
  await symlink('busybox', path.join(r, 'bin', 'sh'));
  await writeFile(path.join(r, 'init'), VM_INIT, { mode: 0o755 });

  // Modules: the kernel package ships no modules.dep (depmod runs at install); busybox depmod
  // writes one for the unpacked tree, then again for the subset copied.
  const modBase = path.join('lib', 'modules', o.kernelVersion);
  await run(o.busybox, ['depmod', '-b', o.kernelTree, o.kernelVersion]);
  const closure = moduleClosure(await readFile(path.join(o.kernelTree, modBase, 'modules.dep'), 'utf8'), VM_MODULES);
  for (const m of closure) {
    const to = path.join(r, modBase, m);
    await mkdir(path.dirname(to), { recursive: true });
    await copyFile(path.join(o.kernelTree, modBase, m), to);
  }
  await run(o.busybox, ['depmod', '-b', r, o.kernelVersion]);

  // Host programs with their libraries, at the same paths (the dynamic loader's path is fixed).
  const files = new Set<string>(o.programs);
  for (const p of o.programs) for (const lib of libsFromLdd((await run('ldd', [p])).stdout)) files.add(lib);
  for (const f of files) {
    const to = path.join(r, f);
    await mkdir(path.dirname(to), { recursive: true });
    await copyFile(await realpath(f), to);
    await chmod(to, 0o755);
  }
  // Debian's ld.so finds libraries in /lib/x86_64-linux-gnu and /usr/lib/x86_64-linux-gnu by default.
  for (const p of o.programs) {
    const inBin = path.join(r, 'bin', path.basename(p));
    if (!existsSync(inBin)) await symlink(p, inBin);
  }
  // Sanity check: busybox knows the applets /init uses.
  const applets = (await run(o.busybox, ['--list'])).stdout.split('\n');
  for (const a of ['modprobe', 'depmod', 'ip', 'acpid', 'stty', 'arping', 'nc', 'timeout', 'base64']) {
    if (!applets.includes(a)) throw new Error(`busybox-static lacks the ${a} applet`);
  }
}
