// Node settings at the edge: read the live sysctls and conntrackd, apply a settings plan, report
// conntrackd's health. Commands run through the same prefix as nft (e.g. `ip netns exec <node>`),
// so per-namespace sysctls and conntrackd land in the node's namespace; files are host paths.
import { spawn } from 'node:child_process';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { writeFileAtomic } from '../fs/atomic.js';
import { dirname } from 'node:path';
import { runUnchecked } from '../netns/netns.js';
import { processAlive, processStartTime, terminate, waitUntil } from '../proc/process.js';
import type { NodeSettings } from './model.js';
import type { ConntrackdPaths } from './conntrackd.js';
import { configHash, type ConntrackdProcess, type LiveSettings, type SettingsPlan } from './plan.js';
import type { SettingsPort } from './reconcile.js';

export interface SettingsHostOptions {
  /** Command prefix, e.g. ["ip", "netns", "exec", "lab-node1"]; empty on a real node. */
  prefix?: string[];
  /** conntrackd binary (default from PATH). */
  conntrackd?: string;
  /** How long a started conntrackd gets to answer on its socket (default 5 s). */
  startTimeoutMs?: number;
  /** The node's named network namespace (`ip netns`); default: the one this process runs in. */
  netns?: string;
}

export interface ConntrackdHealth {
  running: boolean;
  pid?: number;
  /** `conntrackd -s` output (cache and traffic statistics) when it answered, else the error. */
  stats?: string;
  error?: string;
}

const STOP_GRACE_MS = 3_000;

export class SettingsHost {
  private readonly prefix: string[];
  private readonly bin: string;
  private readonly startTimeoutMs: number;
  private readonly netnsFile: string;

  constructor(opts: SettingsHostOptions = {}) {
    this.prefix = opts.prefix ?? [];
    this.bin = opts.conntrackd ?? 'conntrackd';
    this.startTimeoutMs = opts.startTimeoutMs ?? 5_000;
    this.netnsFile = opts.netns ? `/run/netns/${opts.netns}` : '/proc/self/ns/net';
  }

  /** The node's network namespace, by inode (what /proc/<pid>/ns/net of a process in it shows). */
  private nodeNetns(): Promise<number | undefined> {
    return netnsInode(this.netnsFile);
  }

  /** Every process the settings port starts (in the node's namespace) goes through here. */
  protected exec(cmd: string, args: string[]) {
    const argv = [...this.prefix, cmd, ...args];
    return runUnchecked(argv[0] as string, argv.slice(1));
  }

  async readSysctl(key: string): Promise<string | undefined> {
    const r = await this.exec('sysctl', ['-n', key]);
    return r.exitCode === 0 ? r.stdout.trim() : undefined;
  }

  /**
   * The conntrackd recorded in `paths.record`, if that very process (PID and start time) is still
   * alive and runs in this node's network namespace. Anything else is not ours: never stopped.
   */
  async runningConntrackd(paths: ConntrackdPaths): Promise<ConntrackdProcess | undefined> {
    const text = await readFile(paths.record, 'utf8').catch(() => undefined);
    if (!text) return undefined;
    const rec = JSON.parse(text) as ConntrackdProcess;
    if (!processAlive(rec.pid, rec.startTime)) return undefined;
    const [theirs, ours] = await Promise.all([netnsInode(`/proc/${rec.pid}/ns/net`), this.nodeNetns()]);
    return theirs !== undefined && theirs === ours && rec.netns === ours ? rec : undefined;
  }

  /**
   * Many sysctls in one process (`sysctl k1 k2 ...` prints `k = v` for each it can read); a key
   * missing from that answer (unreadable, or printed under another spelling) is read on its own.
   */
  async readSysctls(keys: string[]): Promise<Record<string, string | undefined>> {
    if (keys.length === 0) return {};
    const r = await this.exec('sysctl', keys);
    const found = parseSysctlLines(r.stdout);
    const values = await Promise.all(keys.map((k) => (found.has(k) ? found.get(k) : this.readSysctl(k))));
    return Object.fromEntries(keys.map((k, i) => [k, values[i]]));
  }

  /** Read what the desired settings talk about. `paths` locates conntrackd even when it is not desired (to stop it). */
  async readLive(desired: NodeSettings, paths: ConntrackdPaths): Promise<LiveSettings> {
    const sysctls = await this.readSysctls(settingsKeys(desired));
    const config = await readFile(paths.config, 'utf8').catch(() => undefined);
    const running = await this.runningConntrackd(paths);
    return {
      sysctls,
      conntrackd: { ...(config !== undefined && { config }), ...(running && { running }) },
    };
  }

