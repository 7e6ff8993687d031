// Commands inside a lab VM, through its second serial port: the qemu driver exposes ttyS1 as a
// unix socket (<run dir>/<guest>.serial1) and the lab's /init runs a plain shell on it
// (src/lab/vm-image.ts). `lab check` uses it for what must happen inside the guest: the outbound
// connection to the client, ARP for the gateway IP, and loading the stateless-nat snippet.
//
// Protocol: one request at a time per socket (QEMU serves one client; within this process a queue
// per path), framed by markers carrying a fresh nonce, so output left over from an earlier,
// abandoned request is skipped:
//   echo @@B:<nonce>@@; { <script>
//   } </dev/null 2>&1; echo "@@E:<nonce>:$?@@"
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { arpResult, parseArpingMacs, probeResult, type ArpProbeResult, type ProbeOptions, type ProbeResult } from './probes.js';

export interface SerialResult {
  exitCode: number;
  output: string;
}

const queues = new Map<string, Promise<unknown>>();
const KICK_MS = 300;

/** Pure: the request text and the pattern of its framed answer. */
export function framedRequest(script: string, nonce: string): { text: string; answer: RegExp } {
  return {
    text: `echo @@B:${nonce}@@; { ${script}\n} </dev/null 2>&1; echo "@@E:${nonce}:$?@@"\n`,
    answer: new RegExp(`@@B:${nonce}@@\\n([\\s\\S]*?)@@E:${nonce}:(\\d+)@@`),
  };
}

/** Run a shell script in the VM behind `socket`; exit code 124 when no answer came in time. */
export function serialExec(socket: string, script: string, timeoutMs: number): Promise<SerialResult> {
  const prev = queues.get(socket) ?? Promise.resolve();
  const next = prev.catch(() => undefined).then(() => serialExecNow(socket, script, timeoutMs));
  queues.set(socket, next);
  void next.finally(() => {
    if (queues.get(socket) === next) queues.delete(socket);
  });
  return next;
}

function serialExecNow(socket: string, script: string, timeoutMs: number): Promise<SerialResult> {
  const { text, answer } = framedRequest(script, randomBytes(6).toString('hex'));
  return new Promise((resolve) => {
    let buf = '';
    const s = connect(socket);
    let kick: NodeJS.Timeout | undefined;
    const done = (r: SerialResult) => {
      clearTimeout(timer);
      clearInterval(kick);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ exitCode: 124, output: `no answer on ${socket} within ${timeoutMs} ms` }), timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => {
      s.write(text);
      // The emulated UART sometimes holds the guest's output until the next received byte (a
      // missed transmit interrupt): an empty line now and then is a no-op for the shell and gets
      // the answer out.
      kick = setInterval(() => s.write('\n'), KICK_MS);
    });
    s.on('data', (d: string) => {
      buf += d;
      const m = answer.exec(buf);
      if (m) done({ exitCode: Number(m[2]), output: m[1] });
    });
    s.on('error', (e) => done({ exitCode: 125, output: `${socket}: ${e.message}` }));
  });
}

/** Pure: a shell word in single quotes. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** Write a file inside the VM (base64 through the shell, so any content survives). */
export function writeFileScript(path: string, content: string): string {
  return `echo ${Buffer.from(content).toString('base64')} | base64 -d > ${shellQuote(path)}`;
}

/** Grace on top of a probe's own timeout for the serial round trip (a TCG guest is slow). */
const SERIAL_GRACE_MS = 10_000;

/** The TCP probe (tcpProbe) from inside the VM: connect, read the banner to the end. */
export async function vmTcpProbe(socket: string, ip: string, port: number, opts: ProbeOptions & { name: string }): Promise<ProbeResult> {
  const t = opts.timeoutS ?? 3;
  const r = await serialExec(socket, `socat -t ${t} -T ${t} - TCP4:${ip}:${port},connect-timeout=${t}`, t * 1000 + SERIAL_GRACE_MS);
  return probeResult(opts.name, r.exitCode === 0 && r.output.trim() !== '', r.output, r.output, r.exitCode, opts.expect);
}

/** The ARP probe (arpProbe) from inside the VM: busybox arping, broadcasting every request (-b). */
export async function vmArpProbe(socket: string, dev: string, ip: string, opts: { name: string; expectMacs: string[]; timeoutS?: number }): Promise<ArpProbeResult> {
  const t = opts.timeoutS ?? 3;
  const r = await serialExec(socket, `arping -b -c 3 -w ${t} -I ${dev} ${ip}`, t * 1000 + SERIAL_GRACE_MS);
  const macs = parseArpingMacs(r.output);
  if (r.exitCode > 1) return { name: opts.name, ok: false, detail: `arping failed (exit ${r.exitCode}): ${r.output.trim()}`, macs };
  return arpResult(opts.name, macs, opts.expectMacs);
}
