// A UDP client in a namespace that sends every `intervalMs` from ONE source port per target port
// (as NTP, DNS or statsd clients do) and records every reply it gets, with the time it came.
// Stopped by PID. Used by the conntrack cleanup and ct-sync tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { terminate, processStartTime } from '../../src/proc/process.js';

const PROGRAM = String.raw`
'use strict';
const dgram = require('node:dgram');
const [host, ms, ...ports] = process.argv.slice(1);
for (const port of ports) {
  const s = dgram.createSocket('udp4');
  // Connected: only replies from host:port count; ICMP errors are ignored (the sender goes on).
  s.on('error', () => {});
  s.on('message', (m) => process.stdout.write(port + ' ' + Date.now() + ' ' + m.toString().trim() + '\n'));
  s.connect(Number(port), host, () => setInterval(() => s.send('tick', () => {}), Number(ms)));
}
`;

export interface UdpReply {
  port: number;
  at: number;
  text: string;
}

export interface UdpSender {
  replies: UdpReply[];
  stop(): Promise<void>;
}

export function startUdpSender(ns: string, host: string, ports: number[], intervalMs = 100): UdpSender {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', PROGRAM, host, String(intervalMs), ...ports.map(String)], { stdio: ['ignore', 'pipe', 'ignore'] });
  const replies: UdpReply[] = [];
  let rest = '';
  child.stdout?.on('data', (d: Buffer) => {
    const lines = (rest + d.toString()).split('\n');
    rest = lines.pop() ?? '';
    for (const l of lines) {
      const [port, at, ...text] = l.split(' ');
      replies.push({ port: Number(port), at: Number(at), text: text.join(' ') });
    }
  });
  const pid = child.pid as number;
  const startTime = processStartTime(pid);
  return { replies, stop: async () => void (await terminate(pid, startTime, 2_000)) };
}