  /** Carry out a plan in order: sysctls, configuration file, then the process. Throws on the first failure. */
  async apply(plan: SettingsPlan, desired: NodeSettings, paths: ConntrackdPaths): Promise<void> {
    for (const c of plan.changes) {
      switch (c.kind) {
        case 'sysctl': {
          const r = await this.exec('sysctl', ['-q', '-w', `${c.key}=${c.to}`]);
          if (r.exitCode !== 0) throw new Error(`sysctl ${c.key}=${c.to} failed: ${r.stderr.trim() || r.stdout.trim()}`);
          break;
        }
        case 'conntrackd-config':
          await writeFileAtomic(c.path, c.to);
          break;
        case 'conntrackd-stop':
          await this.stop(paths);
          break;
        case 'conntrackd-restart':
          await this.stop(paths);
          await this.start(desired, paths);
          break;
        case 'conntrackd-start':
          await this.start(desired, paths);
          break;
      }
    }
  }

  private async stop(paths: ConntrackdPaths): Promise<void> {
    const rec = await this.runningConntrackd(paths);
    if (rec) await terminate(rec.pid, rec.startTime, STOP_GRACE_MS);
    await rm(paths.record, { force: true });
    // conntrackd removes its lock on a clean exit; after SIGKILL the stale lock would block a start.
    await rm(paths.lockFile, { force: true });
  }

  private async start(desired: NodeSettings, paths: ConntrackdPaths): Promise<void> {
    if (!desired.conntrackd) return;
    await mkdir(dirname(paths.socket), { recursive: true });
    // Nothing of ours runs (the plan says so): a leftover lock or socket is from a crash.
    await rm(paths.lockFile, { force: true });
    await rm(paths.socket, { force: true });
    const argv = [...this.prefix, this.bin, '-C', paths.config];
    // Foreground conntrackd, detached from us: `ip netns exec` execs it, so this PID is conntrackd's.
    const child = spawn(argv[0] as string, argv.slice(1), { detached: true, stdio: 'ignore' });
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not start ${argv.join(' ')}`);
    child.unref();
    const startTime = processStartTime(pid) ?? '';
    const record: ConntrackdProcess = { pid, startTime, configHash: configHash(desired.conntrackd.config), netns: (await this.nodeNetns()) ?? 0 };
    await writeFileAtomic(paths.record, JSON.stringify(record) + '\n');
    const ready = await waitUntil(async () => !processAlive(pid, startTime) || (await this.stats(paths)).ok, this.startTimeoutMs, 20);
    if (!ready || !processAlive(pid, startTime)) {
      const log = await readFile(paths.logFile, 'utf8').catch(() => '');
      throw new Error(`conntrackd did not come up (${argv.join(' ')}): ${log.trim().split('\n').slice(-3).join(' | ') || 'no log'}`);
    }
  }

  private async stats(paths: ConntrackdPaths): Promise<{ ok: boolean; text: string }> {
    const r = await this.exec(this.bin, ['-C', paths.config, '-s']);
    return { ok: r.exitCode === 0 && r.stdout.trim().length > 0, text: r.exitCode === 0 ? r.stdout : r.stderr || r.stdout };
  }

  /** For the status report: is our conntrackd alive, and does it answer on its socket. */
  async health(paths: ConntrackdPaths): Promise<ConntrackdHealth> {
    const rec = await this.runningConntrackd(paths);
    if (!rec) return { running: false };
    const s = await this.stats(paths);
    return s.ok ? { running: true, pid: rec.pid, stats: s.text.trim() } : { running: true, pid: rec.pid, error: s.text.trim() || 'no answer on its socket' };
  }
}

async function netnsInode(file: string): Promise<number | undefined> {
  return stat(file).then(
    (s) => s.ino,
    () => undefined,
  );
}

/** The sysctl keys a node's settings talk about (set ones and reset ones). */
export function settingsKeys(desired: NodeSettings): string[] {
  return [...Object.keys(desired.sysctls), ...Object.keys(desired.resets)];
}

/** `sysctl` output lines `name = value` (the value as `sysctl -n` prints it, tabs kept). */
export function parseSysctlLines(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const i = line.indexOf(' = ');
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 3));
  }
  return out;
}

/**
 * The sysctls a long-running agent read last, trusted for `maxAgeMs` (like its committed nft
 * ruleset): a cycle in between spawns no process for them. Anything this agent applies forgets
 * them (the next cycle reads again), so only a change made by someone else waits for the next
 * full read: drift in a sysctl is found within maxAgeMs (plus the time to the next cycle).
 */
export function rememberedSysctls(port: SettingsPort, maxAgeMs: number, now: () => number = Date.now): SettingsPort & { forget(): void } {
  let held: { at: number; keys: string; sysctls: LiveSettings['sysctls'] } | undefined;
  return {
    forget: () => {
      held = undefined;
    },
    readLive: async (desired, paths) => {
      const keys = settingsKeys(desired).join('\0');
      if (held && held.keys === keys && now() - held.at < maxAgeMs) {
        // conntrackd's file and process are read each time: file reads, no process.
        const live = await port.readLive({ ...desired, sysctls: {}, resets: {} }, paths);
        return { ...live, sysctls: held.sysctls };
      }
      const at = now();
      const live = await port.readLive(desired, paths);
      held = { at, keys, sysctls: live.sysctls };
      return live;
    },
    apply: async (plan, desired, paths) => {
      held = undefined;
      await port.apply(plan, desired, paths);
    },
    health: (paths) => port.health(paths),
  };
}
