// Planning node settings: a pure function of (desired, live), like planNft for the ruleset.
import { createHash } from 'node:crypto';
import { createTwoFilesPatch } from 'diff';
import type { NodeSettings } from './model.js';
import { LIVE_DESIRED, type DiffLabels } from '../plan/format.js';

/** What was read on the node (src/settings/host.ts). */
export interface LiveSettings {
  /** Current value of each desired key (sysctls and resets); undefined when the key does not exist there. */
  sysctls: Record<string, string | undefined>;
  conntrackd: {
    /** Content of the configuration file; undefined when it is missing. */
    config?: string;
    /** The conntrackd cgw-sync started, when it is still alive. */
    running?: ConntrackdProcess;
  };
}

export interface ConntrackdProcess {
  pid: number;
  startTime: string;
  /** configHash() of the configuration it was started with. */
  configHash: string;
  /** Inode of the network namespace it was started in (/proc/<pid>/ns/net). */
  netns: number;
}

export type SettingsChange =
  | { kind: 'sysctl'; key: string; from?: string; to: string }
  | { kind: 'conntrackd-config'; path: string; from?: string; to: string }
  | { kind: 'conntrackd-start' | 'conntrackd-restart' | 'conntrackd-stop'; reason: string };

export interface SettingsPlan {
  changes: SettingsChange[];
}

export function configHash(config: string): string {
  return createHash('sha256').update(config).digest('hex').slice(0, 16);
}

export function planSettings(desired: NodeSettings, live: LiveSettings): SettingsPlan {
  const changes: SettingsChange[] = [];
  for (const [key, to] of Object.entries(desired.sysctls).sort(([a], [b]) => (a < b ? -1 : 1))) {
    const from = live.sysctls[key];
    if (from !== to) changes.push({ kind: 'sysctl', key, ...(from !== undefined && { from }), to });
  }
  for (const [key, to] of Object.entries(desired.resets).sort(([a], [b]) => (a < b ? -1 : 1))) {
    const from = live.sysctls[key];
    if (from !== undefined && from !== to) changes.push({ kind: 'sysctl', key, from, to });
  }
  const { running, config } = live.conntrackd;
  const want = desired.conntrackd;
  if (want) {
    if (config !== want.config) changes.push({ kind: 'conntrackd-config', path: want.paths.config, ...(config !== undefined && { from: config }), to: want.config });
    // conntrackd cannot reload its configuration: a changed one means a restart.
    if (!running) changes.push({ kind: 'conntrackd-start', reason: 'not running' });
    else if (running.configHash !== configHash(want.config)) changes.push({ kind: 'conntrackd-restart', reason: 'configuration changed' });
  } else if (running) {
    changes.push({ kind: 'conntrackd-stop', reason: `pid ${running.pid}: the NAT mode no longer uses conntrackd` });
  }
  return { changes };
}

function describe(c: SettingsChange): string {
  switch (c.kind) {
    case 'sysctl':
      return `~ sysctl ${c.key}: ${c.from ?? '(missing)'} -> ${c.to}`;
    case 'conntrackd-config':
      return `${c.from === undefined ? '+' : '~'} file ${c.path}`;
    case 'conntrackd-start':
      return `+ conntrackd: start (${c.reason})`;
    case 'conntrackd-restart':
      return `~ conntrackd: restart (${c.reason})`;
    case 'conntrackd-stop':
      return `- conntrackd: stop (${c.reason})`;
  }
}

/** Human plan: one line per change; a configuration file change comes with its unified diff. */
export function formatSettingsPlanText(plan: SettingsPlan, labels: DiffLabels = LIVE_DESIRED): string {
  if (plan.changes.length === 0) return 'settings: no changes; sysctls and conntrackd match the desired state.\n';
  const out = ['settings:'];
  for (const c of plan.changes) {
    out.push(`  ${describe(c)}`);
    if (c.kind === 'conntrackd-config') {
      const patch = createTwoFilesPatch(`${labels.from}${c.path}`, `${labels.to}${c.path}`, c.from ?? '', c.to, '', '', { context: 2 });
      out.push(...patch.split('\n').filter((l) => l && !l.startsWith('Index:') && !l.startsWith('====')).map((l) => `    ${l}`));
    }
  }
  return out.join('\n') + '\n';
}

/** The machine-readable settings part of a plan (docs/plan-format.md). */
export function settingsPlanJson(plan: SettingsPlan) {
  return {
    changed: plan.changes.length > 0,
    changes: plan.changes.map((c) => ({ ...c, summary: describe(c) })),
  };
}
