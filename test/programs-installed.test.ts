// Every program that src/, test/, scripts/ or the README's commands run must come from a Debian
// package that scripts/install.sh installs (or one every Debian system has: Essential: yes).
// A fresh machine once failed 14 tests because the probes ran tcpdump and install.sh did not
// install it. The programs are found from the call sites (test/helpers/spawned-programs.ts) and
// mapped to their packages with `dpkg -S` on this machine.
import { accessSync, constants, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runUnchecked } from '../src/netns/netns.js';
import {
  commandWordsInShell,
  installedPackages,
  parseDpkgSearch,
  programsInTypeScript,
  shellBlocks,
  shellFunctions,
  type ProgramUse,
} from './helpers/spawned-programs.js';

const ROOT = path.join(import.meta.dirname, '..');

/** Run, but not installed by install.sh, on purpose. */
const NOT_FROM_INSTALL_SH: Record<string, string> = {
  node: 'the runtime: install.sh checks for Node.js >= 20.5, it does not install it',
  npm: 'comes with Node.js',
  'cgw-sync': 'the program itself: on a node its own Debian package installs it (README, Install on a node)',
  npx: 'comes with Node.js',
  'apt-get': 'what install.sh installs with: Debian\'s package manager, there before anything else',
  systemctl: 'install.sh runs it only where systemd is (`command -v`), to keep the conntrackd service off',
  xl: 'the Xen toolstack exists only on a Xen dom0; the tests give the Xen driver recorded `xl` outputs',
};

/** Files under dir (recursively) whose name ends with ext. */
function filesUnder(dir: string, ext: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : filesUnder(p, ext);
    return e.name.endsWith(ext) ? [p] : [];
  });
}

const rel = (p: string) => path.relative(ROOT, p);
const read = (p: string) => readFileSync(p, 'utf8');

/** Programs run from TypeScript in src/ and test/ (the scanner and this file only describe call shapes). */
function typeScriptUses(): ProgramUse[] {
  const skip = new Set([path.join(ROOT, 'test', 'helpers', 'spawned-programs.ts'), import.meta.filename]);
  return [...filesUnder(path.join(ROOT, 'src'), '.ts'), ...filesUnder(path.join(ROOT, 'test'), '.ts')]
    .filter((f) => !skip.has(f))
    .flatMap((f) => programsInTypeScript(rel(f), read(f)));
}

/** Command words of the scripts, CI and the README's shell blocks, without their own functions. */
function shellUses(): ProgramUse[] {
  const scripts = [...filesUnder(path.join(ROOT, 'scripts'), '.sh'), path.join(ROOT, '.ci', 'run')];
  const fromScripts = scripts.flatMap((f) => {
    const text = read(f);
    const own = shellFunctions(text);
    return commandWordsInShell(rel(f), text).filter((u) => !own.has(u.program));
  });
  const fromReadme = shellBlocks(read(path.join(ROOT, 'README.md'))).flatMap((b) => commandWordsInShell('README.md', b.text, b.line));
  return [...fromScripts, ...fromReadme];
}

/** The words bash itself runs (builtins, keywords), which are no programs. */
async function shellBuiltins(words: string[]): Promise<Set<string>> {
  const r = await runUnchecked('bash', ['-c', 'for w in "$@"; do echo "$w $(type -t "$w")"; done', 'bash', ...words]);
  return new Set(
    r.stdout
      .split('\n')
      .map((l) => l.split(' '))
      .filter(([, kind]) => kind === 'builtin' || kind === 'keyword')
      .map(([w]) => w),
  );
}

