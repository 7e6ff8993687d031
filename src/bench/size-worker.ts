// `node --expose-gc dist/bench/size-worker.js <forwards> <rounds> <budget seconds>`: the benchmark's
// rows at one size (fewer rounds when the budget runs out), in a process of its own so that its RSS is that of an agent at this size alone (not of
// the sizes before it). Progress on stderr; one JSON line (SizeFigures) on stdout at the end.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { measureAgent, type AgentFigures } from './agent-rows.js';
import { CLI, medianNodeProcess, type ProcessSample } from './node-process.js';
import { collectGarbage, mib } from './stats.js';
import { writeSyntheticStateRepo } from './synthetic.js';

export interface SizeFigures {
  agent: AgentFigures;
  /** The agent process (this worker) after its cycles, garbage collected, and at its peak. */
  agentRss: { afterMiB: number; peakMiB: number };
  /** `cgw-sync validate --state <repository of this size>` as a process. */
  validate: ProcessSample & { rounds: number };
}

async function validateFigure(forwards: number, rounds: number, until: number): Promise<ProcessSample & { rounds: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-bench-validate-'));
  try {
    await writeSyntheticStateRepo(dir, forwards);
    return await medianNodeProcess([CLI, 'validate', '--state', dir], rounds, until);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const [forwards, rounds, budgetS] = process.argv.slice(2).map(Number);
  if (![forwards, rounds, budgetS].every((n) => Number.isInteger(n) && n >= 1)) throw new Error('usage: size-worker.js <forwards> <rounds> <budget seconds>');
  // A third of the budget for validate, the rest for the agent's rounds.
  const t0 = Date.now();
  const progress = (line: string) => process.stderr.write(`bench: ${line}\n`);
  progress(`${forwards} forwards: cgw-sync validate, ${rounds} rounds`);
  const validate = await validateFigure(forwards, rounds, t0 + (budgetS * 1000) / 3);
  const agent = await measureAgent(forwards, rounds, progress, t0 + budgetS * 1000);
  collectGarbage();
  const agentRss = { afterMiB: mib(process.memoryUsage().rss), peakMiB: process.resourceUsage().maxRSS / 1024 };
  const figures: SizeFigures = { agent, agentRss, validate };
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}

main().catch((e) => {
  process.stderr.write(`bench worker failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
