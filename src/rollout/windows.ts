// Change windows (as Argo CD's sync windows): cron schedules with a duration, `allow` or `deny`.
// A new revision from Git is applied only while no deny window is active and, if allow windows
// exist, one of them is; otherwise it waits ("waiting for window"). Drift of the applied
// revision is corrected or only reported, as the window that holds changes says. Pure but for
// the cron arithmetic (`nextAfter`, the cron package's CronTime at the edge).
import { createRequire } from 'node:module';

// The cron package (with luxon) loads on first use: a state without change windows, validated by
// `cgw-sync validate`, never needs it.
const cronTime = (schedule: string) => {
  const { CronTime } = createRequire(import.meta.url)('cron') as typeof import('cron');
  return new CronTime(schedule, 'UTC');
};

export interface ChangeWindow {
  kind: 'allow' | 'deny';
  /** Five-field cron (UTC): when the window opens. */
  schedule: string;
  durationMinutes: number;
  /** While this window holds changes back: correct drift of the applied revision, or only report it. */
  drift: 'correct' | 'report';
}

/** The first time `schedule` fires strictly after `from`. */
export type NextAfter = (schedule: string, from: Date) => Date;

export const cronNextAfter: NextAfter = (schedule, from) => cronTime(schedule).getNextDateFrom(from).toJSDate();

/** A cron schedule's problem, if any (for the state checks). */
export function scheduleProblem(schedule: string): string | undefined {
  try {
    cronTime(schedule);
    return undefined;
  } catch (e) {
    return `not a cron schedule (minute hour day month weekday): ${(e as Error).message}`;
  }
}

/** When the window is open at `now`: the end of the current opening; else undefined. */
export function openUntil(w: ChangeWindow, now: Date, nextAfter: NextAfter): Date | undefined {
  const ms = w.durationMinutes * 60_000;
  const opened = nextAfter(w.schedule, new Date(now.getTime() - ms));
  return opened.getTime() <= now.getTime() ? new Date(opened.getTime() + ms) : undefined;
}

export type WindowGate = { open: true } | { open: false; reason: string; drift: 'correct' | 'report' };

export function windowGate(windows: ChangeWindow[], now: Date, nextAfter: NextAfter = cronNextAfter): WindowGate {
  for (const w of windows.filter((x) => x.kind === 'deny')) {
    const until = openUntil(w, now, nextAfter);
    if (until) return { open: false, reason: `waiting for window: deny window "${w.schedule}" is active until ${until.toISOString()}`, drift: w.drift };
  }
  const allows = windows.filter((x) => x.kind === 'allow');
  if (allows.length === 0 || allows.some((w) => openUntil(w, now, nextAfter))) return { open: true };
  const next = allows.map((w) => nextAfter(w.schedule, now)).sort((a, b) => a.getTime() - b.getTime())[0]!;
  return { open: false, reason: `waiting for window: outside the allow windows; the next opens at ${next.toISOString()}`, drift: allows[0]!.drift };
}
