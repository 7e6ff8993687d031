// `node --expose-gc dist/bench/size-worker.js <forwards> <rounds>`: the benchmark's rows at one
// size, in a process of its own so that its RSS is that of an agent at this size alone (not of
// the sizes before it). Progress on stderr; one JSON line (SizeFigures) on stdout at the end.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { measureAgent, type AgentFigures } from './agent-rows.js';
import { CLI, medianNodeProcess, type ProcessSample } from './node-process.js';
import { collectGarbage, mib } from './stats.js';
import { writeSyntheticStateRepo } from './state-repo.js';

export interface SizeFigures {
  agent: AgentFigures;
  /** The agent process (this worker) after its cycles, garbage collected, and at its peak. */
  agentRss: { afterMiB: number; peakMiB: number };
  /** `cgw-sync validate --state <repository of this size>` as a process. */
  validate: ProcessSample;
}

async function validateFigure(forwards: number, rounds: number): Promise<ProcessSample> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-bench-validate-'));
  try {
    await writeSyntheticStateRepo(dir, forwards);
    return await medianNodeProcess([CLI, 'validate', '--state', dir], rounds);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const [forwards, rounds] = process.argv.slice(2).map(Number);
  if (!Number.isInteger(forwards) || !Number.isInteger(rounds) || forwards < 1 || rounds < 1) throw new Error('usage: size-worker.js <forwards> <rounds>');
  const progress = (line: string) => process.stderr.write(`bench: ${line}\n`);
  progress(`${forwards} forwards: cgw-sync validate, ${rounds} rounds`);
  const validate = await validateFigure(forwards, rounds);
  const agent = await measureAgent(forwards, rounds, progress);
  collectGarbage();
  const agentRss = { afterMiB: mib(process.memoryUsage().rss), peakMiB: process.resourceUsage().maxRSS / 1024 };
  const figures: SizeFigures = { agent, agentRss, validate };
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}

main().catch((e) => {
  process.stderr.write(`bench worker failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
