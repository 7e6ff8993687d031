// Running the CLI in tests: in process through main() with captured output, or as the built
// binary (optionally inside a network namespace, as an operator would with `ip netns exec`).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { execa } from 'execa';
import { main } from '../../src/cli/main.js';
import { capture, CLI_BIN } from './agent-fixture.js';

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

/** main(args) in this process. */
export async function cliMain(args: string[]): Promise<CliResult> {
  const io = capture();
  const code = await main(args, io);
  return { code, out: io.outText, err: io.errText };
}

/** The built binary; with `ns`, inside that network namespace (as an operator aims it: `ip netns exec`). */
export async function cliBin(args: string[], opts: { ns?: string; timeoutMs?: number; uid?: number; env?: Record<string, string> } = {}): Promise<CliResult> {
  if (!existsSync(CLI_BIN)) throw new Error(`${CLI_BIN} is missing: run \`npm run build\` (scripts/test.sh does)`);
  const argv = [...(opts.ns ? ['ip', 'netns', 'exec', opts.ns] : []), process.execPath, CLI_BIN, ...args];
  const ids = opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.uid };
  const r = await execa(argv[0] as string, argv.slice(1), { reject: false, timeout: opts.timeoutMs ?? 60_000, env: opts.env ?? {}, maxBuffer: 64 * 1024 * 1024, ...ids });
  return { code: r.exitCode ?? -1, out: String(r.stdout), err: String(r.stderr) };
}

export interface JsonLogProcess {
  child: ChildProcess;
  /** The JSON lines it printed so far (`--log json`). */
  lines: Record<string, unknown>[];
  stderr(): string;
  /** Resolves with [exit code, signal]. */
  exited: Promise<unknown[]>;
}

/** The built binary as a long-running process (`run --log json`), its stdout parsed line by line. */
export function spawnCliJson(args: string[]): JsonLogProcess {
  const child = spawn(process.execPath, [CLI_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit');
  const lines: Record<string, unknown>[] = [];
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    for (const p of parts) if (p.trim()) lines.push(JSON.parse(p));
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return { child, lines, stderr: () => stderr, exited };
}
