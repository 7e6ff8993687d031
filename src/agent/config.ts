// The agent's own configuration file (schema/agent.schema.json), validated like state files:
// every problem with file, line, column and field.
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { StateError } from '../state/diagnostics.js';
import { statusBranchName } from '../git/status-branch.js';
import { validateDocument } from '../state/schema.js';
import type { Diagnostic } from '../state/types.js';
import { locate, parseYamlSource } from '../state/yaml-source.js';
import type { GuestPolicy } from '../guests/policy.js';

export interface AgentConfig {
  /** Absolute path of the file it came from. */
  file: string;
  node: string;
  source: {
    url: string;
    branch: string;
    path: string;
    tokenFile?: string;
    tokenEnv?: string;
    username?: string;
    trustedKeys: string[];
    allowNonDescendant: boolean;
    timeoutSeconds: number;
  };
  schedule: { cron: string; jitterSeconds: number };
  ownedTables: string[];
  drift: 'correct' | 'report';
  status: { url?: string; branch: string; dir?: string };
  hooksDir?: string;
  hookTimeoutSeconds: number;
  stateDir: string;
  nft: string;
  netns?: string;
  /** imageDirs, allowBlockDevices, allowCommands: the node's GuestPolicy (guests/policy.ts). */
  guests: { enabled: boolean; runDir: string; stopTimeoutSeconds: number } & GuestPolicy;
}

/** Relative paths in the file are relative to the file's folder, as an operator would expect. */
function resolvePaths(c: AgentConfig, base: string): AgentConfig {
  const abs = (p: string | undefined) => (p === undefined ? undefined : path.resolve(base, p));
  const isUrl = /^[a-z][a-z0-9+.-]*:\/\//i.test(c.source.url);
  return {
    ...c,
    source: {
      ...c.source,
      url: isUrl ? c.source.url : (abs(c.source.url) as string),
      tokenFile: abs(c.source.tokenFile),
      trustedKeys: c.source.trustedKeys.map((k) => abs(k) as string),
    },
    status: { ...c.status, dir: abs(c.status.dir) },
    hooksDir: abs(c.hooksDir),
    stateDir: abs(c.stateDir) as string,
    guests: { ...c.guests, runDir: abs(c.guests.runDir) as string },
  };
}

export async function loadAgentConfig(file: string): Promise<AgentConfig> {
  const abs = path.resolve(file);
  const text = await readFile(abs, 'utf8');
  const shown = path.basename(abs);
  const { source, diagnostics } = parseYamlSource(shown, text);
  if (diagnostics.length) throw new StateError(diagnostics);
  const data = source.doc.toJS() as Record<string, unknown>;
  const problems: Diagnostic[] = validateDocument('AgentConfig', data).map((p) => ({ ...locate(source, p.path, { key: p.unknownProperty }), message: p.message }));
  if (problems.length) throw new StateError(problems);
  const config = { ...(data as unknown as AgentConfig), file: abs, node: (data.node as string | undefined) ?? hostname().split('.')[0] };
  return resolvePaths(config, path.dirname(abs));
}

/** The status branch name for this node. */
export function statusBranch(c: AgentConfig): string {
  return statusBranchName(c.node, c.status.branch);
}
