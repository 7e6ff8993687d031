// `npm run bench [-- --json | --json-file FILE]`: cgw-sync's latency and memory at 1,000, 10,000 and 50,000
// forwards, every figure beside its floor measured in the same run (raw nft, `node -e 0`, `git
// push`), as the table of issue 12 with its goals. Prints, never asserts: speed goals live here,
// not in tests. Needs root: it makes network namespaces (unique names, deleted again) and a lab.
//
//   CGW_BENCH_SIZES=1000,10000,50000   forwards per size
//   CGW_BENCH_ROUNDS=5                 rounds per figure (at most 3 at 50,000 forwards and more)
//   CGW_BENCH_SIZE_BUDGET_S=240        per size: no new round starts after this (at least one runs)
//   CGW_BENCH_PUSHES=5                 pushes in the lab
//   CGW_BENCH_LAB=0                    skip the lab (push-to-converged rows)
//   CGW_BENCH_WEBHOOK=0                skip the webhook variant of push-to-converged
//
// Each size runs in a process of its own (size-worker.ts), so its RSS is an agent's at that size.
import { writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { measurePushToConverged, webhookSupported, type PushFigures } from './lab-push.js';
import { CLI, measureNodeProcess, runNode, type ProcessSample } from './node-process.js';
import { benchRows, formatJson, formatTable, type BenchFigures, type Skipped } from './report.js';
import type { SizeFigures } from './size-worker.js';
import { median } from './stats.js';

const WORKER = fileURLToPath(new URL('./size-worker.js', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../state-example', import.meta.url));
/** Sizes from here on are slow enough per round that fewer rounds keep the bench bounded. */
const LARGE = 50_000;
const LARGE_ROUNDS = 3;
/** Synthetic forwards use public ports 10000.., the bench's extra ones the next few. */
const MAX_FORWARDS = 55_000;

export interface BenchSettings {
  sizes: number[];
  rounds: number;
  /** Seconds per size after which no new round starts. */
  sizeBudgetS: number;
  pushes: number;
  lab: boolean;
  webhook: boolean;
}

function positiveInt(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: ${JSON.stringify(text)} is not a positive whole number`);
  return n;
}

/** The settings from the environment (see the header). */
export function benchSettings(env: NodeJS.ProcessEnv): BenchSettings {
  const sizes = (env.CGW_BENCH_SIZES ?? '1000,10000,50000').split(',').map((s) => positiveInt('CGW_BENCH_SIZES', s.trim()));
  const tooMany = sizes.find((s) => s > MAX_FORWARDS);
  if (tooMany) throw new Error(`CGW_BENCH_SIZES: ${tooMany} forwards do not fit the synthetic public ports (at most ${MAX_FORWARDS})`);
  return {
    sizes,
    rounds: positiveInt('CGW_BENCH_ROUNDS', env.CGW_BENCH_ROUNDS ?? '5'),
    sizeBudgetS: positiveInt('CGW_BENCH_SIZE_BUDGET_S', env.CGW_BENCH_SIZE_BUDGET_S ?? '240'),
    pushes: positiveInt('CGW_BENCH_PUSHES', env.CGW_BENCH_PUSHES ?? '5'),
    lab: env.CGW_BENCH_LAB !== '0',
    webhook: env.CGW_BENCH_WEBHOOK !== '0',
  };
}

const roundsAt = (size: number, rounds: number) => (size >= LARGE ? Math.min(rounds, LARGE_ROUNDS) : rounds);
const progress = (line: string) => process.stderr.write(`bench: ${line}\n`);

/** `node -e 0` and `validate` of state-example, alternating, so both see the same load. */
async function processFloors(rounds: number): Promise<{ nodeStart: ProcessSample; cliStart: ProcessSample }> {
  const bare: ProcessSample[] = [];
  const cli: ProcessSample[] = [];
  for (let i = 0; i < rounds; i++) {
    bare.push(await measureNodeProcess(['-e', '0']));
    cli.push(await measureNodeProcess([CLI, 'validate', '--state', EXAMPLE]));
  }
  const med = (s: ProcessSample[]) => ({ ms: median(s.map((x) => x.ms)), maxRssMiB: median(s.map((x) => x.maxRssMiB)) });
  return { nodeStart: med(bare), cliStart: med(cli) };
}

/** One size in its own process (size-worker.ts); its progress goes to our stderr. */
async function sizeFigures(forwards: number, rounds: number, budgetS: number): Promise<SizeFigures> {
  const r = await runNode(['--expose-gc', WORKER, String(forwards), String(rounds), String(budgetS)], { inheritStderr: true });
  if (r.code !== 0) throw new Error(`the benchmark at ${forwards} forwards failed (exit ${r.code}; its error is above)`);
  return JSON.parse(r.stdout.trim().split('\n').pop() as string) as SizeFigures;
}

/** One lab for each variant; a lab that cannot come up (a busy machine) costs its row, not the run. */
async function pushFigures(s: BenchSettings): Promise<BenchFigures['push']> {
  const variant = async (webhook: boolean): Promise<PushFigures | Skipped> => {
    if (webhook && !webhookSupported()) return { skipped: 'n/a (no webhook support)' };
    if (!s.lab) return { skipped: 'off (CGW_BENCH_LAB=0)' };
    if (webhook && !s.webhook) return { skipped: 'off (CGW_BENCH_WEBHOOK=0)' };
    return measurePushToConverged(s.pushes, webhook, progress).catch((e: Error) => {
      progress(`lab failed: ${e.message}`);
      return { skipped: `failed: ${e.message.split('\n')[0]!.slice(0, 80)}` };
    });
  };
  return { schedule: await variant(false), webhook: await variant(true) };
}

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const s = benchSettings(process.env);
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root: it makes network namespaces and a lab');
  const rounds = Object.fromEntries(s.sizes.map((n) => [String(n), roundsAt(n, s.rounds)]));
  const started = new Date();
  progress(`node -e 0 and validate of state-example, ${s.rounds} rounds`);
  const floors = await processFloors(s.rounds);
  const sizes: Record<string, SizeFigures | Skipped> = {};
  for (const n of s.sizes) {
    // A size that fails (e.g. a limit of the loader) costs its rows, not the sizes after it.
    sizes[String(n)] = await sizeFigures(n, rounds[String(n)]!, s.sizeBudgetS).catch((e: Error) => {
      progress(e.message);
      return { skipped: `failed: ${e.message.split('\n')[0]!.slice(0, 80)}` };
    });
  }
  const push = await pushFigures(s);
  const figures: BenchFigures = {
    meta: { time: started.toISOString(), node: process.version, cpus: cpus().length, loadAvg: loadavg(), sizes: s.sizes, rounds, pushes: s.pushes },
    ...floors,
    sizes,
    push,
  };
  const rows = benchRows(figures);
  process.stdout.write(json ? formatJson(figures, rows) : formatTable(figures, rows));
  // Both forms from one run: the table on stdout, the JSON in a file.
  const jsonFile = process.argv[process.argv.indexOf('--json-file') + 1];
  if (process.argv.includes('--json-file') && jsonFile) await writeFile(jsonFile, formatJson(figures, rows));
  progress(`done in ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s`);
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
