// `node dist/lab/git-serve.js <project root> <ready file> [port]`: the lab's Git smart-HTTP server
// (src/git/http-server.ts) as a process of its own, because it must outlive `cgw-sync lab up`.
// Listens on 127.0.0.1 on the port given (`lab restart git`: the one the agents know) or a free
// one, then writes {"url", "pid"} to the ready file (atomically, so a reader never sees half of
// it). Stops on SIGTERM or SIGINT.
import { rename, writeFile } from 'node:fs/promises';
import { startGitHttpServer } from '../git/http-server.js';

const [projectRoot, readyFile, portArg] = process.argv.slice(2);
const port = portArg === undefined ? 0 : Number(portArg);
if (!projectRoot || !readyFile || !Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write('usage: git-serve.js <project root> <ready file> [port]\n');
  process.exit(64);
}

const server = await startGitHttpServer({ projectRoot, port, onLog: (line) => process.stderr.write(`${line}\n`) });
await writeFile(`${readyFile}.tmp`, `${JSON.stringify({ url: server.url, pid: process.pid })}\n`);
await rename(`${readyFile}.tmp`, readyFile);
process.stdout.write(`${new Date().toISOString()} serving ${projectRoot} at ${server.url}\n`);

const stop = () => void server.stop().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
