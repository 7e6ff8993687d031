// `cgw-sync run` with its optional listener and metrics: the agent of src/agent/run.ts, whose
// cycles are observed into the metrics (served on /metrics, written to the textfile), and whose
// trigger() the webhook receiver pulls. Without listen and metrics.textfile it is the plain agent.
import type { CycleDeps, CycleObservation } from '../agent/cycle.js';
import { TOKEN_FILE_SIZE_LIMIT } from '../agent/config.js';
import { startAgent, type Agent } from '../agent/run.js';
import { readSmallFile } from '../agent/small-file.js';
import { AgentMetrics } from '../metrics/agent.js';
import { formatExposition } from '../metrics/exposition.js';
import { revisionCommitTime, writeTextfile } from '../metrics/textfile.js';
import { METRICS_PATH, startListener, type Listener, type ListenerLimits } from './server.js';

export interface ListeningAgent extends Agent {
  /** The listener's base URL, when one is configured. */
  url?: string;
  metrics: AgentMetrics;
  /** Resolves when the textfile holds what every cycle so far observed (tests). */
  flushed(): Promise<void>;
}

type AgentOptions = NonNullable<Parameters<typeof startAgent>[1]> & { limits?: Partial<ListenerLimits> };

/** Start the listener (if configured; a bind failure rejects before any cycle), then the agent. */
export async function startListeningAgent(deps: CycleDeps, opts: AgentOptions = {}): Promise<ListeningAgent> {
  const { config } = deps;
  const now = deps.now ?? (() => new Date());
  const log = (outcome: string, reason: string) => deps.log?.({ time: now().toISOString(), node: config.node, outcome, reason });
  const metrics = new AgentMetrics();
  const exposition = () => formatExposition(metrics.families(now()));

  // Textfile writes in order, one at a time: an older cycle's file never replaces a newer one.
  let writes = Promise.resolve();
  let textfileFailing = false;
  let timedRevision: string | undefined;
  const textfile = config.metrics?.textfile;
  const observe = (o: CycleObservation) => {
    deps.observe?.(o);
    metrics.observe(o, now());
    const revision = metrics.appliedRevision();
    writes = writes.then(async () => {
      if (revision && revision !== timedRevision) {
        const committed = await revisionCommitTime(config, revision);
        if (committed !== undefined) metrics.setCommitTime(revision, committed);
        timedRevision = revision;
      }
      if (!textfile) return;
      try {
        await writeTextfile(textfile, exposition());
        textfileFailing = false;
      } catch (e) {
        // Said once per failing streak, not every cycle.
        if (!textfileFailing) log('metrics-failed', `cannot write the metrics textfile ${textfile}: ${(e as Error).message}`);
        textfileFailing = true;
      }
    });
  };

  let agent: Agent | undefined;
  let listener: Listener | undefined;
  if (config.listen) {
    let secret: Buffer | undefined;
    if (config.webhook) {
      const read = await readSmallFile(config.webhook.secretFile, TOKEN_FILE_SIZE_LIMIT);
      if ('error' in read) throw new Error(`cannot read webhook secret file ${config.webhook.secretFile}: ${read.error}`);
      secret = Buffer.from(read.text.trim(), 'utf8');
    }
    const bind = startListener({
      address: config.listen.address,
      port: config.listen.port,
      ...(config.webhook && secret && {
        webhook: {
          path: config.webhook.path,
          secret,
          ...(config.webhook.forge && { forge: config.webhook.forge }),
          filter: { branch: config.source.branch, ...(config.webhook.repository !== undefined && { repository: config.webhook.repository }) },
          // Before the agent exists the first cycle is still to come: nothing to trigger.
          onPush: (summary: string) => {
            log('triggered', `webhook: ${summary}`);
            void agent?.trigger(`webhook: ${summary}`);
          },
        },
      }),
      ...(config.metrics?.endpoint !== false && { metrics: exposition }),
      count: (forge, result) => metrics.countWebhook(forge, result),
      log: (l) => log(l.outcome, l.reason),
      ...(opts.limits && { limits: opts.limits }),
    });
    listener = await bind.catch((e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? 'the port is in use' : e.code === 'EADDRNOTAVAIL' ? 'the address is not one of this machine' : e.message;
      throw new Error(`cannot listen on ${config.listen?.address} port ${config.listen?.port} (${config.file}: listen): ${why}`);
    });
    const served = [config.webhook && `webhook ${listener.url}${config.webhook.path}`, config.metrics?.endpoint !== false && `metrics ${listener.url}${METRICS_PATH}`].filter(Boolean);
    log('listening', served.join(', ') || listener.url);
  }

  agent = startAgent({ ...deps, observe }, opts);
  const running = agent;
  const done = running.done.then(async () => {
    await listener?.close();
    await writes;
  });
  return {
    ...running,
    done,
    stop: async () => {
      await running.stop();
      return done;
    },
    ...(listener && { url: listener.url }),
    metrics,
    flushed: () => writes,
  };
}
