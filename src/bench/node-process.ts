// One Node process measured from the outside, as an operator would see it: wall time from spawn
// to exit, and its peak RSS reported by the maxrss-preload module at exit.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { median } from './stats.js';

export interface ProcessSample {
  ms: number;
  maxRssMiB: number;
}

/** The compiled CLI (dist/cli/bin.js), found beside this module without loading the lab module for it. */
export const CLI = fileURLToPath(new URL('../cli/bin.js', import.meta.url));

const PRELOAD = new URL('./maxrss-preload.js', import.meta.url).href;

export interface NodeRun {
  code: number | null;
  /** From spawn to exit. */
  ms: number;
  stdout: string;
  /** The end of its stderr (empty when stderr is inherited). */
  stderr: string;
}

/** Run `node ...args` to its exit; stderr captured, or shown as it comes with `inheritStderr`. */
export async function runNode(args: string[], opts: { env?: NodeJS.ProcessEnv; inheritStderr?: boolean } = {}): Promise<NodeRun> {
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', opts.inheritStderr ? 'inherit' : 'pipe'], env: opts.env ?? process.env });
  const out = { stdout: '', stderr: '' };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out.stdout += d;
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    out.stderr = (out.stderr + d).slice(-4000);
  });
  // Timed at exit; the result waits for close too (output still in the pipes).
  let ms = 0;
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', () => {
      ms = performance.now() - t0;
    });
    child.on('close', (c) => resolve(c));
  });
  return { code, ms, ...out };
}

/** `node --import <preload> ...args` once; throws (with its stderr) when it does not exit 0. */
export async function measureNodeProcess(args: string[]): Promise<ProcessSample> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-bench-rss-'));
  const rssFile = join(dir, 'maxrss');
  try {
    const r = await runNode(['--import', PRELOAD, ...args], { env: { ...process.env, CGW_BENCH_MAXRSS_FILE: rssFile } });
    if (r.code !== 0) throw new Error(`node ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    const kib = Number((await readFile(rssFile, 'utf8')).trim());
    return { ms: r.ms, maxRssMiB: kib / 1024 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Medians of wall time and peak RSS over `rounds` runs of the same process, or fewer when the
 * clock passes `until` (ms since the epoch; at least one run); `rounds` says how many ran.
 */
export async function medianNodeProcess(args: string[], rounds: number, until = Number.POSITIVE_INFINITY): Promise<ProcessSample & { rounds: number }> {
  const samples: ProcessSample[] = [];
  for (let i = 0; i < rounds && (i === 0 || Date.now() < until); i++) samples.push(await measureNodeProcess(args));
  return { ms: median(samples.map((s) => s.ms)), maxRssMiB: median(samples.map((s) => s.maxRssMiB)), rounds: samples.length };
}
