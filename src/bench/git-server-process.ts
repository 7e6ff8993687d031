// The benchmark's Git smart-HTTP server (the lab's src/lab/git-serve.ts) as a process of its own:
// in production the server is another machine, so its work must not run on the measured agent's
// event loop. Started as a child of this process and stopped by its PID.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { distEntry } from '../lab/lab.js';

export interface GitServerProcess {
  /** URL of one repository under the project root. */
  repoUrl(name: string): string;
  stop(): Promise<void>;
}

/** Serve the bare repositories in `projectRoot` on a free loopback port; resolves once it listens. */
export async function startGitServerProcess(projectRoot: string, readyFile = join(projectRoot, '..', 'git-server.json')): Promise<GitServerProcess> {
  const child = spawn(process.execPath, [distEntry('lab/git-serve.js'), projectRoot, readyFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  // git-serve prints its "serving" line after it wrote the ready file: the event to wait for.
  const lines = createInterface({ input: child.stdout });
  const early = exited.then(([code]) => {
    throw new Error(`the Git server exited (${String(code)}) before it listened`);
  });
  early.catch(() => {}); // only a rejection while we wait below matters
  const first = await Promise.race([once(lines, 'line'), early]);
  lines.close();
  child.stdout.resume();
  if (!String(first[0]).includes('serving')) throw new Error(`the Git server said ${String(first[0])}`);
  const { url } = JSON.parse(await readFile(readyFile, 'utf8')) as { url: string };
  return {
    repoUrl: (name) => `${url}/${name}`,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}