/** The executable a program name runs, as root's PATH finds it. */
function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs.filter(Boolean)) {
    const p = path.join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Debian packages owning an executable; dpkg knows merged-/usr files by their /bin, /sbin names. */
async function packagesOf(file: string): Promise<string[]> {
  const real = realpathSync(file);
  const candidates = [...new Set([file, real].flatMap((p) => (p.startsWith('/usr/') ? [p, p.slice(4)] : [p])))];
  for (const c of candidates) {
    const found = parseDpkgSearch((await runUnchecked('dpkg', ['-S', c])).stdout);
    if (found.length) return found;
  }
  return [];
}

async function essential(pkg: string): Promise<boolean> {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a dpkg-query format, not a template
  return (await runUnchecked('dpkg-query', ['-W', '-f=${Essential}', pkg])).stdout.trim() === 'yes';
}

describe('every program the code runs is installed by scripts/install.sh', () => {
  let tsUses: ProgramUse[];
  let shUses: ProgramUse[];
  beforeAll(() => {
    tsUses = typeScriptUses();
    shUses = shellUses();
  });

  it('finds the programs from their call sites', () => {
    const programs = new Set(tsUses.map((u) => u.program));
    // A sample the scanner must see (each shape once): a broken scanner would pass everything.
    for (const p of ['nft', 'ip', 'tcpdump', 'socat', 'curl', 'conntrackd', 'qemu-system-x86_64']) expect(programs, p).toContain(p);
    expect(new Set(shUses.map((u) => u.program))).toContain('apt-get');
  });

  it('maps each to a Debian package that install.sh names (or an Essential one)', async () => {
    const packages = new Set(installedPackages(read(path.join(ROOT, 'scripts', 'install.sh'))));
    const builtins = await shellBuiltins([...new Set(shUses.map((u) => u.program))]);
    const first = new Map<string, ProgramUse>();
    for (const u of [...tsUses, ...shUses.filter((s) => !builtins.has(s.program))]) if (!first.has(u.program)) first.set(u.program, u);

    const problem = async ({ program, where }: ProgramUse): Promise<string | undefined> => {
      if (NOT_FROM_INSTALL_SH[program]) return undefined;
      const file = findProgram(program);
      if (!file) return `${program} (run at ${where}) is not installed on this machine: add its Debian package to PACKAGES in scripts/install.sh`;
      const owners = await packagesOf(file);
      if (owners.length === 0) return `${program} (${file}, run at ${where}) belongs to no Debian package`;
      if (owners.some((p) => packages.has(p)) || (await Promise.all(owners.map(essential))).some(Boolean)) return undefined;
      return `${program} (run at ${where}) comes from Debian package ${owners.join(' or ')}, which scripts/install.sh does not install: add it to PACKAGES`;
    };
    const problems = (await Promise.all([...first.values()].map(problem))).filter((p): p is string => p !== undefined);
    expect(problems).toEqual([]);
  });
});

describe('the scanner (pure)', () => {
  it('reads the call shapes, argv arrays, option defaults and shell commands', () => {
    const ts = [
      `await runIn(ns, 'tcpdump', ['-n']);`,
      `execa('ip', ['netns', 'exec', NS.guest, 'socat', 'TCP-LISTEN:1']);`,
      `new NftCli({ prefix: ['ip', 'netns', 'exec', ns] });`,
      `this.bin = opts.conntrackd ?? 'conntrackd'; this.branch = opts.branch ?? 'main';`,
    ].join('\n');
    expect(programsInTypeScript('x.ts', ts)).toEqual(
      expect.arrayContaining([
        { program: 'tcpdump', where: 'x.ts:1' },
        { program: 'ip', where: 'x.ts:2' },
        { program: 'socat', where: 'x.ts:2' },
        { program: 'ip', where: 'x.ts:3' },
        { program: 'conntrackd', where: 'x.ts:4' },
      ]),
    );
    expect(programsInTypeScript('x.ts', ts).map((u) => u.program)).not.toContain('main');

    const sh = `set -e\nx=$(node -p 'const a = 1; a')\nfoo() { echo; }\nFOO=1 dpkg-query -W nft && ip netns exec cgwlab-client curl -s http://x/ # wget\n`;
    expect(commandWordsInShell('s.sh', sh).map((u) => u.program)).toEqual(['set', 'node', 'foo', 'echo', 'dpkg-query', 'ip', 'curl']);
    expect([...shellFunctions(sh)]).toEqual(['foo']);
    expect(installedPackages('PACKAGES=(nftables tcpdump)\n')).toEqual(['nftables', 'tcpdump']);
    expect(parseDpkgSearch('diversion by dash from: /bin/sh\niproute2: /bin/ip\nlibc6:amd64, libc-bin: /x\n')).toEqual(['iproute2', 'libc6', 'libc-bin']);
  });
});
