// Pre-apply and post-apply hooks: executables in the hooks directory, run in name order.
//   <hooksDir>/pre-apply, <hooksDir>/pre-apply.d/*    (a non-zero exit vetoes the apply)
//   <hooksDir>/post-apply, <hooksDir>/post-apply.d/*  (failures are reported, nothing is undone)
// Each gets the plan JSON on stdin and in $CGW_PLAN_FILE, plus $CGW_NODE, $CGW_REVISION and
// $CGW_PHASE. The hook's output is kept (truncated, redacted) for the status report.
// A hook sees only the small environment of hookEnvironment(), never the agent's own: the agent's
// environment may hold its Git token (tokenEnv), and hooks are often scripts that print things.
import { execa } from 'execa';
import { access, constants, readdir, stat, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type HookPhase = 'pre-apply' | 'post-apply';

export interface HookResult {
  phase: HookPhase;
  hook: string;
  ok: boolean;
  exitCode: number | null;
  durationMs: number;
  /** Last lines of stdout+stderr. */
  output: string;
}

const OUTPUT_LIMIT = 2000;

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    if (!(await stat(path)).isFile()) return false;
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The executables for a phase, in the order they run. */
export async function findHooks(hooksDir: string, phase: HookPhase): Promise<string[]> {
  const found: string[] = [];
  if (await isExecutableFile(join(hooksDir, phase))) found.push(join(hooksDir, phase));
  const dotD = join(hooksDir, `${phase}.d`);
  const names = await readdir(dotD).catch(() => [] as string[]);
  for (const n of names.sort()) if (await isExecutableFile(join(dotD, n))) found.push(join(dotD, n));
  return found;
}

/** A fixed PATH: the agent's own PATH could name folders a hook should not trust. */
export const HOOK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The whole environment of a hook: PATH, LANG, TZ (when the agent has one), the agent config's
 * hookEnv, and the CGW_* variables of this run (which hookEnv cannot change). Documented in
 * hooks/pre-apply.example and the README.
 */
export function hookEnvironment(ctx: Pick<HookContext, 'node' | 'revision' | 'env'>, phase: HookPhase, planFile: string, agentEnv: NodeJS.ProcessEnv = process.env): Record<string, string> {
  return {
    PATH: HOOK_PATH,
    LANG: 'C.UTF-8',
    ...(agentEnv.TZ ? { TZ: agentEnv.TZ } : {}),
    ...ctx.env,
    CGW_NODE: ctx.node,
    CGW_REVISION: ctx.revision,
    CGW_PHASE: phase,
    CGW_PLAN_FILE: planFile,
  };
}

export interface HookContext {
  node: string;
  revision: string;
  planJson: unknown;
  timeoutMs: number;
  /** Extra variables (the agent config's hookEnv). */
  env?: Record<string, string>;
}

export async function runHooks(hooksDir: string | undefined, phase: HookPhase, ctx: HookContext): Promise<HookResult[]> {
  if (!hooksDir) return [];
  const hooks = await findHooks(hooksDir, phase);
  if (hooks.length === 0) return [];
  const dir = await mkdtemp(join(tmpdir(), 'cgw-sync-hook-'));
  const planFile = join(dir, 'plan.json');
  const planText = JSON.stringify(ctx.planJson, null, 2);
  await writeFile(planFile, planText, { mode: 0o600 });
  const results: HookResult[] = [];
  try {
    for (const hook of hooks) {
      const t0 = Date.now();
      const r = await execa(hook, [], {
        input: planText,
        all: true,
        reject: false,
        timeout: ctx.timeoutMs,
        killSignal: 'SIGKILL',
        env: hookEnvironment(ctx, phase, planFile),
        extendEnv: false,
      });
      const output = String(r.all ?? '').slice(-OUTPUT_LIMIT);
      const note = r.timedOut ? `\n(killed after ${ctx.timeoutMs} ms)` : '';
      const result: HookResult = { phase, hook, ok: r.exitCode === 0 && !r.timedOut, exitCode: r.exitCode ?? null, durationMs: Date.now() - t0, output: output + note };
      results.push(result);
      // One failing pre-apply hook is a veto; the others need not run.
      if (!result.ok && phase === 'pre-apply') break;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return results;
}
