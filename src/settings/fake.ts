// In-memory node settings for unit tests, beside SettingsHost (as FakeNft is beside NftCli):
// sysctls as a map (a key that is absent does not exist; `readOnly` keys refuse writes), the
// conntrackd configuration file and process as plain values.
import type { ConntrackdPaths } from './conntrackd.js';
import type { ConntrackdHealth } from './host.js';
import type { NodeSettings } from './model.js';
import { configHash, type ConntrackdProcess, type LiveSettings, type SettingsPlan } from './plan.js';
import type { SettingsPort } from './reconcile.js';

export class FakeSettings implements SettingsPort {
  /** Every plan that was applied, in order. */
  readonly history: SettingsPlan[] = [];
  conntrackd: { config?: string; running?: ConntrackdProcess } = {};
  private nextPid = 1000;

  constructor(
    readonly sysctls: Record<string, string> = { 'net.ipv4.ip_forward': '0', 'net.netfilter.nf_conntrack_tcp_be_liberal': '0' },
    readonly readOnly = new Set<string>(),
  ) {}

  async readLive(desired: NodeSettings): Promise<LiveSettings> {
    const keys = [...Object.keys(desired.sysctls), ...Object.keys(desired.resets)];
    return { sysctls: Object.fromEntries(keys.map((k) => [k, this.sysctls[k]])), conntrackd: structuredClone(this.conntrackd) };
  }

  async apply(plan: SettingsPlan, desired: NodeSettings): Promise<void> {
    this.history.push(plan);
    for (const c of plan.changes) {
      if (c.kind === 'sysctl') {
        if (!(c.key in this.sysctls) || this.readOnly.has(c.key)) throw new Error(`sysctl ${c.key}=${c.to} failed: permission denied`);
        this.sysctls[c.key] = c.to;
      } else if (c.kind === 'conntrackd-config') this.conntrackd.config = c.to;
      else if (c.kind === 'conntrackd-stop') delete this.conntrackd.running;
      else if (desired.conntrackd) this.conntrackd.running = { pid: this.nextPid++, startTime: '1', configHash: configHash(desired.conntrackd.config), netns: 1 };
    }
  }

  async health(_paths: ConntrackdPaths): Promise<ConntrackdHealth> {
    const r = this.conntrackd.running;
    return r ? { running: true, pid: r.pid, stats: 'fake' } : { running: false };
  }
}
