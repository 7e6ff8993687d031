// `node dist/lab/git-serve.js <project root> <ready file> [port] [webhooks file]`: the lab's Git smart-HTTP server
// (src/git/http-server.ts) as a process of its own, because it must outlive `cgw-sync lab up`.
// Listens on 127.0.0.1 on the port given (`lab restart git`: the one the agents know) or a free
// one, then writes {"url", "pid"} to the ready file (atomically, so a reader never sees half of
// it). With a webhooks file (JSON [{url, secret}], 0600: the secrets stay out of the command line),
// each push that moves a branch is announced to those loopback URLs. Stops on SIGTERM or SIGINT.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { startGitHttpServer } from '../git/http-server.js';
import type { PushWebhook } from '../git/push-webhook.js';

const [projectRoot, readyFile, portArg, webhooksFile] = process.argv.slice(2);
const port = portArg === undefined || portArg === '' ? 0 : Number(portArg);
if (!projectRoot || !readyFile || !Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write('usage: git-serve.js <project root> <ready file> [port] [webhooks file]\n');
  process.exit(64);
}
const webhooks = webhooksFile ? (JSON.parse(await readFile(webhooksFile, 'utf8')) as PushWebhook[]) : [];

const server = await startGitHttpServer({ projectRoot, port, webhooks, onLog: (line) => process.stderr.write(`${line}\n`) });
await writeFile(`${readyFile}.tmp`, `${JSON.stringify({ url: server.url, pid: process.pid })}\n`);
await rename(`${readyFile}.tmp`, readyFile);
process.stdout.write(`${new Date().toISOString()} serving ${projectRoot} at ${server.url}\n`);

const stop = () => void server.stop().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
