// An in-memory guest driver for unit tests, beside the real ones: start and stop change a list,
// a guest is "running" with the fingerprint it was started with. `failStart` makes a start fail.
import { desiredFingerprint, type GuestDriver, type RunningGuest, type StartContext, type StopResult } from './driver.js';
import type { GuestSpec } from '../state/types.js';

export class FakeGuests implements GuestDriver {
  readonly kind = 'netns' as const;
  readonly guests = new Map<string, RunningGuest>();
  /** Every start and stop, in order ("start guest1", "stop guest2"). */
  readonly history: string[] = [];
  failStart = new Set<string>();

  async list(): Promise<RunningGuest[]> {
    return [...this.guests.values()].map((g) => ({ ...g }));
  }

  async start(guest: GuestSpec, ctx: StartContext): Promise<void> {
    this.history.push(`start ${guest.name}`);
    if (this.failStart.has(guest.name)) throw new Error(`guest ${guest.name} would not start`);
    this.guests.set(guest.name, { name: guest.name, state: 'running', managed: true, fingerprint: desiredFingerprint(guest, ctx.node) });
  }

  async stop(name: string): Promise<StopResult> {
    this.history.push(`stop ${name}`);
    this.guests.delete(name);
    return 'clean';
  }
}
