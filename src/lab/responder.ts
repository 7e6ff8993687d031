// The lab's one small network program, in two modes:
//   serve <guest>                      the guest's services: HTTP on :80, a banner on TCP :22,
//                                      a UDP echo on :123; every answer names the guest and the
//                                      source address the guest saw, e.g.
//                                      "this is guest1 OK from 10.5.5.251 via http/80"
//                                      (the client namespace runs `serve client`, so the checks can
//                                      see the source of the guests' outbound traffic)
//   ask <tcp|udp> <ip> <port> <ms>     a client for the probes: prints the first answer and exits
//                                      (exit 2 on timeout, 3 on a socket error); UDP repeats its
//                                      request every second until then
//
// WHY a source string run with `node -e`: the program runs inside network namespaces as a separate
// process, and must work both from the TypeScript sources (under vitest) and from the compiled CLI
// in dist/, without a build step that copies extra files. Plain CommonJS JavaScript, no dependencies.
import { writeFile } from 'node:fs/promises';

const PROGRAM = String.raw`
'use strict';
const net = require('node:net');
const dgram = require('node:dgram');
const http = require('node:http');
// Run as 'node -e PROGRAM ...' the arguments start at argv[1]; run as 'node responder.cjs ...' at argv[2].
const [mode, ...args] = process.argv.slice(require.main === module ? 2 : 1);

// IPv4 peers of a dual-stack socket look like ::ffff:10.5.5.251.
const plain = (addr) => String(addr).replace(/^::ffff:/, '');
// Dual stack (IPv4 and IPv6 on one socket bound to ::); IPv4 only where a host has no IPv6 at all.
const listenAny = (server, port) => server.once('error', () => server.listen(port, '0.0.0.0')).listen(port, '::');
const bindUdp = (port, onMessage) => {
  const bind = (type, addr, fallback) => {
    const s = dgram.createSocket(type);
    s.on('message', (msg, peer) => onMessage(s, msg, peer));
    s.once('error', (e) => (fallback ? (s.close(), fallback()) : process.exit(3)));
    s.bind(port, addr);
  };
  bind('udp6', '::', () => bind('udp4', '0.0.0.0'));
};

if (mode === 'serve') {
  const guest = args[0];
  const answer = (from, via) => 'this is ' + guest + ' OK from ' + plain(from) + ' via ' + via;
  listenAny(http.createServer((req, res) => res.end(answer(req.socket.remoteAddress, 'http/80') + '\n')), 80);
  // An SSH-like banner: one line, then close (probes read until the end of the stream).
  // A client that resets the connection (ECONNRESET) must not take the service down with it.
  listenAny(net.createServer((s) => s.on('error', () => s.destroy()).end(answer(s.remoteAddress, 'tcp/22') + '\r\n')), 22);
  bindUdp(123, (udp, _msg, peer) => udp.send(answer(peer.address, 'udp/123') + '\n', peer.port, peer.address));
  process.on('SIGTERM', () => process.exit(0));
} else if (mode === 'ask') {
  const [proto, host, port, ms] = args;
  const finish = (code, out) => {
    (code === 0 ? process.stdout : process.stderr).write(out);
    process.exit(code);
  };
  setTimeout(() => finish(2, 'no answer within ' + ms + ' ms\n'), Number(ms));
  if (proto === 'tcp') {
    let text = '';
    const s = net.connect(Number(port), host);
    s.on('data', (d) => (text += d));
    s.on('end', () => finish(0, text));
    s.on('error', (e) => finish(3, e.message + '\n'));
  } else {
    // Connected, so only a reply from host:port counts: an answer that leaks out of another node
    // (a different source address) is what a broken forward looks like to a real client.
    const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    s.on('message', (m) => finish(0, m.toString()));
    s.on('error', (e) => finish(3, e.message + '\n'));
    // Asked again every second until an answer comes, as real UDP clients (DNS, NTP) do: in ct-sync a
    // reply that beats the state synchronisation is dropped (docs/nat-modes.md).
    s.connect(Number(port), host, () => {
      s.send('probe\n');
      setInterval(() => s.send('probe\n'), 1000).unref();
    });
  }
} else {
  process.stderr.write('usage: serve <guest> | ask <tcp|udp> <ip> <port> <timeout-ms>\n');
  process.exit(64);
}
`;

/** The command that runs a guest's services (used as the netns guest's command). */
export function responderCommand(guest: string): string[] {
  return [process.execPath, '-e', PROGRAM, 'serve', guest];
}

/**
 * The same program as a file, for commands that outlive this process and are written down
 * elsewhere: the lab's state repository names it as each guest's netns command. `.cjs`, so it
 * is CommonJS whatever package.json surrounds it.
 */
export async function writeResponderScript(file: string): Promise<void> {
  await writeFile(file, `${PROGRAM.trimStart()}`, { mode: 0o644 });
}

/** The command that runs `name`'s services from a file written by writeResponderScript. */
export function responderScriptCommand(file: string, name: string): string[] {
  return [process.execPath, file, 'serve', name];
}

/** The command that asks ip:port once over TCP (read to the end) or UDP (first datagram). */
export function askCommand(protocol: 'tcp' | 'udp', ip: string, port: number, timeoutMs: number): string[] {
  return [process.execPath, '-e', PROGRAM, 'ask', protocol, ip, String(port), String(timeoutMs)];
}

/** The ports the responder listens on, to wait for it after starting a guest. */
export const RESPONDER_PORTS = { tcp: [80, 22], udp: [123] } as const;

export interface ResponderReply {
  guest: string;
  /** Source address the guest saw. */
  from: string;
  /** Service that answered, e.g. "http/80", "tcp/22", "udp/123". */
  via: string;
}

/** Parse a responder answer; undefined when the text is not one. */
export function parseReply(text: string): ResponderReply | undefined {
  const m = /^this is (\S+) OK from (\S+) via (\S+)$/.exec(text.trim());
  return m ? { guest: m[1], from: m[2], via: m[3] } : undefined;
}
