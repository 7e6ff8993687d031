// `npm run bench:loader`: the cost of loading a state as a process, the way an operator and the
// agent pay it: `cgw-sync validate` of state-example beside a bare `node -e 0`, and of a state
// repository on disk with many forwards. Wall time (median) and the child's max RSS. Prints, never
// asserts. CPU time (user + system) is shown too: on a shared machine it says more than wall time.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { writeSyntheticStateRepo } from './synthetic.js';

const ROUNDS = Number(process.env.CGW_BENCH_ROUNDS ?? 5);
const SIZES = (process.env.CGW_BENCH_SIZES ?? '10000,50000').split(',').map(Number).filter((n) => n > 0);
const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../state-example/', import.meta.url));

/** Makes the child write its resource usage (max RSS in KiB, CPU times in µs) to $CGW_RSS_FILE as it exits. */
const RSS_REPORTER = `data:text/javascript,${encodeURIComponent(
  'import { writeFileSync } from "node:fs"; process.on("exit", () => writeFileSync(process.env.CGW_RSS_FILE, JSON.stringify(process.resourceUsage())));',
)}`;

interface Run {
  ms: number;
  cpuMs: number;
  rssMiB: number;
}

async function runOnce(args: string[], rssFile: string): Promise<Run> {
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', RSS_REPORTER, ...args], { stdio: 'ignore', env: { ...process.env, CGW_RSS_FILE: rssFile } });
    child.on('error', reject);
    child.on('exit', resolve);
  });
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`node ${args.join(' ')} exited ${code}`);
  const usage = JSON.parse(await readFile(rssFile, 'utf8')) as NodeJS.ResourceUsage;
  return { ms, cpuMs: (usage.userCPUTime + usage.systemCPUTime) / 1000, rssMiB: usage.maxRSS / 1024 };
}

async function median(args: string[], rssFile: string): Promise<Run> {
  const runs: Run[] = [];
  for (let i = 0; i < ROUNDS; i++) runs.push(await runOnce(args, rssFile));
  const mid = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  return { ms: mid(runs.map((r) => r.ms)), cpuMs: mid(runs.map((r) => r.cpuMs)), rssMiB: mid(runs.map((r) => r.rssMiB)) };
}

function row(what: string, r: Run, target: string): string {
  return `${what.padEnd(40)} ${r.ms.toFixed(0).padStart(6)} ms wall ${r.cpuMs.toFixed(0).padStart(6)} ms CPU ${r.rssMiB.toFixed(0).padStart(5)} MiB max RSS   (target ${target})`;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-bench-loader-'));
  const rssFile = join(dir, 'rss');
  try {
    const lines = [`cgw-sync loader benchmark: median of ${ROUNDS} processes`, ''];
    const bare = await median(['-e', '0'], rssFile);
    lines.push(row('node -e 0', bare, 'the floor'));
    lines.push(row('validate --state state-example', await median([BIN, 'validate', '--state', EXAMPLE], rssFile), '< 250 ms'));
    for (const forwards of SIZES) {
      const repo = join(dir, `state-${forwards}`);
      await writeSyntheticStateRepo(repo, forwards);
      const target = forwards <= 10_000 ? '< 300 ms' : '< 1500 ms, < 250 MiB';
      lines.push(row(`validate, ${forwards} forwards on disk`, await median([BIN, 'validate', '--state', repo], rssFile), target));
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
