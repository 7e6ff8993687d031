// Command-line parsing from one definition per command: which words name it, its options, its
// exit codes, its handler. Help texts and errors are generated from the same definitions, so a
// command's `--help` lists exactly the options it takes. Pure apart from the handlers.
import { parseArgs } from 'node:util';

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** Placeholder of a string option's value in help texts, e.g. DIR. */
  value?: string;
  default?: string | boolean;
  short?: string;
  help: string;
}

export type Values = Record<string, string | boolean | undefined>;

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

export interface CommandSpec {
  /** The words naming it: 'plan', 'lab up', 'guest release'. */
  name: string;
  /** Positional arguments after the name, e.g. ['guest']: exactly these are required. */
  args?: string[];
  /** One line for the command overview. */
  summary: string;
  /** More lines for its own --help. */
  details?: string;
  options: Record<string, OptionSpec>;
  /** Exit code -> what it means (README's exit-code table says the same; a test checks both). */
  exits: Record<number, string>;
  run: (values: Values, args: string[], io: Io) => Promise<number>;
}

/** A mistake in the command line: reported with the help pointer, exit 1. */
export class UsageError extends Error {}

const HELP: OptionSpec = { type: 'boolean', short: 'h', help: 'this help' };

/** "0 valid; 1 invalid": a command's exit codes as its help shows them (README: one column each). */
export function exitText(spec: CommandSpec): string {
  return Object.entries(spec.exits)
    .map(([code, meaning]) => `${code} ${meaning}`)
    .join('; ');
}

function optionLabel(name: string, o: OptionSpec): string {
  return `${o.short ? `-${o.short}, ` : ''}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`;
}

function columns(rows: [string, string][], indent = '  '): string {
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  return rows.map(([l, r]) => (l.length + 2 > width + 8 ? `${indent}${l}\n${indent}${' '.repeat(width)}${r}` : `${indent}${l.padEnd(width)}${r}`)).join('\n');
}

function synopsis(spec: CommandSpec): string {
  return `cgw-sync ${spec.name}${(spec.args ?? []).map((a) => ` <${a}>`).join('')}${Object.keys(spec.options).length ? ' [options]' : ''}`;
}

/** `cgw-sync <command> --help`. */
export function commandHelp(spec: CommandSpec): string {
  const options = Object.entries({ ...spec.options, help: HELP }).map(([n, o]): [string, string] => [optionLabel(n, o), o.help]);
  return [`Usage: ${synopsis(spec)}`, '', spec.summary, ...(spec.details ? ['', spec.details] : []), '', 'Options:', columns(options), '', `Exit codes: ${exitText(spec)}`, ''].join('\n');
}

/** `cgw-sync --help`: every command, one line each. */
export function overview(specs: CommandSpec[]): string {
  const rows = specs.map((s): [string, string] => [`${s.name}${(s.args ?? []).map((a) => ` <${a}>`).join('')}`, s.summary]);
  return `Usage: cgw-sync <command> [options]\n\nCommands:\n${columns(rows)}\n\n\`cgw-sync <command> --help\` lists a command's options and exit codes.\n`;
}

export interface Parsed {
  spec: CommandSpec;
  values: Values;
  args: string[];
  help: boolean;
}

/** The command words in argv that name a spec, longest first ('lab up' before 'lab'). */
function findSpec(argv: string[], specs: CommandSpec[]): CommandSpec | undefined {
  return [...specs].sort((a, b) => b.name.length - a.name.length).find((s) => s.name.split(' ').every((w, i) => argv[i] === w));
}

/** Why `option` is not `spec`'s: the commands that do take it, if any. */
function notAnOption(spec: CommandSpec, option: string, specs: CommandSpec[]): string {
  const name = option.replace(/^-+/, '').replace(/=.*$/, '');
  const takers = specs.filter((s) => name in s.options).map((s) => s.name);
  return takers.length
    ? `\`${spec.name}\` does not take ${option} (${takers.join(', ')} ${takers.length > 1 ? 'do' : 'does'})`
    : `unknown option ${option} for \`${spec.name}\``;
}

/**
 * Find the command argv names and parse its options strictly. Throws UsageError naming the
 * option and the command for anything the command does not take.
 */
export function parseCommand(argv: string[], specs: CommandSpec[]): Parsed {
  const spec = findSpec(argv, specs);
  if (!spec) {
    const groups = [...new Set(specs.filter((s) => s.name.includes(' ')).map((s) => s.name.split(' ')[0] as string))];
    const word = argv[0] as string;
    if (groups.includes(word)) {
      const subs = specs.filter((s) => s.name.startsWith(`${word} `)).map((s) => s.name.split(' ')[1]);
      throw new UsageError(argv[1] && !argv[1].startsWith('-') ? `unknown command "${word} ${argv[1]}" (${word} has: ${subs.join(', ')})` : `${word} needs one of: ${subs.join(', ')}`);
    }
    throw new UsageError(`unknown command "${word}" (commands: ${[...new Set(specs.map((s) => s.name.split(' ')[0]))].join(', ')})`);
  }
  const rest = argv.slice(spec.name.split(' ').length);
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: rest, options: { ...spec.options, help: HELP }, allowPositionals: true, strict: true });
  } catch (e) {
    const err = e as Error & { code?: string };
    const option = /'([^' ]+)/.exec(err.message)?.[1];
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option) throw new UsageError(notAnOption(spec, option, specs), { cause: spec });
    throw new UsageError(`${spec.name}: ${err.message}`, { cause: spec });
  }
  const values = parsed.values as Values;
  const args = parsed.positionals;
  if (values.help) return { spec, values, args, help: true };
  const wanted = spec.args ?? [];
  if (args.length > wanted.length) throw new UsageError(`\`${spec.name}\` takes no argument "${args[wanted.length]}"`, { cause: spec });
  if (args.length < wanted.length) throw new UsageError(`\`${spec.name}\` needs <${wanted[args.length]}>: ${synopsis(spec)}`, { cause: spec });
  return { spec, values, args, help: false };
}
