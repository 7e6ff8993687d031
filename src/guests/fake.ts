// An in-memory guest driver for unit tests, beside the real ones: start and stop change a list,
// a guest is "running" with the fingerprint it was started with. `failStart` makes a start fail.
// Live migration between fakes that share a FakeFabric: startIncoming registers a paused
// destination at its address, migrateOut hands the guest to it (`failMigration`: it refuses, and
// the destination exits as qemu's does).
import { desiredFingerprint, type GuestDriver, type IncomingListen, type LiveMigrator, type MigrationResult, type MigrationTarget, type RunningGuest, type StartContext, type StopResult } from './driver.js';
import type { GuestSpec } from '../state/types.js';

/** The network between fake nodes: who listens where for an incoming migration. */
export class FakeFabric {
  readonly listeners = new Map<string, { driver: FakeGuests; name: string }>();
}

const address = (t: MigrationTarget) => `${t.host}:${t.port}`;

export class FakeGuests implements GuestDriver, LiveMigrator {
  readonly kind = 'netns' as const;
  readonly guests = new Map<string, RunningGuest>();
  /** Every start and stop, in order ("start guest1", "stop guest2"). */
  readonly history: string[] = [];
  failStart = new Set<string>();
  /** Guests whose migrations fail (the source keeps them, the destination exits). */
  failMigration = new Set<string>();

  constructor(readonly fabric = new FakeFabric()) {}

  async list(): Promise<RunningGuest[]> {
    return [...this.guests.values()].map((g) => ({ ...g }));
  }

  async start(guest: GuestSpec, ctx: StartContext): Promise<void> {
    this.history.push(`start ${guest.name}`);
    if (this.failStart.has(guest.name)) throw new Error(`guest ${guest.name} would not start`);
    this.guests.set(guest.name, { name: guest.name, state: 'running', managed: true, fingerprint: desiredFingerprint(guest, ctx.node) });
  }

  async startIncoming(guest: GuestSpec, ctx: StartContext, listen: IncomingListen): Promise<void> {
    this.history.push(`incoming ${guest.name} ${address(listen)} attempt ${listen.attempt}`);
    if (this.fabric.listeners.has(address(listen))) throw new Error(`${address(listen)} is in use`);
    this.guests.set(guest.name, { name: guest.name, state: 'paused', managed: true, fingerprint: desiredFingerprint(guest, ctx.node), incoming: { ...listen } });
    this.fabric.listeners.set(address(listen), { driver: this, name: guest.name });
  }

  async migrateOut(name: string, to: MigrationTarget): Promise<MigrationResult> {
    this.history.push(`migrate ${name} to ${address(to)}`);
    const dest = this.fabric.listeners.get(address(to));
    const here = this.guests.get(name);
    if (!here) throw new Error(`${name} does not run here`);
    if (dest) {
      this.fabric.listeners.delete(address(to));
      dest.driver.guests.delete(dest.name); // qemu -incoming exits after a failed or finished load
    }
    if (!dest || dest.name !== name || this.failMigration.has(name)) throw new Error(`live migration of ${name} to ${address(to)} failed; it still runs here`);
    dest.driver.guests.set(name, { ...here, state: 'running' });
    this.guests.delete(name);
    return { totalMs: 40, downtimeMs: 5 };
  }

  async stopIncoming(name: string): Promise<boolean> {
    const g = this.guests.get(name);
    if (g && !g.incoming) return false;
    await this.stop(name);
    return true;
  }

  async stop(name: string): Promise<StopResult> {
    this.history.push(`stop ${name}`);
    const g = this.guests.get(name);
    if (g?.incoming) this.fabric.listeners.delete(address(g.incoming));
    this.guests.delete(name);
    return 'clean';
  }
}
