// A tiny QEMU Machine Protocol client over a unix socket (node:net).
//
// QMP speaks one JSON object per line: a greeting, then replies ({"return"} / {"error"}) in the
// order of the commands, with asynchronous events ({"event"}) interleaved. We send one command at
// a time, so replies are matched by order. QEMU's chardev server serves one client at a time:
// always close() when done.
import { connect, type Socket } from 'node:net';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

type Waiter = { resolve: (v: unknown) => void; reject: (e: Error) => void };

export class QmpError extends Error {
  constructor(
    readonly errorClass: string,
    desc: string,
  ) {
    super(`QMP error ${errorClass}: ${desc}`);
  }
}

/** The connection ended (QEMU exited, reset the socket, or we closed it). */
export class QmpClosed extends Error {}

export class Qmp {
  private buffer = '';
  private pending: Waiter[] = [];
  private greeting?: Waiter;
  private events: QmpEvent[] = [];
  private eventWaiters: Array<() => void> = [];
  private closedWith?: QmpClosed;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (e) => this.onClose(new QmpClosed(`QMP connection error: ${e.message}`)));
    socket.on('close', () => this.onClose(new QmpClosed('QMP connection closed')));
  }

  /** Connect, read the greeting and leave capabilities negotiation mode. */
  static async connect(path: string, timeoutMs = 3_000): Promise<Qmp> {
    const socket = connect(path);
    const qmp = new Qmp(socket);
    const greeted = new Promise((resolve, reject) => {
      qmp.greeting = { resolve, reject };
    });
    try {
      await withTimeout(greeted, timeoutMs, `QMP greeting on ${path}`);
      await qmp.execute('qmp_capabilities', undefined, timeoutMs);
    } catch (e) {
      qmp.close();
      throw e;
    }
    return qmp;
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 5_000): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const reply = new Promise<T>((resolve, reject) => this.pending.push({ resolve: resolve as (v: unknown) => void, reject }));
    this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    // A late reply would be matched to the next command: a timed-out connection is closed.
    return withTimeout(reply, timeoutMs, `QMP ${command}`).catch((e: Error) => {
      this.close();
      throw e;
    });
  }

  /**
   * Send `quit`. QEMU may exit before or after replying, so a reset or closed connection counts
   * as success here.
   */
  async quit(timeoutMs = 5_000): Promise<void> {
    try {
      await this.execute('quit', undefined, timeoutMs);
    } catch (e) {
      if (!(e instanceof QmpClosed)) throw e;
    }
  }

  /**
   * Wait for one of the named events. Resolves with the event, or with 'closed' when the
   * connection ends first (QEMU exited), or 'timeout'.
   */
  async waitForEvent(names: string[], timeoutMs: number): Promise<QmpEvent | 'closed' | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex((e) => names.includes(e.event));
      if (i >= 0) return this.events.splice(i, 1)[0];
      if (this.closedWith) return 'closed';
      const left = deadline - Date.now();
      if (left <= 0) return 'timeout';
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.eventWaiters.push(done);
      });
    }
  }

  close(): void {
    this.onClose(new QmpClosed('QMP connection closed by client'));
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(JSON.parse(line) as Record<string, unknown>);
    }
  }

  private onMessage(msg: Record<string, unknown>): void {
    if ('QMP' in msg) {
      this.greeting?.resolve(msg);
      this.greeting = undefined;
    } else if ('event' in msg) {
      this.events.push(msg as unknown as QmpEvent);
      this.wakeEventWaiters();
    } else if ('return' in msg) {
      this.pending.shift()?.resolve(msg.return);
    } else if ('error' in msg) {
      const err = msg.error as { class?: string; desc?: string };
      this.pending.shift()?.reject(new QmpError(err.class ?? 'GenericError', err.desc ?? 'unknown'));
    }
  }

  private onClose(e: QmpClosed): void {
    if (this.closedWith) return;
    this.closedWith = e;
    for (const w of this.pending.splice(0)) w.reject(e);
    this.greeting?.reject(e);
    this.greeting = undefined;
    this.wakeEventWaiters();
    this.socket.destroy();
  }

  private wakeEventWaiters(): void {
    for (const w of this.eventWaiters.splice(0)) w();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
