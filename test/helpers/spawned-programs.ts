// Which programs the code runs, read from its source text (pure functions; the test that uses
// them is test/programs-installed.test.ts). Derived from the call sites, not a hand list, so a
// new `runIn(ns, 'tcpdump', ...)` is seen the day it is written.

/** A program and where it is run (file:line), for a failure message that says where to look. */
export interface ProgramUse {
  program: string;
  where: string;
}

const PROGRAM = String.raw`([A-Za-z0-9][\w.+-]*)`;

/**
 * The TypeScript call shapes that start a process with a literal program name:
 *   execa/spawn/execFile/run/runUnchecked/exec('prog', ...)
 *   runIn/runInUnchecked/inNs(ns, 'prog', ...)            a program inside a namespace
 *   [..., 'netns', 'exec', ns, 'prog', ...]                 the same, as an argv
 *   prefix: ['prog', ...] / command: ['prog', ...]         argv prefixes and commands
 *   opts.nft ?? 'nft', opts.binary ?? 'qemu-...'            a program option's default (an option
 *                                                           named after its program, or `binary`)
 */
const TS_PATTERNS: RegExp[] = [
  new RegExp(String.raw`\b(?:execa|execaSync|spawn|spawnSync|execFile|execFileSync|run|runUnchecked|exec)\(\s*'${PROGRAM}'`, 'g'),
  new RegExp(String.raw`\b(?:runIn|runInUnchecked|inNs)\(\s*[^,()]+,\s*'${PROGRAM}'`, 'g'),
  new RegExp(String.raw`'netns',\s*'exec',\s*[^,\]]+,\s*'${PROGRAM}'`, 'g'),
  new RegExp(String.raw`\b(?:prefix|command)\s*:\s*\[\s*'${PROGRAM}'`, 'g'),
];
const OPTION_DEFAULT = new RegExp(String.raw`\bopts\.(\w+)\s*\?\?\s*'${PROGRAM}'`, 'g');

function lineOf(text: string, index: number): number {
  return text.slice(0, index).split('\n').length;
}

/** Programs a TypeScript source starts, with their lines. */
export function programsInTypeScript(file: string, text: string): ProgramUse[] {
  const uses: ProgramUse[] = [];
  for (const re of TS_PATTERNS) {
    for (const m of text.matchAll(re)) uses.push({ program: m[1], where: `${file}:${lineOf(text, m.index!)}` });
  }
  for (const m of text.matchAll(OPTION_DEFAULT)) {
    if (m[1] === m[2] || m[1] === 'binary') uses.push({ program: m[2], where: `${file}:${lineOf(text, m.index!)}` });
  }
  return uses;
}

/** The shell code blocks (```sh, ```bash, ```shell) of a Markdown text, each with its first line number. */
export function shellBlocks(markdown: string): Array<{ line: number; text: string }> {
  const blocks: Array<{ line: number; text: string }> = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(sh|bash|shell)\s*$/.test(lines[i])) continue;
    const start = i + 1;
    while (i + 1 < lines.length && !lines[i + 1].startsWith('```')) i++;
    blocks.push({ line: start + 1, text: lines.slice(start, i + 1).join('\n') });
    i++;
  }
  return blocks;
}

/** Replace text by spaces, keeping its newlines (so line numbers stay right). */
const blank = (text: string) => text.replace(/[^\n]/g, ' ');

/**
 * The command words of a shell text: the first word of each simple command (after assignments),
 * and the program after `ip netns exec <ns>`. First dropped, as they hold no commands: comments,
 * single-quoted text (e.g. a `node -e '...'` program), arithmetic, array assignments and
 * one-line double-quoted text without a command substitution. Builtins and functions are not told apart
 * here; the caller does that.
 */
export function commandWordsInShell(file: string, text: string, firstLine = 1): ProgramUse[] {
  const code = text
    .split('\n')
    .map((l) => l.replace(/(^|\s)#.*$/, ''))
    .join('\n')
    .replace(/'[^']*'/g, blank)
    .replace(/\$\(\([^)]*\)\)/g, blank)
    .replace(/\b[A-Za-z_]\w*\+?=\([^)]*\)/g, blank)
    .replace(/"(?:[^"\\$\n]|\\.|\$(?!\())*"/g, blank);
  const uses: ProgramUse[] = [];
  code.split('\n').forEach((line, i) => {
    for (const segment of line.split(/&&|\|\||[;|`(){}!]|\$\(|\b(?:then|do|else|elif|if|while|until)\b/)) {
      const words = segment.trim().split(/\s+/).filter(Boolean);
      let k = 0;
      while (k < words.length && /^[A-Za-z_]\w*=/.test(words[k])) k++;
      const word = words[k];
      if (!word || !/^[a-z][\w.+-]*$/.test(word)) continue;
      const where = `${file}:${firstLine + i}`;
      uses.push({ program: word, where });
      if (word === 'ip' && words[k + 1] === 'netns' && words[k + 2] === 'exec' && words[k + 4]) uses.push({ program: words[k + 4], where });
    }
  });
  return uses;
}

/** Names defined as shell functions in a script (`name() {`): commands that are not programs. */
export function shellFunctions(text: string): Set<string> {
  return new Set([...text.matchAll(/^\s*([A-Za-z_][\w-]*)\s*\(\)\s*\{/gm)].map((m) => m[1]));
}

/** The PACKAGES=(...) array of scripts/install.sh. */
export function installedPackages(installSh: string): string[] {
  const m = /^PACKAGES=\(([^)]*)\)/m.exec(installSh);
  if (!m) throw new Error('scripts/install.sh has no PACKAGES=(...) line');
  return m[1].trim().split(/\s+/);
}

/** `dpkg -S` output ("pkg1, pkg2: /path" lines, maybe "diversion by ...") -> package names. */
export function parseDpkgSearch(output: string): string[] {
  return output
    .split('\n')
    .filter((l) => l.includes(': ') && !l.startsWith('diversion'))
    .flatMap((l) => l.slice(0, l.lastIndexOf(': ')).split(',').map((p) => p.trim().replace(/:.*$/, '')))
    .filter(Boolean);
}
