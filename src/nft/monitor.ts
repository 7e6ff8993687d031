// `nft monitor`: the kernel's ruleset change events, as the agent's trigger for foreign changes.
// nft 1.0.6 prints one line per changed object, then closes each committed transaction with
//   # new generation 7 by process 21503 (nft)
// so a transaction's events are grouped, and its writer's PID tells our own transactions (the
// backend knows its `nft -f` PIDs) from anyone else's. The parser is pure; the process is at the
// edge (startNftMonitor).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/** One changed object: `add element ip cgw_nat fwd_tcp { ... }` -> add, element, ip, cgw_nat. */
export interface MonitorEvent {
  verb: string;
  object: string;
  family?: string;
  /** Absent when the line could not be read: then it may be about any table. */
  table?: string;
  line: string;
}

/** One committed transaction (one generation) and who committed it. */
export interface MonitorBatch {
  generation: number;
  /** Absent when nft does not say (then the writer is unknown: treat it as foreign). */
  pid?: number;
  process?: string;
  events: MonitorEvent[];
}

const GENERATION = /^# new generation (\d+)(?: by process (\d+) \((.*)\))?\s*$/;
const EVENT = /^(\w+) ((?:ct |synproxy )?\w+) (ip|ip6|inet|netdev|bridge|arp) ("[^"]*"|\S+)/;

export function parseMonitorEvent(line: string): MonitorEvent {
  const m = EVENT.exec(line);
  if (!m) return { verb: line.split(' ')[0] ?? '', object: '', line };
  return { verb: m[1] as string, object: m[2] as string, family: m[3] as string, table: (m[4] as string).replace(/^"|"$/g, ''), line };
}

/** Feeds `nft monitor` lines one at a time; returns a batch when a line ends a generation. */
export class MonitorParser {
  private events: MonitorEvent[] = [];

  push(raw: string): MonitorBatch | undefined {
    const line = raw.trimEnd();
    if (line === '') return undefined;
    const g = GENERATION.exec(line);
    if (!g) {
      this.events.push(parseMonitorEvent(line));
      return undefined;
    }
    const batch: MonitorBatch = { generation: Number(g[1]), ...(g[2] && { pid: Number(g[2]), process: g[3] }), events: this.events };
    this.events = [];
    return batch;
  }
}

/** All batches in a recorded monitor output (tests, fixtures). */
export function parseMonitorOutput(text: string): MonitorBatch[] {
  const p = new MonitorParser();
  return text.split('\n').flatMap((l) => p.push(l) ?? []);
}

/** The tables ("family name") a batch touches; `unknown` when a line could not be read. */
export function touchedTables(b: MonitorBatch): { tables: Set<string>; unknown: boolean } {
  const tables = new Set<string>();
  let unknown = false;
  for (const e of b.events) {
    if (e.table === undefined) unknown = true;
    else tables.add(`${e.family} ${e.table}`);
  }
  return { tables, unknown };
}

export interface NftMonitor {
  pid: number;
  /** Resolves when the process has ended (stopped, killed, or failed), with how it ended. */
  exited: Promise<string>;
  /** Stop it (SIGTERM, then SIGKILL after a grace period) and wait until it is gone. */
  stop(): Promise<void>;
}

const STOP_GRACE_MS = 2_000;

/**
 * Run `argv` (an `nft monitor` command line) and hand each completed batch to `onBatch`.
 * `setpriv --pdeathsig KILL` makes the kernel kill the monitor when the agent dies, however it
 * dies: it never outlives the agent (a prefix like `ip netns exec` execs in the same process).
 */
export function startNftMonitor(argv: string[], onBatch: (b: MonitorBatch) => void): NftMonitor {
  const full = ['setpriv', '--pdeathsig', 'KILL', '--', ...argv];
  const child = spawn(full[0] as string, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const parser = new MonitorParser();
  createInterface({ input: child.stdout }).on('line', (line) => {
    const b = parser.push(line);
    if (b) onBatch(b);
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  const exited = new Promise<string>((resolve) => {
    child.on('error', (e) => resolve(`could not start ${full.join(' ')}: ${e.message}`));
    child.on('exit', (code, signal) => resolve(`${argv.join(' ')} ended (${signal ? `signal ${signal}` : `exit code ${code}`})${stderr.trim() ? `: ${stderr.trim()}` : ''}`));
  });
  return {
    pid: child.pid ?? -1,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}
